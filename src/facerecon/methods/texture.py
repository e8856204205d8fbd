"""The colour source of a reconstruction's meshes and renders (`facerecon reconstruct --texture`).

    constant  the model's constant albedo (ICT: `models.ict.DEFAULT_ALBEDO`), no per-vertex offset
    basis     the learned albedo basis' fitted coefficients (`load_model("ict", albedo="learned")`,
              fitting methods only: the shipped regressor has no albedo output)
    photo     per-vertex colours sampled from the photo, de-lit by the fitted light, so that the
              shaded mesh reproduces the photo where it is seen; unseen or grazing vertices take
              their mirror vertex's, and what neither side sees keeps the model's albedo
    refined   the GCN texture refiner (Lin et al. 2020; `nets.texture_refiner`): a coarse texture decoded
              from the regressor backbone's and MobileFaceNet's features of the crop, refined with the
              photo's de-lit colours (`delit_vertex_colors`) on the mesh hierarchy; methods with the
              model's topology and a fitted light (fit, regress, regress+refine)
    None      the method's own result (the fitter's default: constant + fitted per-vertex offset)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..models import FaceGeometry
from ..models.annotations import mirror_vertices
from ..render.shading import sh_shade
from ..render.texture import sample_vertex_colors
from .result import Reconstruction

TEXTURES = ("constant", "basis", "photo", "refined")

#: cos(normal, view ray) below which a photo sample is grazing (smeared) and not used.
MIN_FACING = 0.3


def delit_vertex_colors(vertices_world: torch.Tensor, normals: torch.Tensor, faces: torch.Tensor,
                        light: torch.Tensor, camera, image, min_facing: float = MIN_FACING
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The photo's colour at each vertex divided by the light's irradiance, and where it is trusted.

    Args: as `photo_albedo`. Returns:
        albedo (B, V, 3) in [0, 1] (meaningless where not seen) and seen (B, V) bool: visible in the
        z-buffer and facing the camera (cos(normal, view ray) > `min_facing`).
    """
    colors, vis = sample_vertex_colors(vertices_world, camera, image, faces)
    eye = torch.tensor([0.0, 0.0, camera.distance], dtype=vertices_world.dtype, device=vertices_world.device)
    ray = eye - vertices_world
    facing = (normals * ray).sum(-1) / ray.norm(dim=-1).clamp_min(1e-9)
    ok = vis & (facing > min_facing)
    irr = sh_shade(torch.ones_like(colors), normals, light)
    return (colors / irr.clamp_min(0.05)).clamp(0.0, 1.0), ok


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
    alb, ok = delit_vertex_colors(vertices_world, normals, faces, light, camera, image, min_facing)
    out = torch.where(ok[..., None], alb, fallback)
    src = ok.to(torch.int8)
    if mirror is not None:
        m = mirror.to(device=alb.device)
        use = ~ok & ok[:, m]
        out = torch.where(use[..., None], alb[:, m], out)
        src = torch.where(use, torch.full_like(src, 2), src)
    return out, src


class TextureFeatures(torch.nn.Module):
    """The refiner's image features: the shipped regressor's backbone features (512, pooled) and the
    MobileFaceNet identity embedding (128, aligned on the crop's 5 points), concatenated; both frozen.

    forward(crops (B, 3, 224, 224) float [0, 1], lm5 (B, 5, 2) crop px) -> (B, 640).
    """

    def __init__(self, regressor=None, encoder=None):
        super().__init__()
        from ..nets.mobilefacenet import IdentityEncoder
        from ..regress.predict import load_regressor

        self.regressor = regressor if regressor is not None else load_regressor()
        self.encoder = encoder if encoder is not None else IdentityEncoder()
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, crops: torch.Tensor, lm5: torch.Tensor) -> torch.Tensor:
        from ..nets.mobilefacenet import similarity_to_template

        r = self.regressor
        with torch.no_grad():
            f = r.net.backbone((crops - r.mean) / r.std)
            e = self.encoder(crops, similarity_to_template(lm5.to(crops)))
        return torch.cat([f, e], 1)


_REFINER_CACHE: dict = {}


def _refiner_parts(rec: Reconstruction):
    """(GCNTexture, TextureFeatures, mirror (V,)) loaded once per process."""
    from ..nets.texture_refiner import load_texture_refiner

    if "net" not in _REFINER_CACHE:
        _REFINER_CACHE["net"] = load_texture_refiner()
        _REFINER_CACHE["features"] = TextureFeatures()
    key = ("mirror", rec.model.n_vertices)
    if key not in _REFINER_CACHE:
        _REFINER_CACHE[key] = torch.as_tensor(mirror_vertices(rec.model.mean_shape))
    return _REFINER_CACHE["net"], _REFINER_CACHE["features"], _REFINER_CACHE[key]


def refine_albedo(net, features: torch.Tensor, vertices_world: torch.Tensor, normals: torch.Tensor,
                  faces: torch.Tensor, light: torch.Tensor, camera, image, mirror: torch.Tensor) -> torch.Tensor:
    """The refiner's albedo for posed meshes in the photo `image` (module doc of `nets.texture_refiner`).

    Args: net: `GCNTexture`; features: (B, 640) `TextureFeatures`; the rest as `photo_albedo`.
    Returns: (B, V, 3) albedo in [0, 1].
    """
    photo, seen = delit_vertex_colors(vertices_world, normals, faces, light, camera, image)
    albedo, _ = net(features.to(photo.dtype), photo, seen, mirror)
    return albedo


def with_refined_texture(rec: Reconstruction) -> Reconstruction:
    """`rec` with its albedo replaced by the GCN refiner's (`refine_albedo`), under the method's light."""
    from ..errors import FaceReconError

    if rec.model is None or rec.params is None or rec.correspondence is not None:
        raise FaceReconError(f"{rec.source or 'image'}: texture 'refined' needs a method with the model's "
                             f"mesh and a fitted light (fit, regress, regress+refine), not '{rec.method}'")
    net, feats, mirror = _refiner_parts(rec)
    g = rec.geometry
    if g.albedo.shape[1] != net.n_vertices:
        raise FaceReconError(f"texture 'refined' was trained for a {net.n_vertices}-vertex mesh; model "
                             f"'{rec.model_name}' has {g.albedo.shape[1]}")
    crop = torch.as_tensor(rec.crop.image).float().div(255.0).permute(2, 0, 1)[None]
    lm5 = torch.as_tensor(np.asarray(rec.crop.lm5, np.float32))[None]
    with torch.no_grad():
        f = feats(crop, lm5)
        v = g.vertices_world.float()
        alb = refine_albedo(net, f, v, g.normals.float(), rec.topology.triangles, rec.params.light.float(),
                            rec.camera_crop, torch.as_tensor(rec.crop.image), mirror)
    return replace(rec, geometry=FaceGeometry(g.vertices, g.vertices_world, g.normals, alb.to(g.albedo)))


def with_photo_texture(rec: Reconstruction) -> Reconstruction:
    """`rec` with its albedo replaced by the crop's de-lit colours (`photo_albedo`); the light is
    the method's (the shader's ambient light when it has none)."""
    from ..render.shading import ambient_light

    g = rec.geometry
    light = rec.params.light if rec.params is not None else ambient_light(1, g.albedo.dtype, g.albedo.device)
    with torch.no_grad():
        alb, _ = photo_albedo(g.vertices_world, g.normals, rec.topology.triangles, light.to(g.albedo),
                              rec.camera_crop, torch.as_tensor(rec.crop.image), g.albedo, rec._mirror())
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
    if texture == "refined":
        return [with_refined_texture(r) for r in recs]
    raise ValueError(f"unknown texture {texture!r}; choose from {TEXTURES}")


__all__ = ["MIN_FACING", "TEXTURES", "TextureFeatures", "apply_texture", "delit_vertex_colors", "photo_albedo",
           "refine_albedo", "with_photo_texture", "with_refined_texture"]
