"""Faces placed in whole pictures: a labelled face crop pasted on a padded canvas or beside another
person's photo. The held-out detection benchmark (`benchmarks/detection.py`) builds its sets with
these, and the detector's fine-tuning (`scripts/train_detector.py`) its training images, from
disjoint faces.

All points are pixel centres (x right, y down); a crop (c, c, 3) uint8 with its (68, 2) float32
points (NaN rows for unlabelled points) goes in, an (H, W, 3) uint8 picture and the points in it
come out. `rng` is a numpy Generator; the draws are made in a fixed order, so a seed fixes a set.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

#: Face size of a roughly centred portrait (sqrt(w*h) of its 68 points) / photo side (LFW: ~0.45).
PHOTO_FACE = 0.45


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def blur(img: np.ndarray, r: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(r)))


def feather(c: int, ramp: int) -> np.ndarray:
    """(c, c, 1) float mask: 1 inside, linear ramp to 0 over `ramp` px at the border."""
    t = np.minimum(np.arange(c) + 0.5, c - np.arange(c) - 0.5) / max(ramp, 1)
    m = np.clip(np.minimum(t[:, None], t[None, :]), 0, 1)
    return m[..., None].astype(np.float32)


def paste(canvas: np.ndarray, crop: np.ndarray, x: int, y: int) -> None:
    """Blend the square `crop` into `canvas` at (x, y) in place, its border feathered."""
    c = crop.shape[0]
    m = feather(c, max(2, c // 14))
    reg = canvas[y:y + c, x:x + c].astype(np.float32)
    canvas[y:y + c, x:x + c] = (m * crop + (1 - m) * reg).round().astype(np.uint8)


def map_points(pts: np.ndarray, scale: float, x: float, y: float) -> np.ndarray:
    """Crop pixel centres -> canvas pixel centres after resizing by `scale` and pasting at (x, y)."""
    return ((pts + 0.5) * scale - 0.5 + np.float32([x, y])).astype(np.float32)


def points_box(pts: np.ndarray) -> np.ndarray:
    """(N, 2) points (NaN rows ignored) -> (4,) [x0, y0, x1, y1]; raises ValueError if none finite."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    if not len(p):
        raise ValueError("no finite landmark")
    return np.concatenate([p.min(axis=0), p.max(axis=0)])


def place_on_padding(crop: np.ndarray, pts: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """The crop resized to a random 130-260 px, at a random position on a canvas 1.8-2.6x its size
    filled with its own reflected, blurred surroundings (no second sharp face)."""
    c = int(rng.uniform(130, 260))
    s = c / crop.shape[0]
    big = resize(crop, c, c)
    W, H = int(c * rng.uniform(1.8, 2.6)), int(c * rng.uniform(1.8, 2.6))
    x, y = int(rng.integers(0, W - c + 1)), int(rng.integers(0, H - c + 1))
    canvas = np.pad(big, ((y, H - c - y), (x, W - c - x), (0, 0)), mode="symmetric")
    canvas = blur(canvas, c / 12).copy()
    paste(canvas, big, x, y)
    return canvas, map_points(pts, s, x, y)


def place_beside(crop: np.ndarray, pts: np.ndarray, photo: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """The crop pasted beside another person's photo: the photo (resized to a random 200-400 px
    square) is extended sideways by 0.9x its width with its blurred edge, and the crop goes there
    (feathered) with its face 1.15-1.6x the photo's face (`PHOTO_FACE` of the side), so the
    labelled face is the largest one and the photo's face a real wrong face."""
    side = int(rng.uniform(200, 400))
    p = resize(photo, side, side)
    extra = int(0.9 * side)
    right = bool(rng.integers(2))  # the crop goes to the right of the photo (else left)
    pad = ((0, 0), (0, extra) if right else (extra, 0), (0, 0))
    canvas = np.pad(p, pad, mode="edge")
    band = canvas[:, side:] if right else canvas[:, :extra]
    band[:] = blur(np.ascontiguousarray(band), side / 20)
    g = points_box(pts)
    gface = np.sqrt((g[2] - g[0]) * (g[3] - g[1]))
    c = int(min(rng.uniform(1.15, 1.6) * PHOTO_FACE * side * crop.shape[0] / gface, side, extra + 0.15 * side))
    s = c / crop.shape[0]
    big = resize(crop, c, c)
    lo, hi = (side - int(0.15 * side), side + extra - c) if right else (0, extra + int(0.15 * side) - c)
    x = int(rng.integers(min(lo, hi), max(lo, hi) + 1))
    y = int(rng.integers(0, side - c + 1))
    paste(canvas, big, x, y)
    return canvas, map_points(pts, s, x, y)


__all__ = ["PHOTO_FACE", "feather", "map_points", "paste", "place_beside", "place_on_padding", "points_box"]
