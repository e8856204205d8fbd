"""Synthetic occluders for training the face parser (scripts/train_parser.py).

The data engine's labels are the model's visible parts (`seg_visible`), which ignore whatever covers
the face in the photo; a parser trained on them alone labels a hand on the cheek "skin". Pasting
occluders onto the training crops and labelling their pixels 0 (background/other, the public label
map's value for "not a part") teaches it not to. Four kinds, each drawn with PIL:

- ``patch``: a blob cut from another photo's background (label 0 there), so real textures occlude;
- ``hand``: a palm ellipse + finger capsules in the face's own skin colour (median of its skin
  pixels), shaded: the occluder that a colour test cannot reject;
- ``hair``: dark strands (quadratic curves) falling over the forehead and eyes;
- ``glasses``: rims around the eyes, a bridge and temples; sunglasses (tinted lenses) hide the eyes.

All functions take and return numpy uint8: images (H, W, 3) RGB, labels (H, W) in the
`seg_visible` encoding (0 background, k + 1 part k of `models.annotations.PART_NAMES`).
"""

from __future__ import annotations

import numpy as np

from ..models.annotations import PART_NAMES

KINDS = ("patch", "hand", "hair", "glasses")
_SKIN = PART_NAMES.index("skin") + 1
_EYES = (PART_NAMES.index("right_eye") + 1, PART_NAMES.index("left_eye") + 1)


def _face_box(labels: np.ndarray) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of the labelled face (the whole map when nothing is labelled)."""
    ys, xs = np.nonzero(labels)
    H, W = labels.shape
    if len(xs) < 20:
        return W * 0.2, H * 0.2, W * 0.8, H * 0.8
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _skin_colour(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    skin = image[labels == _SKIN]
    base = np.median(skin, 0) if len(skin) > 50 else rng.uniform([120, 80, 60], [230, 190, 170])
    return np.clip(base * rng.uniform(0.85, 1.15, 3), 0, 255)


def _capsule(draw, p, q, r, fill) -> None:
    draw.line([tuple(p), tuple(q)], fill=fill, width=max(1, int(2 * r + 0.5)))
    for c in (p, q):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)


def occluder_mask(kind: str, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  donor: np.ndarray | None = None,
                  donor_labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One occluder of `kind` for a crop.

    Args:
        kind: one of `KINDS`.
        image: (H, W, 3) uint8 crop; labels: (H, W) uint8 its label map.
        donor: (H, W, 3) uint8 another crop, the texture source of ``patch`` (default: the crop
            itself, mirrored); donor_labels: (H, W) its label map (where its background is).

    Returns:
        alpha (H, W) float32 in [0, 1] (how much of the occluder covers each pixel) and the
        occluder's colour image (H, W, 3) float32 in [0, 255].
    """
    from PIL import Image, ImageDraw, ImageFilter

    H, W = labels.shape
    x0, y0, x1, y1 = _face_box(labels)
    fw, fh = max(x1 - x0, 8.0), max(y1 - y0, 8.0)
    m = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(m)
    colour = np.zeros((H, W, 3), np.float32)
    feather = 0.7
    if kind == "patch":
        src = image[:, ::-1] if donor is None else donor
        r = rng.uniform(0.15, 0.35) * min(fw, fh) + 6
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        n = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.6, 1.3, n)
        d.polygon([(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(rad, ang)], fill=255)
        # The texture from the donor's background: of a few random squares mostly outside its face
        # (label 0), the most textured one that is not the engine's black padding.
        s = int(min(H, W) * 0.25)
        src_lab = labels[:, ::-1] if donor is None else donor_labels
        best, tile = -1.0, None
        for _ in range(6):
            cy0, cx0 = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
            t = src[cy0:cy0 + s, cx0:cx0 + s].astype(np.float32)
            bg = 1.0 if src_lab is None else float((src_lab[cy0:cy0 + s, cx0:cx0 + s] == 0).mean())
            score = t.std() * (t.mean() > 20) * (bg > 0.8) + 1e-3 * bg
            if score > best:
                best, tile = score, t
        reps = (int(np.ceil(H / s)) + 1, int(np.ceil(W / s)) + 1, 1)
        tiled = np.tile(tile, reps)
        oy, ox = int(rng.integers(0, s)), int(rng.integers(0, s))
        colour = tiled[oy:oy + H, ox:ox + W]
    elif kind == "hand":
        base = _skin_colour(image, labels, rng)
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0 + 0.3 * fh, y1 + 0.2 * fh)
        size = rng.uniform(0.25, 0.45) * fw
        t = rng.uniform(-np.pi, np.pi)
        u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
        c = np.array([cx, cy])
        # Palm: a rotated ellipse as a polygon.
        phi = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = c + np.outer(np.cos(phi) * size * 0.55, u) + np.outer(np.sin(phi) * size * 0.5, v)
        d.polygon([tuple(p) for p in pts], fill=255)
        for k in range(int(rng.integers(3, 5))):
            off = (k - 1.5) * size * 0.27
            start = c + u * size * 0.35 + v * off
            length = size * rng.uniform(0.6, 1.0)
            bend = rng.uniform(-0.25, 0.25)
            end = start + (u * np.cos(bend) + v * np.sin(bend)) * length
            _capsule(d, start, end, size * rng.uniform(0.09, 0.13), 255)
        # Shading: a linear ramp across the hand and a little texture.
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        ramp = ((xx - cx) * u[0] + (yy - cy) * u[1]) / max(size, 1.0)
        shade = 1.0 + rng.uniform(-0.25, 0.25) * np.clip(ramp, -1.5, 1.5)
        noise = rng.normal(0, 4, (H, W, 1))
        colour = np.clip(base[None, None] * shade[..., None] + noise, 0, 255).astype(np.float32)
    elif kind == "hair":
        tone = rng.uniform(10, 90) if rng.random() < 0.8 else rng.uniform(90, 200)
        base = np.array([tone, tone * rng.uniform(0.75, 0.95), tone * rng.uniform(0.55, 0.85)])
        side = rng.uniform(x0 - 0.1 * fw, x1 + 0.1 * fw)
        for _ in range(int(rng.integers(6, 30))):
            p0 = np.array([side + rng.normal(0, 0.15 * fw), y0 - rng.uniform(0, 0.1) * fh])
            p2 = p0 + np.array([rng.normal(0, 0.25 * fw), rng.uniform(0.2, 0.6) * fh])
            p1 = (p0 + p2) / 2 + rng.normal(0, 0.1 * fw, 2)
            tt = np.linspace(0, 1, 16)[:, None]
            curve = (1 - tt) ** 2 * p0 + 2 * (1 - tt) * tt * p1 + tt ** 2 * p2
            d.line([tuple(p) for p in curve], fill=255, width=int(rng.integers(1, 5)))
        noise = rng.normal(0, 8, (H, W, 1))
        colour = np.clip(base[None, None] + noise, 0, 255).astype(np.float32)
        feather = 0.5
    elif kind == "glasses":
        cs = []
        for e in _EYES:
            ys, xs = np.nonzero(labels == e)
            if len(xs) >= 3:
                cs.append((xs.mean(), ys.mean()))
        if not cs:  # no visible eye: guess them from the face box
            cs = [(x0 + 0.3 * fw, y0 + 0.4 * fh), (x0 + 0.7 * fw, y0 + 0.4 * fh)]
        rx, ry = fw * rng.uniform(0.12, 0.18), fh * rng.uniform(0.07, 0.11)
        width = int(rng.integers(2, 6))
        sun = rng.random() < 0.3
        for cx, cy in cs:
            box = [cx - rx, cy - ry, cx + rx, cy + ry]
            if sun:
                d.ellipse(box, fill=255)
            else:
                d.ellipse(box, outline=255, width=width)
        if len(cs) == 2:
            (ax, ay), (bx, by) = sorted(cs)
            d.line([(ax + rx, ay), (bx - rx, by)], fill=255, width=width)
            d.line([(ax - rx, ay), (x0 - 0.1 * fw, ay - 0.02 * fh)], fill=255, width=width)
            d.line([(bx + rx, by), (x1 + 0.1 * fw, by - 0.02 * fh)], fill=255, width=width)
        tone = rng.uniform(0, 70) if rng.random() < 0.8 else rng.uniform(120, 230)
        colour = np.full((H, W, 3), tone, np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
        feather = 0.5
    else:
        raise ValueError(f"unknown occluder kind {kind!r}; expected one of {KINDS}")
    alpha = np.asarray(m.filter(ImageFilter.GaussianBlur(feather)), np.float32) / 255.0
    return alpha, colour


def paste_occluders(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                    kinds: tuple[str, ...] = KINDS) -> tuple[np.ndarray, np.ndarray]:
    """Paste one random occluder onto each crop with probability `p`; its pixels (alpha ≥ 0.5) are
    labelled 0.

    Args:
        images: (B, H, W, 3) uint8; labels: (B, H, W) uint8 (seg_visible encoding).
        rng: the random source; p: per-crop probability; kinds: which occluders to draw from.

    Returns:
        new (B, H, W, 3) uint8 images and (B, H, W) uint8 labels (the inputs are not modified).
    """
    images, labels = images.copy(), labels.copy()
    B = len(images)
    for i in range(B):
        if rng.random() >= p:
            continue
        kind = kinds[int(rng.integers(len(kinds)))]
        j = (i + 1 + int(rng.integers(max(B - 1, 1)))) % B
        donor, donor_labels = (images[j], labels[j]) if B > 1 else (None, None)
        alpha, colour = occluder_mask(kind, images[i], labels[i], rng, donor, donor_labels)
        a = alpha[..., None]
        images[i] = np.clip(images[i] * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)
        labels[i][alpha >= 0.5] = 0
    return images, labels


__all__ = ["KINDS", "occluder_mask", "paste_occluders"]
