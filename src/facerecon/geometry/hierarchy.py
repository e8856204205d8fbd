"""A mesh hierarchy for graph convolutions (COMA, Ranjan et al. 2018; used by Lin et al. CVPR 2020).

Level 0 is the input mesh; level k+1 keeps ~1/factor of level k's vertices by quadric edge collapse
(`simplify.simplify_keep_vertices`), so its vertices are a subset of level k's. Between levels:

- down[k]: (n_{k+1}, n_k) sparse selection: coarse vertex i takes the value of the fine vertex it is.
- up[k]:   (n_k, n_{k+1}) sparse barycentric interpolation: each fine vertex is projected onto the
  nearest triangle of the coarse mesh and takes the barycentric blend of its three corners (a kept
  vertex maps to itself exactly).

`mesh_hierarchy` caches the result as .npz in the user cache keyed by a hash of the mesh and the
settings. `laplacian` gives each level's scaled, normalised graph Laplacian for `nets.graph.ChebConv`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .simplify import simplify_keep_vertices

log = logging.getLogger(__name__)
BUILD_VERSION = 1


@dataclass(frozen=True)
class MeshHierarchy:
    """Levels 0..L of a mesh (level 0 = the input).

    vertices[k]: (n_k, 3) float32 positions; faces[k]: (F_k, 3) int64 into level k;
    kept[k]: (n_{k+1},) int64 indices of level k's vertices kept at level k+1 (k < L);
    down[k]: scipy CSR (n_{k+1}, n_k); up[k]: scipy CSR (n_k, n_{k+1}) (rows sum to 1).
    """

    vertices: list
    faces: list
    kept: list
    down: list
    up: list

    @property
    def sizes(self) -> list[int]:
        return [len(v) for v in self.vertices]

    def laplacians(self, lambda_max: float = 2.0) -> list[sp.csr_matrix]:
        """Scaled Laplacian of every level (see `laplacian`)."""
        return [laplacian(f, len(v), lambda_max) for v, f in zip(self.vertices, self.faces)]


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) int64 unique undirected edges (i < j) of a triangle mesh."""
    f = np.asarray(faces, np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    return np.unique(e, axis=0)


def laplacian(faces: np.ndarray, n_vertices: int, lambda_max: float = 2.0) -> sp.csr_matrix:
    """Scaled normalised graph Laplacian ``2 L / lambda_max - I`` with ``L = I - D^-1/2 A D^-1/2``
    over the mesh edges (A binary). lambda_max = 2 (the bound of the normalised Laplacian, COMA's
    and PyG's default) gives ``-D^-1/2 A D^-1/2``. Isolated vertices have L = 0 rows. (n, n) CSR."""
    e = mesh_edges(faces)
    A = sp.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                      shape=(n_vertices, n_vertices)).tocsr()
    d = np.asarray(A.sum(1)).ravel()
    dinv = np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
    L = sp.eye(n_vertices) - sp.diags(dinv) @ A @ sp.diags(dinv)
    L = sp.diags((d > 0).astype(float)) @ L  # isolated vertices: no self term either
    return (2.0 / lambda_max * L - sp.eye(n_vertices)).tocsr()


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics (N, 3) of the closest point of triangle (a, b, c) to p, all (N, 3) (Ericson 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = p - b
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = p - c
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    eps = 1e-30
    out = np.zeros((len(p), 3))
    done = np.zeros(len(p), bool)

    def put(m, w):
        m = m & ~done
        out[m] = w[m]
        done[m] = True

    z, o = np.zeros(len(p)), np.ones(len(p))
    put((d1 <= 0) & (d2 <= 0), np.stack([o, z, z], 1))
    put((d3 >= 0) & (d4 <= d3), np.stack([z, o, z], 1))
    put((d6 >= 0) & (d5 <= d6), np.stack([z, z, o], 1))
    t = d1 / np.where(np.abs(d1 - d3) > eps, d1 - d3, eps)
    put((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t, t, z], 1))
    t = d2 / np.where(np.abs(d2 - d6) > eps, d2 - d6, eps)
    put((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t, z, t], 1))
    t = (d4 - d3) / np.where(np.abs((d4 - d3) + (d5 - d6)) > eps, (d4 - d3) + (d5 - d6), eps)
    put((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), np.stack([z, 1 - t, t], 1))
    den = va + vb + vc
    den = np.where(np.abs(den) > eps, den, eps)
    v, w = vb / den, vc / den
    put(np.ones(len(p), bool), np.stack([1 - v - w, v, w], 1))
    return out


def barycentric_upsampling(fine: np.ndarray, coarse: np.ndarray, coarse_faces: np.ndarray,
                           candidates: int = 16) -> sp.csr_matrix:
    """(n_fine, n_coarse) CSR: each fine point as the barycentric blend of the corners of its nearest
    coarse triangle (exact point-triangle distance among the `candidates` triangles whose centroids
    are nearest)."""
    from scipy.spatial import cKDTree

    fine = np.asarray(fine, np.float64)
    coarse = np.asarray(coarse, np.float64)
    cf = np.asarray(coarse_faces, np.int64)
    cen = coarse[cf].mean(1)
    rad = np.sqrt(((coarse[cf] - cen[:, None]) ** 2).sum(-1)).max(1)  # (F,) corner-to-centroid radius
    tree = cKDTree(cen)
    best_d = np.full(len(fine), np.inf)
    best_w = np.zeros((len(fine), 3))
    best_f = np.zeros(len(fine), np.int64)
    todo = np.arange(len(fine))
    k = min(candidates, len(cf))
    while len(todo):
        # The k nearest centroids can miss the nearest triangle (a long one): points whose k-th
        # centroid is nearer than (best distance + the largest radius) search again with 4k.
        dist, cand = tree.query(fine[todo], k=k)
        cand, dist = cand.reshape(len(todo), k), dist.reshape(len(todo), k)
        for s in range(0, len(todo), max(1, 200_000 // k)):  # all (point, candidate) pairs at once, chunked
            pts, cs = todo[s: s + max(1, 200_000 // k)], cand[s: s + max(1, 200_000 // k)]
            p = np.repeat(fine[pts], k, axis=0)
            t = cf[cs.ravel()]
            w = _closest_on_triangles(p, coarse[t[:, 0]], coarse[t[:, 1]], coarse[t[:, 2]])
            d = (((w[:, :, None] * coarse[t]).sum(1) - p) ** 2).sum(1).reshape(len(pts), k)
            j = d.argmin(1)
            r = np.arange(len(pts))
            better = d[r, j] < best_d[pts]
            idx = pts[better]
            best_d[idx] = d[r, j][better]
            best_w[idx] = w.reshape(len(pts), k, 3)[r, j][better]
            best_f[idx] = cs[r, j][better]
        if k >= len(cf):
            break
        unsure = dist[:, -1] < np.sqrt(best_d[todo]) + rad.max()
        todo = todo[unsure]
        k = min(4 * k, len(cf))
    rows = np.repeat(np.arange(len(fine)), 3)
    U = sp.coo_matrix((best_w.ravel(), (rows, cf[best_f].ravel())), shape=(len(fine), len(coarse))).tocsr()
    U.eliminate_zeros()
    return U


def build_hierarchy(vertices: np.ndarray, faces: np.ndarray, levels: int = 4, factor: float = 4.0) -> MeshHierarchy:
    """Build `levels` down-sampling steps of ~`factor`x each (see the module doc). Uncached."""
    vs = [np.asarray(vertices, np.float32)]
    fs = [np.asarray(faces, np.int64)]
    kept, down, up = [], [], []
    for _ in range(levels):
        v, f = vs[-1], fs[-1]
        n_t = max(4, round(len(v) / factor))
        keep, cf = simplify_keep_vertices(v, f, n_t)
        cv = v[keep]
        D = sp.coo_matrix((np.ones(len(keep)), (np.arange(len(keep)), keep)), shape=(len(keep), len(v))).tocsr()
        U = barycentric_upsampling(v, cv, cf)
        # Kept vertices lie on their coarse triangles' corners; make the identity exact.
        U = U.tolil()
        for i, kv in enumerate(keep):
            U.rows[kv] = [i]
            U.data[kv] = [1.0]
        kept.append(keep)
        down.append(D)
        up.append(U.tocsr())
        vs.append(cv)
        fs.append(cf)
    return MeshHierarchy(vs, fs, kept, down, up)


def _key(vertices, faces, levels, factor) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(vertices, np.float32).tobytes())
    h.update(np.ascontiguousarray(faces, np.int64).tobytes())
    h.update(f"{levels}/{factor}/{BUILD_VERSION}".encode())
    return h.hexdigest()[:16]


def _save(path: Path, H: MeshHierarchy) -> None:
    from ..io.atomic import atomic_path

    arrays = {"n_levels": np.int64(len(H.vertices))}
    for k, (v, f) in enumerate(zip(H.vertices, H.faces)):
        arrays[f"v{k}"], arrays[f"f{k}"] = v, f
    for k, (kp, U) in enumerate(zip(H.kept, H.up)):
        U = U.tocoo()
        arrays[f"kept{k}"] = kp
        arrays[f"up{k}_ij"] = np.stack([U.row, U.col]).astype(np.int64)
        arrays[f"up{k}_w"] = U.data
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _load(path: Path) -> MeshHierarchy:
    with np.load(path) as z:
        n = int(z["n_levels"])
        vs = [z[f"v{k}"] for k in range(n)]
        fs = [z[f"f{k}"] for k in range(n)]
        kept = [z[f"kept{k}"] for k in range(n - 1)]
        up = [sp.coo_matrix((z[f"up{k}_w"], tuple(z[f"up{k}_ij"])), shape=(len(vs[k]), len(vs[k + 1]))).tocsr()
              for k in range(n - 1)]
    down = [sp.coo_matrix((np.ones(len(kp)), (np.arange(len(kp)), kp)), shape=(len(kp), len(vs[k]))).tocsr()
            for k, kp in enumerate(kept)]
    return MeshHierarchy(vs, fs, kept, down, up)


def mesh_hierarchy(vertices: np.ndarray, faces: np.ndarray, levels: int = 4, factor: float = 4.0,
                   cache: bool = True) -> MeshHierarchy:
    """`build_hierarchy`, cached in `<cache dir>/hierarchy/<hash>.npz` (hash of the mesh and settings)."""
    from ..assets import cache_dir

    path = cache_dir() / "hierarchy" / f"mesh_{_key(vertices, faces, levels, factor)}.npz"
    if cache and path.is_file():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError) as e:
            log.warning("%s: unreadable hierarchy cache (%s); rebuilding", path, e)
    t0 = time.perf_counter()
    H = build_hierarchy(vertices, faces, levels, factor)
    log.info("mesh hierarchy %s built in %.1f s", H.sizes, time.perf_counter() - t0)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(path, H)
    return H


__all__ = ["MeshHierarchy", "barycentric_upsampling", "build_hierarchy", "laplacian", "mesh_edges", "mesh_hierarchy"]
