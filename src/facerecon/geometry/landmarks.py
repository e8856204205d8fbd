"""Landmark conventions, one home: iBUG-68 → 5 points, left/right mirroring, the FaceMesh yaw gate.

Pixels: x right, y down, pixel centres at integers. The 5 points are, in order, eye (image left,
i.e. the subject's right eye), eye (image right), nose tip, mouth corner (image left), mouth corner
(image right): the order RetinaFace, MTCNN and Deep3D use.

Two rules turn 68 points into 5; they differ only in the eye centres:
  * `lm5_from_lm68_corners`: mean of the two eye *corners* (Deep3D's ``load_lm3d``). Used for the
    alignment reference points in model space (`align.crop.deep3d_lm3d_ref`,
    `MorphableModel.mean_lm5`) and, via `MorphableModel.lm5_from_lm68`, for the identity loss's
    warp to MobileFaceNet's template (target landmarks in the fitter and the regressor's training).
  * `lm5_from_lm68_contour`: mean of all six eye-*contour* points. Used on *detected* 2-D
    landmarks: the `facerecon.detect` landmarkers fill `Face.lm5` with it, and `align_face` crops
    from that `Face.lm5`.
"""

from __future__ import annotations

import numpy as np
import torch

# iBUG-68 indices averaged into each of the 5 points by the corner rule (`lm5_from_lm68_corners`).
LM5_FROM_68 = ((36, 39), (42, 45), (30,), (48,), (54,))

# Index of each iBUG-68 point's mirror image (left/right swapped): lm_flipped[i] = lm[MIRROR[i]].
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 21, -1)) + list(range(21, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65]
)


def lm5_from_lm68_corners(lm68):
    """5 points by the eye-*corner* rule (Deep3D's ``load_lm3d``; indices `LM5_FROM_68`): eye centres
    as the mean of the two eye corners, nose tip, mouth corners.

    lm68: (..., 68, D) torch tensor -> (..., 5, D) in its dtype (differentiable), or array-like
    (68, D) -> (5, D) float64 numpy. Any D (2-D pixels, 3-D model points).
    """
    if isinstance(lm68, torch.Tensor):
        return torch.stack([lm68[..., list(ix), :].mean(-2) for ix in LM5_FROM_68], dim=-2)
    p = np.asarray(lm68, dtype=np.float64)
    if p.shape[0] != 68:
        raise ValueError(f"expected 68 landmarks, got {p.shape}")
    return np.stack([p[list(ix)].mean(0) for ix in LM5_FROM_68])


def lm5_from_lm68_contour(lm68) -> np.ndarray:
    """5 points by the eye-*contour* rule, for detected landmarks: eye centres as the mean of the six
    eye-contour points (36-41, 42-47), nose tip (30), mouth corners (48, 54).

    lm68: (68, 2) pixels -> (5, 2) float32 (computed in float32).
    """
    lm68 = np.asarray(lm68, dtype=np.float32)
    return np.stack(
        [lm68[36:42].mean(0), lm68[42:48].mean(0), lm68[30], lm68[48], lm68[54]]
    ).astype(np.float32)


def flip_landmarks(lm68: np.ndarray, width: int) -> np.ndarray:
    """Landmarks found on a horizontally flipped image (width W) -> the original image: mirror x
    (pixel centres at integers: x -> W - 1 - x) and swap left/right points (`IBUG68_MIRROR`).
    (..., 68, 2+) -> same shape and dtype; columns after x are unchanged. Its own inverse."""
    out = np.asarray(lm68)[..., IBUG68_MIRROR, :].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


def flip_box(box, width: int) -> np.ndarray:
    """[x0, y0, x1, y1, ...] in an image of width W -> (4,) float64, the same box in the horizontally
    flipped image (entries after the 4th are dropped)."""
    b = np.asarray(box, np.float64).reshape(-1)[:4]
    return np.array([width - 1 - b[2], b[1], width - 1 - b[0], b[3]])


def yaw_gate(yaw_deg: float, full: float = 30.0, zero: float = 50.0) -> float:
    """Trust in FaceMesh's points for a head yaw (degrees, 3DDFA's estimate, `Face.yaw`): 1 up to
    `full`, 0 from `zero`, linear between. It scales the fitter's dense term, and the detection
    pipeline skips FaceMesh where it is 0. FaceMesh's points were mapped on faces up to 45° and
    degrade on turned faces (AFLW2000-3D dev, GT boxes, w_dense 1, mean NME for (full, zero):
    (20, 45) 3.471, (30, 50) 3.452, (40, 55) 3.457)."""
    return float(np.clip((zero - abs(yaw_deg)) / max(zero - full, 1e-6), 0.0, 1.0))


__all__ = [
    "IBUG68_MIRROR",
    "LM5_FROM_68",
    "flip_box",
    "flip_landmarks",
    "lm5_from_lm68_contour",
    "lm5_from_lm68_corners",
    "yaw_gate",
]
