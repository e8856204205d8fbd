"""Face/skin masks for photometric losses, from 68 iBUG landmarks (no segmentation network).

`face_mask` = (face region) − (eyes) − (inner mouth), optionally × (skin-colour likelihood):

- face region: convex hull of the jaw line (points 0–16), the brows (17–26) and the brows moved
  up by `forehead` × the chin→brow vector, so the forehead is covered and the hull follows roll;
- eyes (36–41, 42–47) enlarged by `eye_scale` about their centres, and the inner-lip polygon
  (60–67), are removed: their appearance (gaze, teeth, tongue) is not modelled by the albedo;
- skin model: a Gaussian in (Cb, Cr) chrominance (BT.601, 0–255), fitted robustly (iterated
  2σ-trimming) to pixels of the nose and both cheeks. Pixels within the 99 % ellipse score 1 and
  the score decays as exp(−(d² − 9.21)/2) outside, removing hair, glasses frames, hands and
  background that the hull covers. Chrominance only, so shading does not count as "not skin".

Coordinates: pixels, pixel centres at integers (as everywhere in facerecon).
"""

from __future__ import annotations

import numpy as np

_CHI2_2DOF_99 = 9.21
_CHI2_2DOF_95 = 5.99


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone-chain hull of (N, 2) points, counter-clockwise, no repeated end point."""
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def polygon_mask(polygon, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixel centres inside `polygon` ((K, 2) x, y pixels; even-odd rule)."""
    h, w = shape
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((h, w), dtype=bool)
    if len(poly) < 3:
        return out
    x0, y0 = max(int(np.floor(poly[:, 0].min())), 0), max(int(np.floor(poly[:, 1].min())), 0)
    x1, y1 = min(int(np.ceil(poly[:, 0].max())), w - 1), min(int(np.ceil(poly[:, 1].max())), h - 1)
    if x1 < x0 or y1 < y0:
        return out
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
    inside = np.zeros(xs.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        if ay == by:
            continue
        crosses = (ay > ys) != (by > ys)
        x_at = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < x_at)
    out[y0:y1 + 1, x0:x1 + 1] = inside
    return out


def _shrink(poly: np.ndarray, factor: float) -> np.ndarray:
    c = poly.mean(0)
    return c + (poly - c) * factor


def rgb_to_cbcr(image: np.ndarray) -> np.ndarray:
    """(..., 3) RGB 0–255 -> (..., 2) Cb, Cr (BT.601 full range, as JPEG), float64."""
    rgb = np.asarray(image, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.stack([cb, cr], -1)


def skin_sample_regions(lm68, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: nose and both cheeks (polygons shrunk towards their centres so that a
    slightly off landmark still lands on skin): the pixels the skin-colour model is fitted to."""
    p = np.asarray(lm68, dtype=np.float64)
    regions = [
        _shrink(_convex_hull(p[27:36]), 0.8),                        # nose
        _shrink(p[[1, 2, 3, 48, 31, 40]], 0.7),                      # cheek on image left
        _shrink(p[[15, 14, 13, 54, 35, 47]], 0.7),                   # cheek on image right
    ]
    m = np.zeros(shape, dtype=bool)
    for r in regions:
        m |= polygon_mask(r, shape)
    return m


def skin_likelihood(image: np.ndarray, sample: np.ndarray, floor: float = 3.0,
                    iterations: int = 3, dark: float = 0.3) -> np.ndarray | None:
    """(H, W) float32 in [0, 1]: how skin-like each pixel's chrominance is, given a bool `sample`
    mask of known skin. None when fewer than 20 sample pixels. `floor`: minimum σ (0–255 units)
    so a flat-coloured sample does not make the model infinitely strict. `dark`: pixels darker
    than this fraction of the sample's median luma fade out (ramp from 1.5× to 1× of it): dark
    hair and brows often have skin-like chrominance, and chrominance is noise when luma is low."""
    cbcr = rgb_to_cbcr(image)
    x = cbcr[sample]
    if len(x) < 20:
        return None
    keep = np.ones(len(x), dtype=bool)
    mu, cov = np.median(x, 0), np.eye(2)
    for _ in range(iterations):
        xs = x[keep] if keep.sum() >= 10 else x
        mu = xs.mean(0)
        cov = np.cov(xs.T) + floor ** 2 * np.eye(2)
        d2 = np.einsum("ni,ij,nj->n", x - mu, np.linalg.inv(cov), x - mu)
        keep = d2 < _CHI2_2DOF_95 * 1.5  # trim hair/specular outliers, then refit
    diff = cbcr - mu
    d2 = np.einsum("...i,ij,...j->...", diff, np.linalg.inv(cov), diff)
    like = np.exp(-0.5 * np.maximum(d2 - _CHI2_2DOF_99, 0.0))
    if dark > 0:
        rgb = np.asarray(image, dtype=np.float64)
        luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        lo = dark * float(np.median(luma[sample]))
        like *= np.clip((luma - lo) / (0.5 * lo + 1e-6), 0.0, 1.0)
    return like.astype(np.float32)


def face_region_mask(lm68, shape: tuple[int, int], forehead: float = 0.3, eye_scale: float = 1.4,
                     exclude_mouth: bool = True) -> np.ndarray:
    """(H, W) bool: hull of jaw + brows (+ forehead), minus enlarged eyes and the inner mouth."""
    p = np.asarray(lm68, dtype=np.float64)
    if p.shape != (68, 2) or not np.isfinite(p).all():
        raise ValueError(f"lm68 must be finite (68, 2), got {p.shape}")
    up = p[17:27].mean(0) - p[8]  # chin -> brow centre: "up" along the face, whatever its roll
    hull = _convex_hull(np.concatenate([p[0:17], p[17:27], p[17:27] + forehead * up]))
    m = polygon_mask(hull, shape)
    for eye in (p[36:42], p[42:48]):
        m &= ~polygon_mask(_shrink(eye, eye_scale), shape)
    if exclude_mouth:
        m &= ~polygon_mask(p[60:68], shape)
    return m


def face_mask(image, lm68, forehead: float = 0.3, eye_scale: float = 1.4, skin: bool = True,
              exclude_mouth: bool = True) -> np.ndarray:
    """Mask of the face pixels a photometric loss should compare (see module docstring).

    image: (H, W, 3) uint8 RGB (or float in [0, 1]). lm68: (68, 2) pixels, iBUG order.
    forehead: how far above the brows the region extends, as a fraction of the chin→brow height.
    eye_scale: enlargement of the eye polygons (eyelashes, eyelid shadow).
    skin: multiply by the skin-colour likelihood (skipped when the sample is too small).
    Returns (H, W) float32 in [0, 1]: 0 outside the face region, soft inside where colour is
    unlike the sampled skin.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"image must be (H, W, 3), got {img.shape}")
    if np.issubdtype(img.dtype, np.floating):
        img = img[..., :3] * 255.0
    shape = img.shape[:2]
    region = face_region_mask(lm68, shape, forehead, eye_scale, exclude_mouth)
    out = region.astype(np.float32)
    if skin:
        like = skin_likelihood(img[..., :3], skin_sample_regions(lm68, shape) & region)
        if like is not None:
            out *= like
    return out
