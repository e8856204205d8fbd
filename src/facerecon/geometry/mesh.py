"""Triangle-mesh helpers: face and vertex normals, edge topology, test meshes.

Winding convention: a face (i, j, k) is counter-clockwise when seen from outside the surface, so
``cross(v_j - v_i, v_k - v_i)`` points outwards (right-hand rule). Every function is batched,
device- and dtype-agnostic, and differentiable w.r.t. vertex positions where it returns floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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
    tri = vertices[..., faces, :]  # (..., F, 3, 3)
    n = torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
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
    fn = face_normals(v, faces, normalize=False)  # (B, F, 3)
    B, V = v.shape[0], v.shape[1]
    idx = faces.reshape(-1)
    # Sum face normals into vertices: one index_add over the 3F (face, corner) pairs.
    acc = v.new_zeros(B, V, 3).index_add(1, idx, fn.repeat_interleave(3, dim=1))
    n = acc / acc.norm(dim=-1, keepdim=True).clamp_min(eps)
    return n[0] if squeeze else n


@dataclass(frozen=True)
class EdgeTopology:
    """Undirected edges of a triangle mesh and the faces on each side.

    face_edges: (F, 3) int64; entry k of face f is the edge from corner k to corner (k+1) % 3.
    edge_faces: (E, 2) int64; the first two faces using the edge, -1 where there is none (a
        boundary edge).
    edge_count: (E,) int64 number of faces using the edge (> 2 for non-manifold edges).
    """

    face_edges: torch.Tensor
    edge_faces: torch.Tensor
    edge_count: torch.Tensor


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
    starts = torch.cumsum(counts, 0) - counts
    first = face_of[starts]
    second_pos = (starts + 1).clamp_max(face_of.numel() - 1)
    second = torch.where(counts >= 2, face_of[second_pos], torch.full_like(first, -1))
    return EdgeTopology(face_edges=inv.reshape(F, 3), edge_faces=torch.stack([first, second], 1),
                        edge_count=counts)


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
