"""Colours from a photo onto a mesh: UV texture maps and per-vertex colours, with visibility.

UV convention (OBJ): u right, v up, both in [0, 1]; texture row 0 is the top (v = 1). Texel
(row i, col j) is centred at u = (j + 0.5)/T, v = 1 - (i + 0.5)/T, i.e. at screen position
(x, y) = (u·T - 0.5, (1 - v)·T - 0.5) in the pixel-centre-at-integer convention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.mesh import vertex_normals
from facerecon.render.rasterize import interpolate, rasterize


def _as_batch_image(image: torch.Tensor, B: int) -> torch.Tensor:
    img = image.unsqueeze(0) if image.dim() == 3 else image
    if img.dtype == torch.uint8:
        img = img.float() / 255.0
    return img.expand(B, *img.shape[1:])


def sample_image(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup at pixel coordinates (pixel centres at integers), zeros outside.

    Args:
        image: (B, H, W, C) float (uint8 is scaled to [0, 1]).
        xy: (B, ..., 2) pixel coordinates (x = column, y = row).

    Returns:
        (B, ..., C); differentiable w.r.t. `image` and `xy`.
    """
    B, H, W, C = image.shape
    lead = xy.shape[1:-1]
    g = xy.reshape(B, -1, 1, 2)
    # align_corners=True maps -1/+1 to the centres of the first/last pixels: our convention.
    gx = g[..., 0] / max(W - 1, 1) * 2.0 - 1.0
    gy = g[..., 1] / max(H - 1, 1) * 2.0 - 1.0
    out = F.grid_sample(image.permute(0, 3, 1, 2).to(xy.dtype), torch.stack([gx, gy], -1),
                        mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[..., 0].permute(0, 2, 1).reshape(B, *lead, C)


def _visible(points_world: torch.Tensor, normals: torch.Tensor, screen: torch.Tensor, zbuf_depth: torch.Tensor,
             zbuf_face: torch.Tensor, own_face: torch.Tensor | None, camera: PerspectiveCamera,
             depth_tol: float) -> torch.Tensor:
    """Front-most-and-facing test of points (B, P, 3) against a z-buffer (B, H, W)."""
    B, H, W = zbuf_depth.shape
    x = screen[..., 0].round().long()
    y = screen[..., 1].round().long()
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    flat = (y.clamp(0, H - 1) * W + x.clamp(0, W - 1))
    zd = zbuf_depth.reshape(B, -1).gather(1, flat)
    zf = zbuf_face.reshape(B, -1).gather(1, flat)
    d = screen[..., 2]
    # Occluded = another surface clearly in front at that pixel. A background pixel (points on the
    # silhouette can round onto one) occludes nothing.
    occluded = (zf >= 0) & (d > zd * (1.0 + depth_tol))
    if own_face is not None:
        occluded = occluded & (zf != own_face)
    close = ~occluded
    cam_pos = torch.tensor([0.0, 0.0, camera.distance], dtype=points_world.dtype, device=points_world.device)
    facing = ((cam_pos - points_world) * normals).sum(-1) > 0
    return inside & close & facing


@torch.no_grad()
def _zbuffer(vertices: torch.Tensor, faces: torch.Tensor, camera: PerspectiveCamera):
    frags = rasterize(camera.project(vertices), faces, (camera.height, camera.width), near=camera.near)
    return frags.depth, frags.pix_to_face


def extract_uv_texture(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor,
                       camera: PerspectiveCamera, image: torch.Tensor, texture_size: int = 256, *,
                       uv_faces: torch.Tensor | None = None,
                       depth_tol: float = 3e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Unwrap the photo onto the mesh's UV layout.

    The mesh is rasterized in UV space (every texel gets a triangle and barycentrics), the posed
    3-D point and normal of each texel are interpolated, projected with `camera` and the photo is
    sampled bilinearly there. A texel is visible when its point faces the camera and is the
    front-most surface at its (nearest) pixel: no other triangle of the image-space z-buffer lies
    in front of it by more than ``depth_tol`` (relative depth).

    Args:
        vertices: (B, V, 3) or (V, 3) posed world-space vertices (mm).
        faces: (F, 3) int64 vertex indices.
        uvs: (V, 2) per-vertex UVs in [0, 1], v up — or (U, 2) indexed by `uv_faces`.
        camera: the camera of `image`.
        image: (B, H, W, 3) or (H, W, 3) photo, float in [0, 1] (uint8 is scaled).
        texture_size: T, the texture is T × T.
        uv_faces: (F, 3) indices into `uvs` for meshes with texture seams; defaults to `faces`.
        depth_tol: relative depth tolerance of the visibility test.

    Returns:
        texture (B, T, T, 3) (0 where not visible or not covered by the UV layout) and visible
        (B, T, T) bool. The texture is differentiable w.r.t. `image` and `vertices` (through the
        sampling position); visibility is not.
    """
    v = vertices.unsqueeze(0) if vertices.dim() == 2 else vertices
    B = v.shape[0]
    faces = faces.to(device=v.device, dtype=torch.int64)
    uv_faces = faces if uv_faces is None else uv_faces.to(device=v.device, dtype=torch.int64)
    T = int(texture_size)
    uv = uvs.to(device=v.device, dtype=v.dtype)
    uv_screen = torch.stack([uv[:, 0] * T - 0.5, (1.0 - uv[:, 1]) * T - 0.5, torch.ones_like(uv[:, 0])], -1)
    uv_frags = rasterize(uv_screen.detach(), uv_faces, (T, T))
    img = _as_batch_image(image, B).to(v.device)

    pts = interpolate(v, uv_frags, faces)  # (B, T, T, 3), 0 outside the layout
    with torch.no_grad():
        nrm = interpolate(vertex_normals(v, faces), uv_frags, faces)
    screen = camera.project(pts)
    colors = sample_image(img, screen[..., :2].reshape(B, -1, 2)).reshape(B, T, T, -1)

    with torch.no_grad():
        zd, zf = _zbuffer(v, faces, camera)
        own = uv_frags.pix_to_face.reshape(1, -1).expand(B, -1)
        vis = _visible(pts.reshape(B, -1, 3), nrm.reshape(B, -1, 3), screen.reshape(B, -1, 3), zd, zf, own,
                       camera, depth_tol).reshape(B, T, T)
        vis = vis & uv_frags.mask.expand(B, T, T)
    return colors * vis[..., None].to(colors.dtype), vis


def sample_vertex_colors(vertices: torch.Tensor, camera: PerspectiveCamera, image: torch.Tensor,
                         faces: torch.Tensor | None = None, *,
                         depth_tol: float = 3e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour of the photo at every projected vertex.

    Args:
        vertices: (B, V, 3) or (V, 3) posed world-space vertices (mm).
        camera: the camera of `image`.
        image: (B, H, W, 3) or (H, W, 3), float in [0, 1] (uint8 is scaled).
        faces: (F, 3) int64; when given, visibility also requires the vertex to face the camera
            and no surface of the z-buffer to lie in front of it by more than ``depth_tol``
            (relative); otherwise only to project inside the image.

    Returns:
        colours (B, V, 3) (bilinear; differentiable w.r.t. `image` and `vertices`) and visible
        (B, V) bool.
    """
    v = vertices.unsqueeze(0) if vertices.dim() == 2 else vertices
    B = v.shape[0]
    img = _as_batch_image(image, B).to(v.device)
    screen = camera.project(v)
    colors = sample_image(img, screen[..., :2])
    with torch.no_grad():
        H, W = img.shape[1], img.shape[2]
        x, y = screen[..., 0], screen[..., 1]
        vis = (x > -0.5) & (x < W - 0.5) & (y > -0.5) & (y < H - 0.5) & (screen[..., 2] >= camera.near)
        if faces is not None:
            faces = faces.to(device=v.device, dtype=torch.int64)
            zd, zf = _zbuffer(v, faces, camera)
            vis = vis & _visible(v, vertex_normals(v, faces), screen, zd, zf, None, camera, depth_tol)
    return colors, vis
