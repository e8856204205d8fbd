"""The detection boundary: one `Face` per detected face, whatever backend produced it.

All coordinates are pixels of the *original* image, x right, y down, origin at the top-left
corner of the top-left pixel (pixel centres at integer + 0.5 is NOT used: a pixel's centre is at
its integer index, matching numpy/OpenCV and the AFLW2000-3D ground truth).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face.

    box:   (4,) float32 [x0, y0, x1, y1] pixels.
    score: detector confidence in [0, 1].
    lm5:   (5, 2) float32 pixels — left eye centre, right eye centre, nose tip, left mouth corner,
           right mouth corner, where left/right are *image* left/right (subject's right eye first),
           the order RetinaFace, MTCNN and Deep3D use.
    lm68:  (68, 2) float32 pixels in iBUG/Multi-PIE order, or None.
    lm68_conf: (68,) float32 per-landmark confidence in [0, 1] (1 = trusted), or None.
    dense: (N, 3) float32 dense landmarks (x, y pixels; z relative depth in pixels), or None.
    source: backend name(s) that produced it, e.g. "retinaface+3ddfa".
    """

    box: np.ndarray
    score: float
    lm5: np.ndarray
    lm68: np.ndarray | None = None
    lm68_conf: np.ndarray | None = None
    dense: np.ndarray | None = None
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

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


def lm5_from_lm68(lm68: np.ndarray) -> np.ndarray:
    """Deep3D's 5 points from 68 iBUG landmarks: eye centres (mean of 6 contour points), nose tip,
    mouth corners. (68, 2) -> (5, 2)."""
    lm68 = np.asarray(lm68, dtype=np.float32)
    return np.stack(
        [lm68[36:42].mean(0), lm68[42:48].mean(0), lm68[30], lm68[48], lm68[54]]
    ).astype(np.float32)


# Index of each iBUG-68 point's mirror image (left/right swapped): lm_flipped[i] = lm[MIRROR[i]].
IBUG68_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 21, -1)) + list(range(21, 16, -1)) + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65]
)


def flip_landmarks(lm68: np.ndarray, width: int) -> np.ndarray:
    """Landmarks found on a horizontally flipped image (width W) -> the original image: mirror x
    (pixel centres at integers: x -> W - 1 - x) and swap left/right points. (..., 68, 2)."""
    out = np.asarray(lm68)[..., IBUG68_MIRROR, :].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


def flip_box(box, width: int) -> np.ndarray:
    """[x0, y0, x1, y1] in an image of width W -> the same box in the horizontally flipped image."""
    b = np.asarray(box, np.float64).reshape(-1)[:4]
    return np.array([width - 1 - b[2], b[1], width - 1 - b[0], b[3]])
