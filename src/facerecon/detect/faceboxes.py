"""FaceBoxes detector backend (3DDFA_V2's detector): boxes and scores only.

FaceBoxes predicts no landmarks; `Face.lm5` is filled with a mean-face template placed in the box
(`Face.lm5_from_box` = True) so downstream code always gets 5 points — refine them with a
landmarker (3DDFA, MediaPipe) before relying on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..nets import faceboxes as fb
from .base import Face, sort_by_size
from .nms import decode_boxes, nms
from .retinaface import _unscale, as_pixels, resize_max, to_bgr_tensor

# 5 points as fractions of a FaceBoxes box (x, y), frontal mean: eyes at ~40% height, mouth at ~78%.
LM5_TEMPLATE = np.array(
    [[0.32, 0.42], [0.68, 0.42], [0.50, 0.60], [0.36, 0.78], [0.64, 0.78]], dtype=np.float32
)


def lm5_in_box(box: np.ndarray, template: np.ndarray = LM5_TEMPLATE) -> np.ndarray:
    """(4,) box -> (5, 2) template points inside it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (np.float32([x0, y0]) + template * np.float32([x1 - x0, y1 - y0])).astype(np.float32)


class FaceBoxesDetector:
    """FaceBoxes: `detect(image) -> list[Face]` largest first (lm5 = box template).

    Defaults as 3DDFA_V2: keep score > 0.5 after NMS at IoU 0.3; images are downscaled to fit
    720 x 1080 (max_size here bounds the longer side: 1080).
    """

    name = "faceboxes"

    def __init__(
        self,
        weights: str | Path | None = None,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        max_size: int | None = 1080,
        top_k: int = 5000,
    ) -> None:
        self.net = fb.load_faceboxes(weights)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        self.top_k = top_k

    @torch.inference_mode()
    def raw(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) RGB at its own size -> boxes (K, 4) pixels, scores (K,), highest first."""
        h, w = pixels.shape[:2]
        loc, conf = self.net(to_bgr_tensor(pixels, fb.MEAN_BGR))
        scores = conf[0, :, 1].numpy()
        idx = np.nonzero(scores >= self.score_threshold)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")][: self.top_k]
        boxes = decode_boxes(loc[0].numpy()[idx], fb.prior_boxes(h, w)[idx], fb.VARIANCES)
        boxes = boxes * np.float32([w, h, w, h])
        keep = nms(boxes, scores[idx], self.nms_threshold)
        return boxes[keep], scores[idx][keep]

    def detect(self, image) -> list[Face]:
        """image: (H, W, 3) uint8 RGB (or `io.Image`) -> faces, largest first, original pixels."""
        pixels = as_pixels(image)
        small, scale = resize_max(pixels, self.max_size)
        boxes, scores = self.raw(small)
        faces = []
        for b, s in zip(boxes, scores):
            box = _unscale(b.reshape(2, 2), scale).reshape(4).astype(np.float32)
            faces.append(Face(box=box, score=float(s), lm5=lm5_in_box(box), source=self.name,
                              lm5_from_box=True))
        return sort_by_size(faces)
