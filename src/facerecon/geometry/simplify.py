"""Quadric edge-collapse simplification (Garland & Heckbert 1997) that keeps a subset of the vertices.

COMA-style (Ranjan et al. 2018) mesh down-sampling needs the coarse vertices to BE fine vertices
(down-sampling = vertex selection), so an edge (u, v) collapses onto one of its endpoints, the
cheaper under the summed quadric Q_u + Q_v, rather than onto the quadric's optimum. Boundary edges
add a plane perpendicular to their face (weighted `boundary_weight`) so open borders keep their
outline. A collapse is refused when it breaks the link condition (would make the mesh
non-manifold), folds a surviving triangle's normal by more than ~78 degrees or leaves a sliver.
"""

from __future__ import annotations

import heapq

import numpy as np


def _plane_quadrics(v: np.ndarray, f: np.ndarray, boundary_weight: float, point_weight: float = 0.01) -> np.ndarray:
    """(V, 4, 4) per-vertex sums of the area-weighted face-plane quadrics (+ boundary planes)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)
    area2 = np.linalg.norm(n, axis=1)
    nu = n / np.maximum(area2, 1e-12)[:, None]
    p = np.concatenate([nu, -(nu * a).sum(1, keepdims=True)], 1)  # (F, 4) plane ax+by+cz+d
    K = p[:, :, None] * p[:, None, :] * (0.5 * area2)[:, None, None]
    Q = np.zeros((len(v), 4, 4))
    for k in range(3):
        np.add.at(Q, f[:, k], K)
    # Boundary edges: a plane through the edge, perpendicular to its face.
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    fid = np.tile(np.arange(len(f)), 3)
    key = np.sort(e, 1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    bd = cnt[inv.ravel()] == 1
    if bd.any() and boundary_weight > 0:
        eb, fb = e[bd], fid[bd]
        d = v[eb[:, 1]] - v[eb[:, 0]]
        m = np.cross(d, nu[fb])
        m /= np.maximum(np.linalg.norm(m, axis=1), 1e-12)[:, None]
        pb = np.concatenate([m, -(m * v[eb[:, 0]]).sum(1, keepdims=True)], 1)
        Kb = pb[:, :, None] * pb[:, None, :] * (boundary_weight * (d ** 2).sum(1))[:, None, None]
        for k in range(2):
            np.add.at(Q, eb[:, k], Kb)
    # A small point quadric (distance² to the vertex itself) breaks ties on flat patches in favour of
    # short edges, so flat regions end as well-shaped triangles instead of slivers.
    eps = point_weight * float(np.mean(0.5 * area2))
    P = np.zeros((len(v), 4, 4))
    P[:, :3, :3] = np.eye(3)
    P[:, :3, 3] = P[:, 3, :3] = -v
    P[:, 3, 3] = (v ** 2).sum(1)
    return Q + eps * P


def simplify_keep_vertices(vertices: np.ndarray, faces: np.ndarray, n_target: int,
                           boundary_weight: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Collapse edges of a triangle mesh until `n_target` vertices are left, keeping original vertices.

    Args:
        vertices: (V, 3) float positions; faces: (F, 3) int triangles (consistently oriented).
        n_target: number of vertices to keep (the result may keep a few more when no valid
            collapse is left).
        boundary_weight: weight of the planes that hold open borders in place.

    Returns:
        kept (n,) int64 sorted indices of the kept vertices into `vertices`, and faces (F', 3)
        int64 triangles of the coarse mesh indexing `kept` (0..n-1), orientation preserved.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    V = len(v)
    Q = _plane_quadrics(v, f, boundary_weight)
    vh = np.concatenate([v, np.ones((V, 1))], 1)
    alive_face = np.ones(len(f), bool)
    tri = f.copy()
    vfaces: list[set] = [set() for _ in range(V)]
    for i, t in enumerate(f):
        for x in t:
            vfaces[x].add(i)
    nbr: list[set] = [set() for _ in range(V)]
    for a, b in np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]):
        nbr[a].add(b)
        nbr[b].add(a)
    version = np.zeros(V, np.int64)
    alive = np.ones(V, bool)

    def cost(a, b):
        q = Q[a] + Q[b]
        ca, cb = vh[a] @ q @ vh[a], vh[b] @ q @ vh[b]
        return (ca, b, a) if ca <= cb else (cb, a, b)  # (cost, removed, kept)

    heap = []

    def push(a, b):
        c, rm, kp = cost(a, b)
        heapq.heappush(heap, (c, int(rm), int(kp), int(version[rm]), int(version[kp])))

    for a in range(V):
        for b in nbr[a]:
            if a < b:
                push(a, b)

    def normal(t):
        p = v[t]
        return np.cross(p[1] - p[0], p[2] - p[0])

    n_alive = V
    while n_alive > n_target and heap:
        _c, rm, kp, vr, vk = heapq.heappop(heap)
        if not (alive[rm] and alive[kp]) or version[rm] != vr or version[kp] != vk or kp not in nbr[rm]:
            continue
        shared = vfaces[rm] & vfaces[kp]
        opposite = {int(x) for i in shared for x in tri[i] if x != rm and x != kp}
        if (nbr[rm] & nbr[kp]) != opposite:  # link condition
            continue
        moved = vfaces[rm] - shared
        ok = True
        for i in moved:
            t = tri[i].copy()
            n0 = normal(t)
            t[t == rm] = kp
            n1 = normal(t)
            l0, l1 = np.linalg.norm(n0), np.linalg.norm(n1)
            # a flip, a fold beyond ~78 degrees, or a sliver (collinear corners on a border)
            if n0 @ n1 <= 0.2 * l0 * l1 or l1 < 1e-3 * l0:
                ok = False
                break
        if not ok:
            continue
        for i in shared:
            alive_face[i] = False
            for x in tri[i]:
                vfaces[x].discard(i)
        for i in moved:
            tri[i][tri[i] == rm] = kp
            vfaces[kp].add(i)
        vfaces[rm] = set()
        for x in nbr[rm]:
            nbr[x].discard(rm)
            if x != kp:
                nbr[x].add(kp)
                nbr[kp].add(x)
        nbr[kp].discard(rm)
        nbr[rm] = set()
        alive[rm] = False
        Q[kp] += Q[rm]
        version[kp] += 1
        n_alive -= 1
        for x in nbr[kp]:
            push(kp, x)
    kept = np.flatnonzero(alive)
    remap = -np.ones(V, np.int64)
    remap[kept] = np.arange(len(kept))
    out = remap[tri[alive_face]]
    return kept.astype(np.int64), out.astype(np.int64)


__all__ = ["simplify_keep_vertices"]
