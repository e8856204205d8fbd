"""Rasterize and interpolate, split as in nvdiffrast.

`rasterize` runs a non-differentiable visibility pass (numba z-buffer → face id per pixel), then
recomputes perspective-correct barycentrics in torch from the chosen triangle's screen-space
vertices, so gradients flow from every covered pixel to the three vertices of its triangle.
`interpolate` blends per-vertex attributes with those barycentrics. All work after the
visibility pass touches covered pixels only (a compact list); dense images are built once by a
scatter. Screen space follows `geometry.camera`: x right, y down, pixel (row i, col j) centred at
(x, y) = (j, i), third coordinate = depth in mm (> 0 in front of the camera).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from facerecon.render import _autograd, _kernels


@dataclass(frozen=True)
class Fragments:
    """What `rasterize` saw at every pixel.

    Dense views (computed on first access, then cached):
        pix_to_face: (B, H, W) int64, index into `faces` of the visible triangle, -1 for background
            (one face list shared by the batch, so ids are per mesh, not packed across it).
        bary: (B, H, W, 3) perspective-correct barycentrics of the visible triangle's corners,
            dtype of the vertices; 0 for background. Differentiable w.r.t. the vertices.
        depth: (B, H, W) perspective-correct depth (the unit of the vertices' third coordinate, mm
            for a `PerspectiveCamera`); 0 for background. Differentiable w.r.t. the vertices.
        mask: (B, H, W) bool, pixel covered.

    Compact storage (N = number of covered pixels over the batch):
        covered: (N,) int64 flat index into B·H·W of each covered pixel, increasing.
        face: (N,) int64 face id of each covered pixel.
        bary_covered: (N, 3) barycentrics; depth_covered: (N,) depth.
        image_size: (H, W); batch: B.
    """

    covered: torch.Tensor
    face: torch.Tensor
    bary_covered: torch.Tensor
    depth_covered: torch.Tensor
    image_size: tuple[int, int]
    batch: int
    pix_to_face: torch.Tensor

    @property
    def num_pixels(self) -> int:
        return self.batch * self.image_size[0] * self.image_size[1]

    @cached_property
    def mask(self) -> torch.Tensor:
        return self.pix_to_face >= 0

    @cached_property
    def bary(self) -> torch.Tensor:
        return scatter_pixels(self.bary_covered, self)

    @cached_property
    def depth(self) -> torch.Tensor:
        return scatter_pixels(self.depth_covered[:, None], self)[..., 0]

    @cached_property
    def pixel_batch(self) -> torch.Tensor:
        """(N,) int64 batch index of each covered pixel."""
        return torch.div(self.covered, self.image_size[0] * self.image_size[1], rounding_mode="floor")


def scatter_pixels(values: torch.Tensor, fragments: Fragments, fill: float = 0.0) -> torch.Tensor:
    """Compact per-covered-pixel values (N, C) -> dense image (B, H, W, C), `fill` elsewhere.

    Differentiable w.r.t. `values` (the backward pass is a gather of the N covered pixels).
    """
    H, W = fragments.image_size
    out = values.new_full((fragments.num_pixels, values.shape[-1]), fill)
    out = out.index_copy(0, fragments.covered, values)
    return out.reshape(fragments.batch, H, W, values.shape[-1])


def rasterize(verts_screen: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int] | int, *,
              near: float = 1e-6, cull_backfaces: bool = False) -> Fragments:
    """Rasterize triangles given in screen space.

    Pixel (row i, col j) is covered by a triangle when its centre (x, y) = (j, i) lies inside it;
    centres exactly on an edge follow a top-left rule, so meshes render without cracks or double
    coverage. The visible triangle is the one with the smallest perspective-correct depth (ties:
    lowest face id). Triangles with any vertex at depth < `near` (or NaN) and degenerate triangles
    are skipped (no clipping).

    Args:
        verts_screen: (B, V, 3) or (V, 3) screen-space vertices: x px, y px, depth (> 0 in front),
            e.g. `PerspectiveCamera.project`. Any float dtype and device.
        faces: (F, 3) integer vertex indices shared by the batch.
        image_size: (H, W) or an int for square images.
        near: minimum depth of a rendered triangle's vertices.
        cull_backfaces: skip triangles that are clockwise as seen by the camera (back faces of
            meshes wound counter-clockwise seen from outside); on a y-down screen these have
            positive signed area ``(x1-x0)(y2-y0) - (y1-y0)(x2-x0)``.

    Returns:
        `Fragments` with batch B (1 for a (V, 3) input), on the device of `verts_screen`.
        `bary` and `depth` are differentiable w.r.t. `verts_screen`; `pix_to_face` is not.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    H, W = int(image_size[0]), int(image_size[1])
    v = verts_screen.unsqueeze(0) if verts_screen.dim() == 2 else verts_screen
    if v.dim() != 3 or v.shape[-1] != 3:
        raise ValueError(f"verts_screen must be (B, V, 3) or (V, 3), got {tuple(verts_screen.shape)}")
    faces = faces.to(device=v.device, dtype=torch.int64)
    B = v.shape[0]

    vnp = np.ascontiguousarray(v.detach().to("cpu", torch.float64).numpy())
    fnp = np.ascontiguousarray(faces.detach().cpu().numpy())
    p2f_np = _kernels.rasterize_visibility(vnp, fnp, H, W, max(float(near), 1e-12), bool(cull_backfaces))
    pix_to_face = torch.from_numpy(p2f_np).to(v.device)

    flat = pix_to_face.reshape(-1)
    covered = torch.nonzero(flat >= 0).squeeze(1)
    face = flat[covered]
    bary, depth = _barycentrics(v, faces, covered, face, H, W)
    return Fragments(covered=covered, face=face, bary_covered=bary, depth_covered=depth,
                     image_size=(H, W), batch=B, pix_to_face=pix_to_face)


def _barycentrics(v: torch.Tensor, faces: torch.Tensor, covered: torch.Tensor, face: torch.Tensor,
                  H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics (N, 3) and depth (N,) at covered pixel centres (differentiable)."""
    B, V = v.shape[0], v.shape[1]
    hw = H * W
    b = torch.div(covered, hw, rounding_mode="floor")
    rem = covered - b * hw
    py = torch.div(rem, W, rounding_mode="floor").to(v.dtype)
    px = (rem % W).to(v.dtype)
    corner = (faces.index_select(0, face) + (b * V)[:, None]).reshape(-1)
    if _autograd.use_kernels(v):
        return _autograd.Barycentrics.apply(v.reshape(B * V, 3), corner, px, py)
    # index_select on dim 0: its backward is a fast dim-0 index_add (advanced indexing is slower).
    tri = v.reshape(B * V, 3).index_select(0, corner).view(-1, 3, 3)  # (N, 3 corners, xyz)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    # Screen-space barycentrics from edge functions (edge k is opposite corner k).
    e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    w = torch.stack([e0, e1, e2], -1) / area[:, None]
    # Perspective correction: attributes are affine in screen space after division by depth.
    q = w / z
    inv_depth = q.sum(-1)
    return q / inv_depth[:, None], 1.0 / inv_depth


def _blend(table: torch.Tensor, idx: torch.Tensor, bary: torch.Tensor, N: int) -> torch.Tensor:
    """Σ_k bary[:, k] · table[idx[3n + k]] -> (N, C)."""
    if _autograd.use_kernels(table, bary):
        return _autograd.Blend.apply(table, idx, bary)
    g = table.index_select(0, idx).view(N, 3, -1)
    return (g * bary[..., None]).sum(1)


def interpolate(attrs: torch.Tensor, fragments: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    Args:
        attrs: (B, V, C) or (V, C) per-vertex attributes (a (V, C) tensor, or B = 1, is shared by
            every mesh of the batch; fragments of batch 1 broadcast over attributes of batch B).
        fragments: output of `rasterize`.
        faces: (F, 3) the faces given to `rasterize` — or, with the same face ids, another index
            list into `attrs` (e.g. UV indices of a mesh with texture seams).

    Returns:
        (B', H, W, C) with B' = max(fragments.batch, attrs batch); 0 at background pixels. Dtype is
        the promotion of `attrs` and the barycentrics'. Differentiable w.r.t. `attrs` and, through
        the barycentrics, the screen-space vertices given to `rasterize`.
    """
    faces = faces.to(device=attrs.device, dtype=torch.int64)
    H, W = fragments.image_size
    corners = faces.index_select(0, fragments.face)  # (N, 3)
    bary = fragments.bary_covered
    N = corners.shape[0]
    if attrs.dim() == 2 or attrs.shape[0] == 1:
        a = attrs.reshape(attrs.shape[-2], attrs.shape[-1])
        vals = _blend(a, corners.reshape(-1), bary, N)
        return scatter_pixels(vals, fragments)
    Ba, V, C = attrs.shape
    if fragments.batch == Ba:
        idx = (corners + (fragments.pixel_batch * V)[:, None]).reshape(-1)
        return scatter_pixels(_blend(attrs.reshape(Ba * V, C), idx, bary, N), fragments)
    if fragments.batch != 1:
        raise ValueError(f"batch mismatch: fragments {fragments.batch}, attributes {Ba}")
    # One rasterization (e.g. in UV space) shared by B attribute sets.
    vals = (attrs[:, corners] * bary[None, ..., None]).sum(2)  # (Ba, N, C)
    out = vals.new_zeros(Ba, H * W, C).index_copy(1, fragments.covered, vals)
    return out.reshape(Ba, H, W, C)
