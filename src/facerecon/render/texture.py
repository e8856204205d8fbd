"""Colours from a photo onto a mesh: UV texture maps and per-vertex colours, with visibility.

UV convention (OBJ): u right, v up, both in [0, 1]; texture row 0 is the top (v = 1). Texel
(row i, col j) is centred at u = (j + 0.5)/T, v = 1 - (i + 0.5)/T, i.e. at screen position
(x, y) = (u·T - 0.5, (1 - v)·T - 0.5) in the pixel-centre-at-integer convention.
"""

from __future__ import annotations

import numpy as np
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


def _uv_pixel(uv: torch.Tensor, T: int) -> torch.Tensor:
    """UVs (..., 2) in [0, 1] (v up) -> texel pixel coordinates (..., 2) (x = column, y = row)."""
    return torch.stack([uv[..., 0] * T - 0.5, (1.0 - uv[..., 1]) * T - 0.5], -1)


def skin_colour_mask(colors: torch.Tensor, weight: torch.Tensor, dark: float = 0.45, chroma_mads: float = 4.0
                     ) -> torch.Tensor:
    """A simple stand-in for a face parser's skin mask, per texel: rejects samples much darker than
    the face's median brightness (hair, beard, deep shadow) or far from its median chromaticity
    (glasses, background, coloured occluders). Hands and other skin-coloured occluders pass.

    Args:
        colors: (T, T, 3) sampled photo colours in [0, 1]; weight: (T, T) the samples' weights (the
            statistics use the texels with weight > 0.5).
        dark: reject luminance below `dark` × the median luminance.
        chroma_mads: reject chromaticity (r, g over r + g + b) farther than this many median
            absolute deviations from the median.

    Returns:
        (T, T) float in {0, 1}.
    """
    good = weight > 0.5
    if int(good.sum()) < 16:
        return torch.ones_like(weight)
    lum = colors.mean(-1)
    chroma = colors[..., :2] / colors.sum(-1, keepdim=True).clamp_min(1e-6)
    med_l = lum[good].median()
    med_c = chroma[good].median(0).values
    mad = (chroma[good] - med_c).abs().median(0).values.clamp_min(0.004)
    far = ((chroma - med_c).abs() / mad).amax(-1) > chroma_mads
    return (~far & (lum >= dark * med_l)).to(weight.dtype)


@torch.no_grad()
def extract_filled_uv_texture(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor,
                              camera: PerspectiveCamera, image: torch.Tensor, albedo: torch.Tensor,
                              mirror: torch.Tensor | None = None, texture_size: int = 512, *,
                              uv_faces: torch.Tensor | None = None, grazing: tuple[float, float] = (0.2, 0.5),
                              skin_mask: torch.Tensor | None = None, reject_outliers: bool = True,
                              feather: float = 2.0, depth_tol: float = 3e-3) -> dict[str, torch.Tensor]:
    """3DDFA_V3's ``extractTex``: the photo unwrapped onto the UV layout, with grazing samples faded
    out, occluders rejected, and what the photo does not show filled from the mirrored side, then
    from the model's albedo (brightness-matched to the photo), blended smoothly.

    Per texel, the photo sample's weight is ``w = visible · s((cos θ − g0) / (g1 − g0)) · skin``
    where θ is the angle between the surface normal and the direction to the camera, s a smoothstep
    and ``(g0, g1) = grazing``; ``skin`` is `skin_mask` sampled at the texel's pixel (a face
    parser's skin probability, the hook for occluder rejection) times, with `reject_outliers`, the
    stand-in `skin_colour_mask`. The weight is feathered (a Gaussian of σ = `feather` texels,
    never raising it). With `mirror` the texel's mirror image (the same place on the other side of
    the face) supplies colour where the texel's own weight is low; the rest is the albedo:
    ``out = w c + (1 − w) (w_m c_m + (1 − w_m) a)``.

    Args:
        vertices: (V, 3) or (1, V, 3) posed vertices, mm; faces (F, 3) int64.
        uvs: (U, 2) UVs in [0, 1] (v up), indexed by `uv_faces` (default `faces`).
        camera: the camera of `image`; image: (H, W, 3) photo, uint8 or float in [0, 1].
        albedo: (V, 3) or (1, V, 3) reflectance in [0, 1].
        mirror: (V,) int64, each vertex's mirror-image vertex (`models.annotations.mirror_vertices`),
            or None: no mirrored fill.
        texture_size: T.
        skin_mask: (H, W) float in [0, 1] or bool, photo pixels, or None.

    Returns:
        {"texture": (T, T, 3) the blended texture, "albedo": (T, T, 3) the albedo alone (unlit, not
        brightness-matched), "photo": (T, T, 3) the raw samples, "weight": (T, T) w, "covered": (T, T)
        bool texels inside the layout}, float in [0, 1].
    """
    v = (vertices[0] if vertices.dim() == 3 else vertices)[None]
    alb = albedo[0] if albedo.dim() == 3 else albedo
    faces = faces.to(device=v.device, dtype=torch.int64)
    uv_faces = faces if uv_faces is None else uv_faces.to(device=v.device, dtype=torch.int64)
    T = int(texture_size)
    uv = uvs.to(device=v.device, dtype=v.dtype)
    px = _uv_pixel(uv, T)
    uv_frags = rasterize(torch.cat([px, torch.ones_like(px[:, :1])], -1), uv_faces, (T, T))
    covered = uv_frags.mask[0]
    img = _as_batch_image(image, 1).to(device=v.device, dtype=v.dtype)

    pts = interpolate(v, uv_frags, faces)[0]
    nrm = torch.nn.functional.normalize(interpolate(vertex_normals(v, faces), uv_frags, faces)[0], dim=-1)
    screen = camera.project(pts)
    colors = sample_image(img, screen[None, ..., :2].reshape(1, -1, 2)).reshape(T, T, 3)
    zd, zf = _zbuffer(v, faces, camera)
    vis = _visible(pts.reshape(1, -1, 3), nrm.reshape(1, -1, 3), screen.reshape(1, -1, 3), zd, zf,
                   uv_frags.pix_to_face.reshape(1, -1), camera, depth_tol).reshape(T, T) & covered
    cam_pos = torch.tensor([0.0, 0.0, camera.distance], dtype=v.dtype, device=v.device)
    cos = (torch.nn.functional.normalize(cam_pos - pts, dim=-1) * nrm).sum(-1)
    s = ((cos - grazing[0]) / (grazing[1] - grazing[0])).clamp(0, 1)
    w = (s * s * (3 - 2 * s)) * vis.to(v.dtype)
    if skin_mask is not None:
        m = torch.as_tensor(np.asarray(skin_mask), device=v.device).to(v.dtype)
        w = w * sample_image(m[None, ..., None], screen[None, ..., :2].reshape(1, -1, 2)).reshape(T, T).clamp(0, 1)
    if reject_outliers:
        from scipy.ndimage import median_filter

        # A median over 7 x 7 texels turns the per-texel test into contiguous regions (no speckle).
        keep = skin_colour_mask(colors, w).cpu().numpy()
        w = w * torch.as_tensor(median_filter(keep, size=7), dtype=v.dtype, device=v.device)
    if feather > 0:
        from scipy.ndimage import gaussian_filter

        blurred = torch.as_tensor(gaussian_filter(w.cpu().double().numpy(), feather), dtype=v.dtype, device=v.device)
        w = torch.minimum(w, blurred)

    a = interpolate(alb.to(v.dtype), uv_frags, faces)[0]
    # Brightness-match the albedo to the photo (the photo holds albedo × shading × camera response).
    good = w > 0.5
    if int(good.sum()) > 16:
        gain = colors[good].mean(0) / a[good].mean(0).clamp_min(1e-6)
    else:
        gain = torch.ones(3, dtype=v.dtype, device=v.device)
    fill = (a * gain).clamp(0, 1)
    if mirror is not None:
        mirror = mirror.to(device=v.device, dtype=torch.int64)
        vert_uv = torch.zeros(v.shape[1], 2, dtype=v.dtype, device=v.device)
        vert_uv[faces.reshape(-1)] = uv[uv_faces.reshape(-1)]
        mpx = _uv_pixel(interpolate(vert_uv[mirror], uv_frags, faces)[0], T)
        stack = torch.cat([colors * w[..., None], w[..., None]], -1)[None]
        sm = sample_image(stack, mpx[None].reshape(1, -1, 2)).reshape(T, T, 4)
        w_m = sm[..., 3].clamp(0, 1) * covered.to(v.dtype)
        c_m = sm[..., :3] / sm[..., 3:].clamp_min(1e-6)
        fill = w_m[..., None] * c_m + (1 - w_m[..., None]) * fill
    out = w[..., None] * colors + (1 - w[..., None]) * fill
    if bool(covered.any()):  # texels outside the layout: the mean fill, so filtering at chart borders stays neutral
        out = torch.where(covered[..., None], out, fill[covered].mean(0))
    return {"texture": out.clamp(0, 1), "albedo": a.clamp(0, 1), "photo": colors, "weight": w, "covered": covered}
