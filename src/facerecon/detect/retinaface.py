"""RetinaFace-MobileNet0.25 detector backend: boxes, scores and 5 landmarks.

Pipeline: RGB uint8 -> (optional downscale so the longer side <= max_size) -> BGR - mean -> net
-> decode against anchors -> score threshold -> NMS -> map back to original pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from ..nets import retinaface as rf
from .base import Face, sort_by_size
from .nms import decode_boxes, decode_landmarks, nms


def as_pixels(image) -> np.ndarray:
    """An `io.Image`, PIL image or (H, W, 3) array -> (H, W, 3) uint8 RGB array."""
    if hasattr(image, "pixels"):
        image = image.pixels
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if np.issubdtype(a.dtype, np.floating) and a.max() <= 1.0 else 1.0), 0, 255)
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a)


def resize_max(pixels: np.ndarray, max_size: int | None) -> tuple[np.ndarray, float]:
    """Downscale so max(H, W) <= max_size (never upscale): returns (pixels, scale new/old).

    Map a point back with x_old = (x_new + 0.5) / scale - 0.5 (PIL's half-pixel resampling grid).
    """
    h, w = pixels.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return pixels, 1.0
    s = max_size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    out = np.asarray(PILImage.fromarray(pixels).resize((nw, nh), PILImage.BILINEAR))
    # Effective scale per axis differs from s by rounding; use the mean of both.
    return out, 0.5 * (nw / w + nh / h)


def to_bgr_tensor(pixels: np.ndarray, mean_bgr: tuple[float, float, float]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 BGR minus mean (the Caffe-style input both nets expect)."""
    x = pixels[..., ::-1].astype(np.float32) - np.asarray(mean_bgr, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _unscale(pts: np.ndarray, scale: float) -> np.ndarray:
    return pts if scale == 1.0 else (pts + 0.5) / scale - 0.5


#: facerecon's fine-tuned weights (scripts/train_detector.py, weights/retinaface/MODEL_CARD.md).
PROFILE_WEIGHTS = "retinaface/retinaface_profiles.pth"


def default_weights_paths() -> list[Path]:
    """Where the fine-tuned weights are looked for: $FACERECON_RETINAFACE, the checkout's weights/,
    $FACERECON_ASSETS, the user cache (`assets.weights_paths`)."""
    from ..assets import weights_paths

    return weights_paths("FACERECON_RETINAFACE", PROFILE_WEIGHTS)


def resolve_weights(weights: str | Path | None = "wider") -> Path:
    """"wider": the original WIDER FACE weights (asset `retinaface`); "auto": facerecon's fine-tuned
    weights when found (they find profiles the original misses; their 5 points are a little less
    precise, so the pipelines use them for boxes only), else "wider"; None = "wider"; else a
    state-dict file."""
    from ..assets import path

    if weights is None:
        weights = "wider"
    if str(weights) == "auto":
        found = next((p for p in default_weights_paths() if p.is_file()), None)
        return found if found is not None else resolve_weights("wider")
    if str(weights) == "wider":
        return path("retinaface", "mobilenet0.25_Final.pth")
    return Path(weights)


class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25: `detect(image) -> list[Face]` largest first.

    weights:         `resolve_weights`: "wider" (default: the original, whose 5 points the
                     "retinaface" backend aligns with), "auto" (the fine-tuned ones when present) or a file.

    score_threshold: minimum face probability kept (0.5; the source's demo shows >= 0.6).
    nms_threshold:   IoU above which a lower-scoring box is suppressed (0.4, as the source).
    max_size:        the longer image side is downscaled to this before the net (None: never);
                     faces larger than ~400 px exceed the biggest anchors (256 px) and detect worse.
    """

    name = "retinaface"

    def __init__(
        self,
        weights: str | Path | None = "wider",
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        max_size: int | None = 640,
        top_k: int = 5000,
    ) -> None:
        self.weights = resolve_weights(weights)
        self.net = rf.load_retinaface(self.weights)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        self.top_k = top_k
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def priors(self, h: int, w: int) -> np.ndarray:
        if (h, w) not in self._priors:
            if len(self._priors) > 8:  # video frames share one size; stills rarely repeat
                self._priors.clear()
            self._priors[(h, w)] = rf.prior_boxes(h, w)
        return self._priors[(h, w)]

    @torch.inference_mode()
    def raw(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run on an (H, W, 3) RGB array at its own size: boxes (K,4), scores (K,), lm5 (K,5,2) pixels,
        after threshold and NMS, highest score first."""
        h, w = pixels.shape[:2]
        loc, conf, ldm = self.net(to_bgr_tensor(pixels, rf.MEAN_BGR))
        scores = conf[0, :, 1].numpy()
        idx = np.nonzero(scores >= self.score_threshold)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")][: self.top_k]
        pri = self.priors(h, w)[idx]
        boxes = decode_boxes(loc[0].numpy()[idx], pri, rf.VARIANCES) * np.float32([w, h, w, h])
        lms = decode_landmarks(ldm[0].numpy()[idx], pri, rf.VARIANCES) * np.float32([w, h])
        keep = nms(boxes, scores[idx], self.nms_threshold)
        return boxes[keep], scores[idx][keep], lms[keep]

    def detect(self, image) -> list[Face]:
        """image: (H, W, 3) uint8 RGB (or `io.Image`) -> faces, largest first, in original pixels."""
        pixels = as_pixels(image)
        small, scale = resize_max(pixels, self.max_size)
        boxes, scores, lms = self.raw(small)
        faces = [
            Face(
                box=_unscale(b.reshape(2, 2), scale).reshape(4).astype(np.float32),
                score=float(s),
                lm5=_unscale(lm, scale).astype(np.float32),
                source=self.name,
            )
            for b, s, lm in zip(boxes, scores, lms)
        ]
        return sort_by_size(faces)
