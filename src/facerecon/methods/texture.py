"""The colour source of a reconstruction's meshes and renders (`facerecon reconstruct --texture`).

    constant  the model's constant albedo (ICT: `models.ict.DEFAULT_ALBEDO`), no per-vertex offset
    basis     the learned albedo basis' fitted coefficients (`load_model("ict", albedo="learned")`,
              fitting methods only: the shipped regressor has no albedo output)
    photo     per-vertex colours sampled from the photo, de-lit by the fitted light, so that the
              shaded mesh reproduces the photo where it is seen; unseen or grazing vertices take
              their mirror vertex's, and what neither side sees keeps the model's albedo
    None      the method's own result (the fitter's default: constant + fitted per-vertex offset)

A GCN-refined texture (issue 18, D3) is not available: no refiner network has been trained.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..models import FaceGeometry
from ..models.annotations import mirror_vertices
from ..render.shading import sh_shade
from ..render.texture import sample_vertex_colors
from .result import Reconstruction

TEXTURES = ("constant", "basis", "photo")

#: cos(normal, view ray) below which a photo sample is grazing (smeared) and not used.
MIN_FACING = 0.3


def photo_albedo(vertices_world: torch.Tensor, normals: torch.Tensor, faces: torch.Tensor, light: torch.Tensor,
                 camera, image, fallback: torch.Tensor, mirror: torch.Tensor | None = None,
                 min_facing: float = MIN_FACING) -> tuple[torch.Tensor, torch.Tensor]:
    """De-lit per-vertex colours of a photo.

    Args:
        vertices_world: (B, V, 3) posed vertices, mm; normals: (B, V, 3) their unit normals;
        faces: (F, 3) int64; light: (B, 27) SH light (Deep3D layout) of the fit;
        camera: the image's PerspectiveCamera; image: (B, H, W, 3) or (H, W, 3) uint8 / float [0, 1];
        fallback: (B, V, 3) albedo for vertices seen from neither side; mirror: (V,) int64 mirror
        vertex of each vertex (None: no mirror fill); min_facing: grazing threshold.

    Returns:
        albedo (B, V, 3) in [0, 1] and source (B, V) int8: 1 photo, 2 mirror, 0 fallback.
    """
    colors, vis = sample_vertex_colors(vertices_world, camera, image, faces)
    eye = torch.tensor([0.0, 0.0, camera.distance], dtype=vertices_world.dtype, device=vertices_world.device)
    ray = eye - vertices_world
    facing = (normals * ray).sum(-1) / ray.norm(dim=-1).clamp_min(1e-9)
    ok = vis & (facing > min_facing)
    irr = sh_shade(torch.ones_like(colors), normals, light)
    alb = (colors / irr.clamp_min(0.05)).clamp(0.0, 1.0)
    out = torch.where(ok[..., None], alb, fallback)
    src = ok.to(torch.int8)
    if mirror is not None:
        m = mirror.to(device=alb.device)
        use = ~ok & ok[:, m]
        out = torch.where(use[..., None], alb[:, m], out)
        src = torch.where(use, torch.full_like(src, 2), src)
    return out, src


def with_photo_texture(rec: Reconstruction) -> Reconstruction:
    """`rec` with its albedo replaced by the crop's de-lit colours (`photo_albedo`); the light is
    the method's (the shader's ambient light when it has none)."""
    from ..render.shading import ambient_light

    g = rec.geometry
    light = rec.params.light if rec.params is not None else ambient_light(1, g.albedo.dtype, g.albedo.device)
    mirror = None
    if rec.model is not None and rec.correspondence is None:
        mirror = torch.as_tensor(mirror_vertices(rec.model.mean_shape))
    with torch.no_grad():
        alb, _ = photo_albedo(g.vertices_world, g.normals, rec.topology.triangles, light.to(g.albedo),
                              rec.camera_crop, torch.as_tensor(rec.crop.image), g.albedo, mirror)
    return replace(rec, geometry=FaceGeometry(g.vertices, g.vertices_world, g.normals, alb))


def _without_offset(rec: Reconstruction) -> Reconstruction:
    """The model's albedo of `rec`'s coefficients without a per-vertex offset (a no-op without one)."""
    if rec.model is None or rec.params is None or rec.params.albedo_offset is None:
        return rec
    g = rec.geometry
    with torch.no_grad():
        alb = rec.model.albedo(rec.params.albedo.to(g.albedo))
    return replace(rec, geometry=FaceGeometry(g.vertices, g.vertices_world, g.normals, alb),
                   params=rec.params.replace(albedo_offset=None))


def apply_texture(recs: list[Reconstruction], texture: str | None) -> list[Reconstruction]:
    """Post-process a method's results for `texture` (see the module doc); 'constant' and 'basis'
    are set up before the method runs (model and fit settings: `api.FaceReconstructor`)."""
    if texture is None or texture == "basis":
        return recs
    if texture == "constant":
        return [_without_offset(r) for r in recs]
    if texture == "photo":
        return [with_photo_texture(r) for r in recs]
    raise ValueError(f"unknown texture {texture!r}; choose from {TEXTURES}")


__all__ = ["MIN_FACING", "TEXTURES", "apply_texture", "photo_albedo", "with_photo_texture"]
