"""Image sets and video: one identity for the batch.

Strategy (`FitConfig.share_identity`, no starting FaceParams): fit every image on its own
(landmarks only), average their identities, then fit the per-image expression, pose, light (and the
shared albedo) to that one identity, kept fixed. A jointly optimised shared identity came out less
stable and less accurate than the average (LFW half-set distance 0.85 vs 0.66 mm,
benchmarks/sets_video.py; synthetic 6-view sets, neutral-shape error 2.16 vs 2.05 mm), and drifted
back there when started from the average. The averaging is `stages.initial_variables`' (a shared
fit from FaceParams starts from their mean identity, e.g. regressed ones).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .config import FitConfig, FitTargets

if TYPE_CHECKING:
    from .fitter import Fitter


def starts_from_independent_fits(cfg: FitConfig, targets: FitTargets) -> bool:
    """Whether a fit of `targets` runs the independent fits first (a set without a start)."""
    return cfg.share_identity and targets.init is None and targets.lm68.shape[0] > 1


def independent_start(fitter: Fitter, targets: FitTargets) -> FitTargets:
    """`targets` starting from independent landmark fits of every image (the same model, camera and
    dense map; no temporal term)."""
    cfg = replace(fitter.cfg, share_identity=False, w_temporal=0.0, steps_photo=0)
    solo = type(fitter)(fitter.model, cfg, fitter.camera, dense_map=fitter.dense_map)
    return replace(targets, init=solo.fit(replace(targets, image=None)).params)


__all__ = ["independent_start", "starts_from_independent_fits"]
