"""Differentiable CPU mesh rendering: rasterize → interpolate → shade → antialias, plus textures.

See docs/rendering.md for conventions and for exactly what is differentiable.
"""

from facerecon.render.antialias import antialias, silhouette_edges
from facerecon.render.rasterize import Fragments, interpolate, rasterize, scatter_pixels
from facerecon.render.renderer import OUTPUTS, MeshRenderer, RenderOutput, pncc_code
from facerecon.render.shading import DEEP3D_INIT_LIT, key_light, sh_basis, sh_coefficients, sh_shade
from facerecon.render.texture import extract_uv_texture, sample_image, sample_vertex_colors
from facerecon.render.views import (
    crop_views,
    landmark_image,
    photo_overlay,
    render_images,
    shaded_colors,
    uv_texture,
)

__all__ = [
    "DEEP3D_INIT_LIT",
    "OUTPUTS",
    "Fragments",
    "MeshRenderer",
    "RenderOutput",
    "antialias",
    "crop_views",
    "extract_uv_texture",
    "interpolate",
    "key_light",
    "landmark_image",
    "photo_overlay",
    "pncc_code",
    "rasterize",
    "render_images",
    "sample_image",
    "sample_vertex_colors",
    "scatter_pixels",
    "sh_basis",
    "sh_coefficients",
    "sh_shade",
    "shaded_colors",
    "silhouette_edges",
    "uv_texture",
]
