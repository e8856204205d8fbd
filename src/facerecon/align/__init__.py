"""Face alignment: 5-point similarity crops (Deep3D's rule), exact crop↔original transforms,
image warping without OpenCV, and face/skin masks for photometric losses."""

from .crop import Crop, align_face, deep3d_lm3d_ref, lm5_from_lm68_corners, reference_points_2d
from .mask import face_mask, face_region_mask, polygon_mask, skin_likelihood
from .similarity import (
    compose,
    estimate_similarity,
    invert_affine,
    transform_points,
    transform_scale,
    warp_image,
)

__all__ = [
    "Crop",
    "align_face",
    "compose",
    "deep3d_lm3d_ref",
    "estimate_similarity",
    "face_mask",
    "face_region_mask",
    "invert_affine",
    "lm5_from_lm68_corners",
    "polygon_mask",
    "reference_points_2d",
    "skin_likelihood",
    "transform_points",
    "transform_scale",
    "warp_image",
]
