"""What a fit takes and gives: the schedule and weights (`FitConfig`), the targets (`FitTargets`)
and the result (`FitResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models.layout import FaceParams


@dataclass(frozen=True)
class FitConfig:
    """Schedule and loss weights. Landmark loss is the weighted mean squared error in crop pixels²."""

    n_identity: int = 100
    steps_pose: int = 40
    steps_shape: int = 120
    steps_photo: int = 80
    steps_albedo: int = 20
    lr_pose: float = 0.02
    lr_shape: float = 0.05
    lr_photo: float = 0.02
    lr_albedo: float = 0.01  # per-vertex albedo residual (stage 4)
    w_landmark: float = 1.0
    # Dense FaceMesh correspondences (when the detection has them and the model a DenseMap): weight
    # of their 1/sigma²-weighted mean squared error (px²) relative to the 68-landmark term's
    # (AFLW2000-3D dev, GT boxes, FaceMesh used below 45° of yaw: 0 -> 3.52, 0.3 -> 3.49,
    # 1 -> 3.46, 1.5 -> 3.49, 3 -> 3.65; then the yaw ramp of `geometry.landmarks.yaw_gate`).
    w_dense: float = 1.0
    # Deep3D's landmark pattern with a milder emphasis than its 20 (training keeps 20): at 20 the
    # nose and inner mouth outweigh the other 51 points ~7:1 and the jaw and eye corners are left
    # under-fitted (AFLW2000-3D dev NME 3.530 vs 3.521 at 1 and 3.522 at 3, same priors).
    landmark_emphasis: float = 3.0
    landmark_robust: float | None = 12.0  # px; soft cap on each landmark's error
    pose_from_3d: bool = False  # also start from `FitTargets.lm68_3d`'s Procrustes pose when given
    # Head-rotation prior (`FitTargets.rotation_prior`: the landmarker's own pose, 3DDFA_V2's
    # averaged over its test-time augmentation): weight per squared degree between the fitted and
    # the prior rotation, in the landmark term's px² (0: off). Chosen on the data engine's synthesized
    # views (exact poses; no benchmark data; benchmarks/pose_priors.py, 248 views): mean geodesic
    # error 0 -> 3.92°, 0.03 -> 3.70, 0.1 -> 3.62, 0.3 -> 3.59, 1 -> 3.59 (docs/evaluation.md).
    w_rotation_prior: float = 0.3
    w_id_prior: float = 0.01
    w_exp_prior: float = 0.1
    w_alb_prior: float = 0.01
    w_photo: float = 200.0
    w_light: float = 1.0
    w_albedo_smooth: float = 50.0
    w_identity: float = 20.0  # identity-perceptual (only with an encoder)
    w_temporal: float = 0.0  # video: smoothness of pose and expression across frames
    share_identity: bool = False  # image set / video: one identity (and albedo) for the batch
    keep_identity: bool = False  # with `FitTargets.init`: keep its identity fixed (video windows after the first)
    estimate_albedo: bool = True  # per-vertex residual when the model has no albedo basis
    render_size: int = 224
    seed: int = 0
    # 3DDFA_V3's part re-projection distance loss (objective/prdl.py) against `FitTargets.parts`:
    # its weight relative to the landmark term (both px²); 0 = off. With it on, a parts stage runs
    # after the shape stage (`steps_prdl` steps through the full mesh) and the photometric stage
    # keeps the term. Off by default: see docs/parts.md (PRDL) for what it was measured to do.
    w_prdl: float = 0.0
    steps_prdl: int = 40
    lr_prdl: float = 0.02
    prdl_anchors: int = 12  # an n × n grid of anchors over the crop (19 px apart)
    prdl_max_points: int = 300  # per part, sampled on a lattice coarse enough (objective.prdl.choose_strides)
    prdl_part_weights: tuple | None = None  # per part (PART_NAMES order); None = all 1


@dataclass(frozen=True)
class FitTargets:
    """What a fit is fitted to (B faces, all in crop pixels of an S×S crop).

    lm68: (B, 68, 2) target landmarks; lm_weights: (B, 68) confidences (1 = trusted, 0 = ignore);
    image: (B, S, S, 3) float [0, 1] crop, or None for a landmark-only fit;
    mask: (B, S, S) float face/skin mask for the photometric loss (None: all pixels);
    init: optional FaceParams to start from (e.g. from a regressor).
    dense: (B, N, 2) FaceMesh points in crop pixels (N = the fitter's DenseMap size), or None;
    dense_weights: (B, N) or (B, 1) trust in them (0 = ignore, e.g. a profile or no FaceMesh).
    lm68_3d: (B, 68, 3) 3-D landmark estimates in crop pixels (x right, y down, z towards the
        viewer, any offset), e.g. 3DDFA_V2's: a second starting pose besides POS (`procrustes_init`).
    rotation_prior: (B, 3, 3) a head rotation to stay near (model frame -> crop camera frame, the
        fitted rotation's convention), weighted by `FitConfig.w_rotation_prior`, or None.
    parts: (B, S, S) integer part label maps of the crops (0 none, k + 1 for part k of
        `models.annotations.PART_NAMES`), e.g. a face parser's; the targets of PRDL (`FitConfig.w_prdl`).
        Where they come from is the caller's business (`fit.targets.part_targets`).
    """

    lm68: torch.Tensor
    lm_weights: torch.Tensor | None = None
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    init: FaceParams | None = None
    dense: torch.Tensor | None = None
    dense_weights: torch.Tensor | None = None
    lm68_3d: torch.Tensor | None = None
    rotation_prior: torch.Tensor | None = None
    parts: torch.Tensor | None = None


@dataclass(frozen=True)
class FitResult:
    """params: fitted FaceParams (B); lm68: (B, 68, 2) model landmarks projected into the crop;
    losses: final per-term values (floats, batch means); times: seconds per stage."""

    params: FaceParams
    lm68: torch.Tensor
    losses: dict = field(default_factory=dict)
    times: dict = field(default_factory=dict)


__all__ = ["FitConfig", "FitResult", "FitTargets"]
