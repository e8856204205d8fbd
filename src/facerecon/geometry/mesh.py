"""Triangle-mesh helpers: face and vertex normals, edges and edge topology, test meshes.

Winding convention: a face (i, j, k) is counter-clockwise when seen from outside the surface, so
``cross(v_j - v_i, v_k - v_i)`` points outwards (right-hand rule). Every function is batched,
device- and dtype-agnostic, and differentiable w.r.t. vertex positions where it returns floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..jit import HAVE_NUMBA, njit, prange


# numba kernels for area-weighted vertex normals (forward and backward), parallel over the batch;
# faces are walked sequentially inside a mesh since scatter-adds into shared vertices would race.
@njit(cache=True, inline="always")
def _face_edges(v, b, i0, i1, i2):
    """The two edge vectors a = v1 - v0, b = v2 - v0 of one triangle, as six scalars."""
    return (v[b, i1, 0] - v[b, i0, 0], v[b, i1, 1] - v[b, i0, 1], v[b, i1, 2] - v[b, i0, 2],
            v[b, i2, 0] - v[b, i0, 0], v[b, i2, 1] - v[b, i0, 1], v[b, i2, 2] - v[b, i0, 2])


@njit(cache=True, parallel=True)
def _accumulate_normals(v, faces, acc):
    """acc[b, i] += cross(v1 - v0, v2 - v0) for every face touching vertex i. v, acc: (B, V, 3)."""
    for b in prange(v.shape[0]):
        for f in range(faces.shape[0]):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            ax, ay, az, bx, by, bz = _face_edges(v, b, i0, i1, i2)
            nx = ay * bz - az * by
            ny = az * bx - ax * bz
            nz = ax * by - ay * bx
            for i in (i0, i1, i2):
                acc[b, i, 0] += nx
                acc[b, i, 1] += ny
                acc[b, i, 2] += nz


@njit(cache=True, parallel=True)
def _accumulate_normals_backward(v, faces, g_acc, out):
    """Gradient of Σ g_acc · acc w.r.t. v into out (B, V, 3)."""
    for b in prange(v.shape[0]):
        for f in range(faces.shape[0]):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            # G = gradient w.r.t. this face's normal = sum over its corners.
            gx = g_acc[b, i0, 0] + g_acc[b, i1, 0] + g_acc[b, i2, 0]
            gy = g_acc[b, i0, 1] + g_acc[b, i1, 1] + g_acc[b, i2, 1]
            gz = g_acc[b, i0, 2] + g_acc[b, i1, 2] + g_acc[b, i2, 2]
            ax, ay, az, bx, by, bz = _face_edges(v, b, i0, i1, i2)
            # n = a × b: dL/da = b × G, dL/db = G × a.
            dax = by * gz - bz * gy
            day = bz * gx - bx * gz
            daz = bx * gy - by * gx
            dbx = gy * az - gz * ay
            dby = gz * ax - gx * az
            dbz = gx * ay - gy * ax
            out[b, i1, 0] += dax
            out[b, i1, 1] += day
            out[b, i1, 2] += daz
            out[b, i2, 0] += dbx
            out[b, i2, 1] += dby
            out[b, i2, 2] += dbz
            out[b, i0, 0] -= dax + dbx
            out[b, i0, 1] -= day + dby
            out[b, i0, 2] -= daz + dbz


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Normals of the triangles of a mesh.

    Args:
        vertices: (B, V, 3) or (V, 3) positions.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        normalize: unit normals if True; otherwise ``cross(v1 - v0, v2 - v0)``, whose length is twice
            the triangle's area.

    Returns:
        (B, F, 3) or (F, 3) outward normals (same leading shape as `vertices`).
    """
    squeeze = vertices.dim() == 2
    v = vertices.unsqueeze(0) if squeeze else vertices
    n = _face_cross(v, _flat_corner_index(faces.to(v.device), v.shape[0], v.shape[1])).reshape(v.shape[0], -1, 3)
    n = n[0] if squeeze else n
    if normalize:
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(n.dtype).tiny ** 0.5)
    return n


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted vertex normals.

    Each face's unnormalised normal (length 2·area) is summed into its three vertices, then the
    sums are normalised, so large faces weigh more than slivers. Vertices used by no face get a
    zero normal.

    Args:
        vertices: (B, V, 3) or (V, 3) positions.
        faces: (F, 3) int64 indices, counter-clockwise seen from outside (normals point outwards).
        eps: lower bound on the norm before dividing (avoids NaN for isolated vertices).

    Returns:
        (B, V, 3) or (V, 3) unit normals, same dtype and device as `vertices`.
    """
    squeeze = vertices.dim() == 2
    v = vertices.unsqueeze(0) if squeeze else vertices
    if HAVE_NUMBA and v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64):
        n = _VertexNormals.apply(v, faces, eps)
    else:
        n = _vertex_normals_torch(v, faces, eps)
    return n[0] if squeeze else n


def _flat_corner_index(faces: torch.Tensor, B: int, V: int) -> torch.Tensor:
    """(B·F, 3) indices of the faces' corners into vertices flattened to (B·V, 3)."""
    faces = faces.long()
    return (faces[None] + (torch.arange(B, device=faces.device) * V)[:, None, None]).reshape(-1, 3)


def _face_cross(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """cross(v1 - v0, v2 - v0) per face, (B·F, 3), from flat corner indices."""
    t = v.reshape(-1, 3).index_select(0, idx.reshape(-1)).view(-1, 3, 3)
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return torch.linalg.cross(e1, e2, dim=-1)


def _vertex_normals_torch(v: torch.Tensor, faces: torch.Tensor, eps: float) -> torch.Tensor:
    B, V = v.shape[0], v.shape[1]
    idx = _flat_corner_index(faces.to(v.device), B, V)  # (B·F, 3)
    fn = _face_cross(v, idx)  # (B·F, 3)
    # dim-0 index_add on the flattened batch: much faster on CPU than indexing along dim 1.
    acc = v.new_zeros(B * V, 3)
    for col in idx.T.contiguous():
        acc = acc.index_add(0, col, fn)
    acc = acc.reshape(B, V, 3)
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(eps)


class _VertexNormals(torch.autograd.Function):
    """numba forward/backward of `vertex_normals` (one pass over faces each way; first order only)."""

    @staticmethod
    def forward(ctx, v, faces, eps):
        vn = v.detach().contiguous().numpy()
        fn = faces.detach().to("cpu", torch.int64).contiguous().numpy()
        acc = np.zeros_like(vn)
        _accumulate_normals(vn, fn, acc)
        acc_t = torch.from_numpy(acc)
        norm = acc_t.norm(dim=-1, keepdim=True).clamp_min(eps)
        n = acc_t / norm
        ctx.save_for_backward(v, faces, n, norm)
        return n

    @staticmethod
    def backward(ctx, grad):
        v, faces, n, norm = ctx.saved_tensors
        # d(a/|a|) = (g - n (n·g)) / |a|
        g_acc = (grad - n * (n * grad).sum(-1, keepdim=True)) / norm
        out = np.zeros(v.shape, dtype=v.detach().numpy().dtype)
        _accumulate_normals_backward(v.detach().contiguous().numpy(),
                                        faces.to("cpu", torch.int64).contiguous().numpy(),
                                        g_acc.to(v.dtype).contiguous().numpy(), out)
        return torch.from_numpy(out), None, None


@dataclass(frozen=True)
class EdgeTopology:
    """Undirected edges of a triangle mesh and the faces on each side.

    face_edges: (F, 3) int64; entry k of face f is the edge from corner k to corner (k+1) % 3.
    edge_faces: (E, 2) int64; the first two faces using the edge, -1 where there is none (a
        boundary edge).
    edge_count: (E,) int64 number of faces using the edge (> 2 for non-manifold edges).
    edge_vertices: (E, 2) int64 the edge's two vertex ids.
    edge_opposite: (E, 2) int64 the vertex opposite the edge in each of `edge_faces`, -1 where
        there is no face.
    """

    face_edges: torch.Tensor
    edge_faces: torch.Tensor
    edge_count: torch.Tensor
    edge_vertices: torch.Tensor
    edge_opposite: torch.Tensor


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges of a triangle mesh.

    Args:
        faces: (F, 3) integer vertex indices.

    Returns:
        (E, 2) int64 vertex pairs, each sorted (i < j), rows in lexicographic order; the same
        pairs as `edge_topology(faces).edge_vertices`, without the adjacency.
    """
    faces = faces.long()
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    return torch.unique(torch.sort(e, dim=1).values, dim=0)


def edge_topology(faces: torch.Tensor) -> EdgeTopology:
    """Build the edge ↔ face adjacency of a mesh (used by the antialiasing silhouette test).

    Args:
        faces: (F, 3) int64 vertex indices.

    Returns:
        `EdgeTopology` on the same device as `faces`.
    """
    faces = faces.long()
    F = faces.shape[0]
    a = faces
    b = faces[:, [1, 2, 0]]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    nv = int(faces.max().item()) + 1 if F else 1
    key = (lo * nv + hi).reshape(-1)
    uniq, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
    order = torch.argsort(inv, stable=True)
    face_of = order // 3
    opp_of = faces[:, [2, 0, 1]].reshape(-1)[order]  # corner opposite edge k is (k + 2) % 3
    starts = torch.cumsum(counts, 0) - counts
    second_pos = (starts + 1).clamp_max(face_of.numel() - 1)
    has2 = counts >= 2
    none = torch.full_like(starts, -1)
    first, second = face_of[starts], torch.where(has2, face_of[second_pos], none)
    opp0, opp1 = opp_of[starts], torch.where(has2, opp_of[second_pos], none)
    ev = torch.stack([torch.div(uniq, nv, rounding_mode="floor"), uniq % nv], 1)
    return EdgeTopology(face_edges=inv.reshape(F, 3), edge_faces=torch.stack([first, second], 1),
                        edge_count=counts, edge_vertices=ev, edge_opposite=torch.stack([opp0, opp1], 1))


def icosphere(subdivisions: int = 3, radius: float = 1.0, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A geodesic sphere centred at the origin (test and benchmark mesh).

    Args:
        subdivisions: number of 4-way subdivisions of the icosahedron; F = 20·4^s faces.
        radius: sphere radius (every vertex lies on the sphere).

    Returns:
        vertices (V, 3) and faces (F, 3) int64, counter-clockwise seen from outside.
    """
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
             [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    faces = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
             [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
             [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    v = torch.tensor(verts, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    f = torch.tensor(faces, dtype=torch.int64)
    for _ in range(subdivisions):
        # Midpoint of every undirected edge, shared between the two faces using it.
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
        e_sorted = torch.sort(e, dim=1).values
        uniq, inv = torch.unique(e_sorted, dim=0, return_inverse=True)
        mid = v[uniq[:, 0]] + v[uniq[:, 1]]
        mid = mid / mid.norm(dim=1, keepdim=True)
        m = inv.reshape(3, -1).T + v.shape[0]  # (F, 3): midpoints of edges 01, 12, 20
        v = torch.cat([v, mid], 0)
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        m01, m12, m20 = m[:, 0], m[:, 1], m[:, 2]
        f = torch.cat([torch.stack([a, m01, m20], 1), torch.stack([b, m12, m01], 1),
                       torch.stack([c, m20, m12], 1), torch.stack([m01, m12, m20], 1)], 0)
    return (v * radius).to(dtype=dtype, device=device), f.to(device)


def grid_mesh(rows: int, cols: int, width: float = 1.0, height: float = 1.0,
              dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A flat rectangular grid in the z = 0 plane facing +z (test and benchmark mesh).

    Args:
        rows, cols: number of quads along y and x (F = 2·rows·cols triangles).
        width, height: extent along x and y, centred on the origin.

    Returns:
        vertices ((rows+1)·(cols+1), 3), faces (F, 3) int64 counter-clockwise seen from +z, and
        uvs (V, 2) in [0, 1] with v up (OBJ convention).
    """
    ys = torch.linspace(0.0, 1.0, rows + 1, dtype=torch.float64)
    xs = torch.linspace(0.0, 1.0, cols + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    uv = torch.stack([gx, gy], -1).reshape(-1, 2)
    v = torch.stack([(gx - 0.5) * width, (gy - 0.5) * height, torch.zeros_like(gx)], -1).reshape(-1, 3)
    i = torch.arange(rows).repeat_interleave(cols)
    j = torch.arange(cols).repeat(rows)
    v00 = i * (cols + 1) + j
    v01, v10 = v00 + 1, v00 + cols + 1
    v11 = v10 + 1
    f = torch.cat([torch.stack([v00, v01, v11], 1), torch.stack([v00, v11, v10], 1)], 0)
    return v.to(dtype=dtype, device=device), f.to(device), uv.to(dtype=dtype, device=device)
