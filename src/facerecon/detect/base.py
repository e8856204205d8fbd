"""The detection boundary: one `Face` per detected face, whatever backend produced it.

All coordinates are pixels of the *original* image, x right, y down, a pixel's centre at its
integer index (the top-left pixel's centre is (0, 0); not the +0.5 convention), matching
numpy/OpenCV and the AFLW2000-3D ground truth. Landmark conventions (68 -> 5 points, mirroring)
live in `facerecon.geometry.landmarks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class HeadPose:
    """Head pose in degrees, 3DDFA_V2's ``calc_pose`` convention (`detect.tddfa.pose_from_matrix`):
    yaw has the sign of AFLW2000-3D's Pose_Para yaw; pitch and roll the opposite sign of its pitch
    and roll."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, eq=False)
class TDDFAFit:
    """3DDFA_V2's regression for one face (`detect.tddfa.TDDFALandmarker`), float64 unless noted.

    params:    (62,) float32 de-whitened parameters: P (12), alpha_shp (40), alpha_exp (10).
    P:         (3, 4) [sR | t] in the 120² crop frame (x right, y up, 1-based pixels).
    camera:    (2, 4) affine camera, 3DDFA's model frame -> original-image pixels
               (`detect.tddfa.image_camera`): [x, y] = camera @ [X, Y, Z, 1].
    scale:     s of P, the mean norm of its first two rows (``calc_pose``).
    R:         (3, 3) ``calc_pose``'s rotation: normalised rows 1, 2 of P and their cross product.
    R_ortho:   (3, 3) the proper rotation nearest to P[:, :3] (`geometry.rotations.nearest_rotation`).
    alpha_shp: (40,) float32 identity coefficients. alpha_exp: (10,) float32 expression coefficients.
    roi_box:   (4,) float32 [x0, y0, x1, y1] original pixels of the crop the network saw.
    """

    params: np.ndarray
    P: np.ndarray
    camera: np.ndarray
    scale: float
    R: np.ndarray
    R_ortho: np.ndarray
    alpha_shp: np.ndarray
    alpha_exp: np.ndarray
    roi_box: np.ndarray


@dataclass(frozen=True)
class Face:
    """One detected face. Arrays are numpy; pixels of the original image.

    box:   (4,) float32 [x0, y0, x1, y1] pixels.
    score: detector confidence in [0, 1].
    lm5:   (5, 2) float32 pixels — left eye centre, right eye centre, nose tip, left mouth corner,
           right mouth corner, where left/right are *image* left/right (subject's right eye first),
           the order RetinaFace, MTCNN and Deep3D use. Landmarkers derive it from lm68 with
           `geometry.landmarks.lm5_from_lm68_contour`.
    lm68:  (68, 2) float32 pixels in iBUG/Multi-PIE order, or None.
    lm68_conf: (68,) float32 per-landmark confidence in [0, 1] (1 = trusted), or None.
    dense: (N, 3) float32 dense landmarks (x, y pixels; z relative depth in pixels), or None.
    source: backend name(s) that produced it, e.g. "retinaface+3ddfa".
    lm68_3d: (68, 3) float32 3DDFA_V2 landmarks: x, y pixels, z as 3DDFA_V2 reports it (scaled
           like x, y, shifted so that min z = 0), or None.
    pose:  `HeadPose` (degrees) from 3DDFA_V2, or None; `yaw` reads it with 0 as the default.
    tddfa: `TDDFAFit`, 3DDFA_V2's per-face regression, or None.
    lm5_from_box: True when lm5 is a template placed in the box (FaceBoxes), not detected points.
    detector_lm5: (5, 2) float32 pixels, the box detector's own 5 points when a landmarker
           replaced lm5 (the default pipeline), or None.
    mediapipe_weight: FaceMesh's share in the blended lm68 (default pipeline; 0 = 3DDFA only), or
           None when no blend was considered.
    rotation: (3, 3) float64 the landmarker's head rotation, BFM's face frame -> image frame with y
           up (x right, y up, z towards the viewer; AFLW2000's ground-truth convention,
           `eval.pose.aflw_matrix`): 3DDFA_V2's, averaged over the test-time-augmentation passes
           when there were some, or None.
    """

    box: np.ndarray
    score: float
    lm5: np.ndarray
    lm68: np.ndarray | None = None
    lm68_conf: np.ndarray | None = None
    dense: np.ndarray | None = None
    source: str = ""
    lm68_3d: np.ndarray | None = None
    pose: HeadPose | None = None
    tddfa: TDDFAFit | None = None
    lm5_from_box: bool = False
    detector_lm5: np.ndarray | None = None
    mediapipe_weight: float | None = None
    rotation: np.ndarray | None = None

    @property
    def yaw(self) -> float:
        """pose.yaw in degrees, or 0.0 when there is no pose (treated as frontal)."""
        return 0.0 if self.pose is None else float(self.pose.yaw)

    @property
    def size(self) -> float:
        """sqrt(w*h) of the box in pixels."""
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return float(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0)))


class Detector(Protocol):
    """A face detector and/or landmarker backend.

    `detect(image)` takes an (H, W, 3) uint8 RGB array and returns faces sorted by size, largest
    first. Backends that only refine landmarks implement `landmarks(image, box)` returning a Face.
    """

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


def sort_by_size(faces: Sequence[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.size, reverse=True)
