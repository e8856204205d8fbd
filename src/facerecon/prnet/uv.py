"""PRNet's UV position maps in the morphable model's own UV layout (the ICT face's tile 0).

Layout. A map of resolution R is an (R, R) image over the model's UV square [0, 1]²: texel (row i,
col j) has its centre at u = (j + 0.5) / R, v = 1 − (i + 0.5) / R (v up as in OBJ, so row 0 is the
top of the UV image; in texel pixels with centres at integers, x = u R − 0.5, y = (1 − v) R − 0.5).
`uv_layout(model, R)` rasterizes the UV triangles once: per texel the triangle it lies in and its
barycentric weights. Texels just outside every triangle (up to `DILATE` texels away) get the nearest
triangle and its *extrapolated* barycentrics, so bilinear reads at the border see linear
continuations rather than zeros. Triangles with a UV outside [0, 1]² (ICT: one neck triangle on
another UDIM tile) are left out; their vertices read at the UV of the nearest vertex that has one.

Position conventions (PRNet's, in our crop): a map texel holds (x, y, z) with x, y the crop pixels
of that surface point (224² crop, pixel centres at integers, y down) and

    z = (distance − depth) · focal / distance + S / 2

the point's height towards the camera in the same pixel scale as x, y at the head's origin depth
(`focal` px, `distance` mm of the crop camera; S = 224): larger z is nearer the camera, and the
S / 2 shift puts a face (±100 mm) inside [0, S] like x and y. `positions_from_world` and
`world_from_positions` convert exactly (x, y are perspective projections, so the inverse is the
camera's unprojection at the recovered depth).

Read-back: each vertex is read by bilinear sampling at its UV (`MorphableModel.vertex_uv`: at the
141 seam vertices with two UVs, the last corner written in face order); the 68 landmarks are read
at their vertex's UV (their model-space offsets are added after the pose fit, `model.decode_maps`).
The read-back error of an exact map (tests/test_prnet.py, three poses) is 0.55 px mean over the
face at R = 128 (0.27 at 256), median 0.09 (0.04), the 68 landmarks 0.29 px (0.13). It is largest
where the UV layout packs a lot of surface into few texels: the nostrils' insides (p95 10 px at
128) and the eyelid rims, whose upper and lower edges touch in UV (2-4 px). Restricting the
bilinear taps to texels of nearby triangles fixed the rims but not the total, so reads are plain.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.camera import PerspectiveCamera

log = logging.getLogger(__name__)

#: Texels outside the UV triangles filled by extrapolation (in texels from the nearest triangle).
DILATE = 1.5
CROP_SIZE = 224


@dataclass(frozen=True, eq=False)
class UVLayout:
    """A rasterized UV layout of one topology at resolution R.

    size: R. face_id: (R, R) int64, the triangle of each texel, −1 where none (outside the dilated
    layout). bary: (R, R, 3) float32 barycentric weights in that triangle (extrapolated, so some
    negative, on dilated texels). mask: (R, R) bool, texels inside a triangle (the valid map).
    faces: (F, 3) int64 vertex ids. vertex_xy: (V, 2) float32 where each vertex is read, texel
    pixels (x col, y row; centres at integers).
    """

    size: int
    face_id: np.ndarray
    bary: np.ndarray
    mask: np.ndarray
    faces: np.ndarray
    vertex_xy: np.ndarray

    @property
    def filled(self) -> np.ndarray:
        """(R, R) bool texels that hold a value (inside + dilated border)."""
        return self.face_id >= 0

    @cached_property
    def texels(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N,) flat indices of the filled texels, (N, 3) their triangle's vertex ids, (N, 3) weights."""
        flat = np.flatnonzero(self.filled)
        fid = self.face_id.reshape(-1)[flat]
        return (torch.as_tensor(flat), torch.as_tensor(self.faces[fid]),
                torch.as_tensor(self.bary.reshape(-1, 3)[flat]))


def uv_to_texel(uv: np.ndarray, size: int) -> np.ndarray:
    """(..., 2) UV in [0, 1] (v up) -> (..., 2) texel pixels (x, y down, centres at integers)."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[..., 0] * size - 0.5, (1.0 - uv[..., 1]) * size - 0.5], -1)


def rasterize_uv(uv: np.ndarray, uv_faces: np.ndarray, size: int, dilate: float = DILATE):
    """Per texel the triangle whose signed distance is largest (inside > 0) and its barycentrics.

    uv: (T, 2) in [0, 1]; uv_faces: (F, 3) into uv (rows with an index < 0 are skipped).
    Returns face_id (R, R) int64 (−1: none within `dilate` texels), bary (R, R, 3) float32,
    inside (R, R) bool.
    """
    R = size
    best = np.full((R, R), -np.inf)
    face_id = np.full((R, R), -1, np.int64)
    bary = np.zeros((R, R, 3), np.float64)
    P = uv_to_texel(uv, R)
    ys, xs = np.mgrid[0:R, 0:R]
    for f, tri in enumerate(uv_faces):
        if (tri < 0).any():
            continue
        a, b, c = P[tri]
        den = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if abs(den) < 1e-12:
            continue
        lo = np.floor(np.minimum(np.minimum(a, b), c) - dilate).astype(int)
        hi = np.ceil(np.maximum(np.maximum(a, b), c) + dilate).astype(int)
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], R - 1), min(hi[1], R - 1)
        if x1 < x0 or y1 < y0:
            continue
        X, Y = xs[y0:y1 + 1, x0:x1 + 1], ys[y0:y1 + 1, x0:x1 + 1]
        l0 = ((b[1] - c[1]) * (X - c[0]) + (c[0] - b[0]) * (Y - c[1])) / den
        l1 = ((c[1] - a[1]) * (X - c[0]) + (a[0] - c[0]) * (Y - c[1])) / den
        l2 = 1.0 - l0 - l1
        # Signed distance to each edge = barycentric × the altitude onto it (texels); min over edges.
        area2 = abs(den)
        h = np.array([area2 / max(np.linalg.norm(b - c), 1e-12), area2 / max(np.linalg.norm(c - a), 1e-12),
                      area2 / max(np.linalg.norm(a - b), 1e-12)])
        score = np.minimum(np.minimum(l0 * h[0], l1 * h[1]), l2 * h[2])
        win = best[y0:y1 + 1, x0:x1 + 1]
        take = (score > win) & (score >= -dilate)
        win[take] = score[take]
        face_id[y0:y1 + 1, x0:x1 + 1][take] = f
        bary[y0:y1 + 1, x0:x1 + 1][take] = np.stack([l0, l1, l2], -1)[take]
    inside = best >= -1e-9
    return face_id, bary.astype(np.float32), inside


def _layout_key(uv: np.ndarray, uv_faces: np.ndarray, size: int) -> str:
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(uv, np.float32), np.ascontiguousarray(uv_faces, np.int64)):
        h.update(a.tobytes())
    return f"{h.hexdigest()[:16]}_{size}_{DILATE}"


def _cache_dir() -> Path:
    return Path(os.environ.get("FACERECON_CACHE") or Path.home() / ".cache" / "facerecon") / "prnet"


@lru_cache(maxsize=8)
def _layout_arrays(key: str, uv_bytes: bytes, uvf_bytes: bytes, size: int):
    uv = np.frombuffer(uv_bytes, np.float32).reshape(-1, 2)
    uvf = np.frombuffer(uvf_bytes, np.int64).reshape(-1, 3)
    path = _cache_dir() / f"uv_{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["face_id"], z["bary"], z["inside"]
        except Exception:  # noqa: BLE001 - a broken cache file is rebuilt
            log.debug("rebuilding the UV raster cache %s", path)
    face_id, bary, inside = rasterize_uv(uv, uvf, size)
    try:
        from ..io.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, face_id=face_id, bary=bary, inside=inside)
    except OSError:  # read-only cache: keep the in-memory copy only
        pass
    return face_id, bary, inside


def uv_layout(model, size: int) -> UVLayout:
    """The rasterized UV layout of `model` (a MorphableModel with `uv`, `uv_faces`, `faces`) at R = size.

    Cached in memory and in $FACERECON_CACHE/prnet/ (keyed by the UV data and R)."""
    uv = model.uv.detach().cpu().numpy().astype(np.float32)
    uvf = model.uv_faces.detach().cpu().numpy().astype(np.int64)
    faces = model.faces.detach().cpu().numpy().astype(np.int64)
    if len(uvf) != len(faces) or not len(uv):
        raise ValueError(f"model '{model.name}' has no UV layout for its {len(faces)} triangles")
    off_tile = ((uv[uvf] < 0) | (uv[uvf] > 1)).any((1, 2))
    uvf_in = uvf.copy()
    uvf_in[off_tile] = -1
    face_id, bary, inside = _layout_arrays(_layout_key(uv, uvf_in, size), uv.tobytes(), uvf_in.tobytes(), size)
    # One UV per vertex, as MorphableModel.vertex_uv: the last corner written in face order.
    V = int(model.n_vertices)
    vuv = np.full((V, 2), np.nan, np.float64)
    keep = ~off_tile
    vuv[faces[keep].reshape(-1)] = uv[uvf[keep].reshape(-1)]
    missing = np.isnan(vuv[:, 0])
    if missing.any():
        ms = model.mean_shape.detach().cpu().numpy()
        have = np.flatnonzero(~missing)
        for v in np.flatnonzero(missing):
            vuv[v] = vuv[have[np.argmin(((ms[have] - ms[v]) ** 2).sum(1))]]
    return UVLayout(size, face_id, bary, inside, faces, uv_to_texel(vuv, size).astype(np.float32))


# -- maps from positions and back ------------------------------------------------------------------

def positions_from_world(vertices_world: torch.Tensor, camera: PerspectiveCamera, crop_size: int = CROP_SIZE
                         ) -> torch.Tensor:
    """(B, V, 3) world mm -> (B, V, 3) map positions (x px, y px, z px; module docstring)."""
    scr = camera.project(vertices_world)
    z = (camera.distance - scr[..., 2]) * (camera.focal / camera.distance) + crop_size / 2.0
    return torch.stack([scr[..., 0], scr[..., 1], z], -1)


def positions_from_screen(vertices_px: torch.Tensor, camera: PerspectiveCamera, crop_size: int = CROP_SIZE
                          ) -> torch.Tensor:
    """(B, V, 3) (x px, y px, depth mm), the data engine's `vertices_px` -> (B, V, 3) map positions."""
    z = (camera.distance - vertices_px[..., 2]) * (camera.focal / camera.distance) + crop_size / 2.0
    return torch.stack([vertices_px[..., 0], vertices_px[..., 1], z], -1)


def world_from_positions(pos: torch.Tensor, camera: PerspectiveCamera, crop_size: int = CROP_SIZE) -> torch.Tensor:
    """(B, N, 3) map positions -> (B, N, 3) world mm (the exact inverse of `positions_from_world`)."""
    depth = camera.distance - (pos[..., 2] - crop_size / 2.0) * (camera.distance / camera.focal)
    return camera.unproject(pos[..., :2], depth)


def render_map(layout: UVLayout, positions: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) per-vertex positions -> (B, 3, R, R) position map (0 on unfilled texels).

    Linear in `positions` (each texel is a fixed barycentric mix of its triangle's corners)."""
    flat, tri, w = (t.to(positions.device) for t in layout.texels)
    B, R = positions.shape[0], layout.size
    vals = torch.einsum("bnkc,nk->bcn", positions[:, tri], w.to(positions.dtype))  # (B, 3, N)
    out = positions.new_zeros(B, 3, R * R)
    out[:, :, flat] = vals
    return out.view(B, 3, R, R)


def sample_map(maps: torch.Tensor, points_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear read of (B, C, R, R) maps at (N, 2) or (B, N, 2) texel pixels -> (B, N, C)."""
    R = maps.shape[-1]
    xy = points_xy.to(maps)
    if xy.dim() == 2:
        xy = xy.expand(maps.shape[0], -1, -1)
    grid = (xy * (2.0 / (R - 1)) - 1.0)[:, :, None, :]  # align_corners=True: texel centres at ±1
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)[..., 0].transpose(1, 2)


def read_vertices(layout: UVLayout, maps: torch.Tensor) -> torch.Tensor:
    """(B, C, R, R) maps -> (B, V, C): each vertex's bilinear read at its UV."""
    return sample_map(maps, torch.as_tensor(layout.vertex_xy))


def uv_texture(maps: torch.Tensor, images: torch.Tensor, layout: UVLayout | None = None) -> torch.Tensor:
    """PRNet's texture: the photo read through the map. maps (B, 3, R, R) positions (crop px);
    images (B, C, S, S) float -> (B, C, R, R) (0 outside `layout.filled` when given)."""
    S = images.shape[-1]
    grid = (maps[:, :2].permute(0, 2, 3, 1) * (2.0 / (S - 1)) - 1.0).to(images)
    tex = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if layout is not None:
        tex = tex * torch.as_tensor(layout.filled, dtype=tex.dtype, device=tex.device)
    return tex



# -- PRNet's weight mask -----------------------------------------------------------------------------

#: PRNet's weights: the 68 keypoints : eyes, nose, mouth : the rest of the face : outside (neck, ears).
MASK_WEIGHTS = {"keypoints": 16.0, "features": 4.0, "face": 3.0, "other": 0.0}


def weight_mask(layout: UVLayout, vertex_parts: np.ndarray, landmark_vertices: np.ndarray,
                weights: dict | None = None) -> np.ndarray:
    """(R, R) float32 PRNet weight mask in `layout`'s UV space.

    vertex_parts: (V,) part labels of `models.annotations` (0..7 = PART_NAMES, 8 = other);
    landmark_vertices: (68,) vertex ids. Each texel takes the part of its triangle's corner with the
    largest barycentric weight (ICT's eyes are holes rimmed by eye-labelled vertices, so a
    per-triangle label would lose them). Eyes and brows (PRNet's eye region covers the brows), nose
    and the lips weigh `features`; the skin `face`; the rest (neck, ears, sides of the head,
    unfilled texels) `other`; the 2 × 2 texels around each landmark's UV point (the ones a bilinear
    read uses) `keypoints`.
    """
    w = dict(MASK_WEIGHTS, **(weights or {}))
    from ..models.annotations import OTHER, SKIN

    fid = layout.face_id
    corner = np.argmax(layout.bary, -1)
    vid = layout.faces[np.clip(fid, 0, None), :][np.arange(fid.shape[0])[:, None], np.arange(fid.shape[1])[None],
                                                  corner]
    part = np.where(fid >= 0, np.asarray(vertex_parts)[vid], OTHER)
    out = np.full(fid.shape, w["other"], np.float32)
    out[(part < SKIN)] = w["features"]
    out[part == SKIN] = w["face"]
    out[fid < 0] = w["other"]
    R = layout.size
    for x, y in layout.vertex_xy[np.asarray(landmark_vertices)]:
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        out[max(y0, 0):min(y0 + 2, R), max(x0, 0):min(x0 + 2, R)] = w["keypoints"]
    return out


def model_weight_mask(model, size: int) -> np.ndarray:
    """`weight_mask` of a model with part annotations (ICT) at resolution `size`; without annotations,
    1 on every filled texel (and `keypoints` at the 68)."""
    from ..models.annotations import SKIN, annotations_for

    layout = uv_layout(model, size)
    ann = annotations_for(model)
    parts = ann.vertex_parts if ann is not None else np.full(model.n_vertices, SKIN)
    return weight_mask(layout, parts, model.landmarks68.cpu().numpy())

__all__ = [
    "CROP_SIZE",
    "DILATE",
    "MASK_WEIGHTS",
    "UVLayout",
    "model_weight_mask",
    "positions_from_screen",
    "positions_from_world",
    "rasterize_uv",
    "read_vertices",
    "render_map",
    "sample_map",
    "uv_layout",
    "uv_texture",
    "uv_to_texel",
    "weight_mask",
    "world_from_positions",
]
