"""Differentiable CPU mesh rendering: rasterize → interpolate → shade → antialias, plus textures.

See docs/rendering.md for conventions and for exactly what is differentiable.
"""

from facerecon.render.antialias import antialias, silhouette_edges
from facerecon.render.rasterize import Fragments, interpolate, rasterize, scatter_pixels
from facerecon.render.renderer import OUTPUTS, MeshRenderer, RenderOutput, pncc_code
from facerecon.render.shading import DEEP3D_INIT_LIT, sh_basis, sh_coefficients, sh_shade
from facerecon.render.texture import extract_uv_texture, sample_image, sample_vertex_colors

__all__ = [
    "DEEP3D_INIT_LIT",
    "OUTPUTS",
    "Fragments",
    "MeshRenderer",
    "RenderOutput",
    "antialias",
    "extract_uv_texture",
    "interpolate",
    "pncc_code",
    "rasterize",
    "sample_image",
    "sample_vertex_colors",
    "scatter_pixels",
    "sh_basis",
    "sh_coefficients",
    "sh_shade",
    "silhouette_edges",
]
