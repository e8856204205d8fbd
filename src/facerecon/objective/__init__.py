"""Deep3D's hybrid objective, written once: `terms` (the per-face losses) and `hybrid` (the
composites: landmark + dense points, render + photometric, identity-perceptual, temporal).
`fit.Fitter` and `regress.train.Losses` both call these with their own weights.

Layer: below `fit/` and `regress/`; uses models, render, nets and geometry only.
"""

from .hybrid import (
    identity_affine,
    identity_target,
    identity_term,
    photo_term,
    point_term,
    temporal_term,
)
from .terms import (
    albedo_smoothness,
    coefficient_prior,
    deep3d_landmark_weights,
    identity_loss,
    landmark_loss,
    light_prior,
    photometric_loss,
    rotation_prior,
    temporal_smoothness,
)

__all__ = [
    "albedo_smoothness",
    "coefficient_prior",
    "deep3d_landmark_weights",
    "identity_affine",
    "identity_loss",
    "identity_target",
    "identity_term",
    "landmark_loss",
    "light_prior",
    "photo_term",
    "photometric_loss",
    "point_term",
    "rotation_prior",
    "temporal_smoothness",
    "temporal_term",
]
