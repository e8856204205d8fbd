"""Face alignment: 5-point similarity crops (Deep3D's rule) with exact crop↔original transforms,
and face/skin masks for photometric losses. The 2-D transforms and image warping themselves live in
`facerecon.geometry.transforms2d`, the 68 → 5 point rules in `facerecon.geometry.landmarks`."""

from .crop import Crop, align_face, deep3d_lm3d_ref, reference_points_2d
from .mask import face_mask, face_region_mask, polygon_mask, skin_likelihood

__all__ = [
    "Crop",
    "align_face",
    "deep3d_lm3d_ref",
    "face_mask",
    "face_region_mask",
    "polygon_mask",
    "reference_points_2d",
    "skin_likelihood",
]
