"""2-D affine/similarity transforms and image warping (no OpenCV).

A transform is a (2, 3) float64 matrix ``M`` acting on pixel coordinates (x right, y down, pixel
centres at integers): ``p' = M[:, :2] @ p + M[:, 2]``. `warp_image(image, M, size)` produces the
image whose pixel p' shows the source at ``M⁻¹ p'``, so landmarks move with `transform_points(M, ·)`.
numpy functions work in float64; the torch ones (`estimate_similarity_torch`, `warp_affine`, and
`transform_points`/`warp_image` on tensors) are batched and differentiable.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ..jit import njit


def estimate_similarity(src, dst, weights=None, rotation: bool = True) -> np.ndarray:
    """Weighted least-squares similarity taking `src` onto `dst` (Umeyama, no reflection).

    src, dst: (N, 2) points, N >= 2. weights: (N,) non-negative, or None for equal weights.
    rotation: True fits rotation + uniform scale + translation; False fits scale + translation
        only (Deep3D's alignment: in-plane rotation is left to the face's pose).
    Returns (2, 3) float64 minimising Σ wᵢ |M·srcᵢ − dstᵢ|².

    Closed form: with weighted centroids removed, and points read as complex numbers, the
    optimum is d = a·s with a = Σ w·conj(s)·d / Σ w|s|² (a real when rotation is off).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(src),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be (N,), non-negative, with a positive sum")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s, d = src - mu_s, dst - mu_d
    den = float(w @ (s ** 2).sum(1))
    if den <= 1e-12 * max(1.0, float(np.abs(src).max())) ** 2:
        raise ValueError("source points are (nearly) coincident: the scale is undefined")
    a_re = float(w @ (s * d).sum(1)) / den
    a_im = float(w @ (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0])) / den if rotation else 0.0
    lin = np.array([[a_re, -a_im], [a_im, a_re]])
    return np.concatenate([lin, (mu_d - lin @ mu_s)[:, None]], 1)


def estimate_similarity_torch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) taking `src` onto
    `dst`, equal weights: the torch, batched, differentiable counterpart of `estimate_similarity`.

    src, dst: (B, N, 2) or (N, 2) pixels (same shape). Returns (B, 2, 3) or (2, 3) in src's dtype.
    Closed form as `estimate_similarity`: with centroids removed, d = a·s in complex numbers,
    a = Σ conj(s)·d / Σ|s|². No validation (used inside losses; degenerate src gives inf/NaN).
    """
    squeeze = src.dim() == 2
    s, d = (src[None], dst[None]) if squeeze else (src, dst)
    sc, dc = s - s.mean(1, keepdim=True), d - d.mean(1, keepdim=True)
    den = (sc ** 2).sum((1, 2))
    a_re = (sc * dc).sum((1, 2)) / den
    a_im = (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0]).sum(1) / den
    lin = torch.stack([torch.stack([a_re, -a_im], -1), torch.stack([a_im, a_re], -1)], -2)  # (B,2,2)
    t = d.mean(1) - (lin @ s.mean(1)[..., None])[..., 0]
    m = torch.cat([lin, t[..., None]], -1)
    return m[0] if squeeze else m


def invert_affine(M) -> np.ndarray:
    """Exact inverse of a (2, 3) affine transform (float64)."""
    M = np.asarray(M, dtype=np.float64)
    inv = np.linalg.inv(M[:, :2])
    return np.concatenate([inv, -(inv @ M[:, 2])[:, None]], 1)


def compose(A, B) -> np.ndarray:
    """The transform "B, then A" (2, 3): compose(A, B) · p = A · (B · p)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    return np.concatenate([A[:, :2] @ B[:, :2], (A[:, :2] @ B[:, 2] + A[:, 2])[:, None]], 1)


def transform_points(M, points):
    """Apply (2, 3) `M` to (..., 2) points; numpy in -> float64 numpy, torch in -> torch
    (differentiable, M cast to the points' dtype/device; M may be (B, 2, 3) for (B, N, 2))."""
    if isinstance(points, torch.Tensor):
        m = torch.as_tensor(M, dtype=points.dtype, device=points.device)
        return points @ m[..., :2].transpose(-1, -2) + m[..., None, :, 2]
    M = np.asarray(M, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ M[:, :2].T + M[:, 2]


def transform_scale(M) -> float:
    """Linear scale factor of `M` (sqrt |det|): output pixels per source pixel."""
    M = np.asarray(M, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(M[:, :2]))))


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray, fill: float) -> np.ndarray:
    """Sample (H, W, C) float64 `img` at float coordinates; samples outside get `fill`, and a
    sample between an inside and an outside pixel blends with it (as grid_sample's zero padding)."""
    out = np.empty(x.shape + (img.shape[2],), dtype=np.float64)
    _bilinear_kernel(np.ascontiguousarray(img), np.ascontiguousarray(x, dtype=np.float64),
                     np.ascontiguousarray(y, dtype=np.float64), float(fill), out)
    return out


@njit(cache=True)
def _bilinear_kernel(img, x, y, fill, out):  # pragma: no cover - compiled
    # One pass per output pixel (numpy's fancy-indexed version took ~5 ms of a 224² crop); the
    # four taps are accumulated in the same order as before, so results are bit-identical.
    h, w, C = img.shape
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x0 = math.floor(x[i, j])
            y0 = math.floor(y[i, j])
            fx = x[i, j] - x0
            fy = y[i, j] - y0
            for c in range(C):
                acc = 0.0
                for t in range(4):
                    dy = t // 2
                    dx = t % 2
                    wgt = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy)
                    xi = int(x0) + dx
                    yi = int(y0) + dy
                    v = img[yi, xi, c] if (0 <= xi < w and 0 <= yi < h) else fill
                    acc += wgt * v
                out[i, j, c] = acc


def warp_affine(images: torch.Tensor, affine: torch.Tensor, size: tuple[int, int],
                padding_mode: str = "zeros") -> torch.Tensor:
    """Differentiable bilinear warp.

    images: (B, C, H, W). affine: (B, 2, 3) or (2, 3) mapping *source* pixels -> *output* pixels
    (pixel centres at integers). size: output (height, width). Returns (B, C, h, w); outside the
    source: zeros (or "border"/"reflection").
    """
    b, _, h_in, w_in = images.shape
    h, w = size
    a = affine.to(images.dtype)
    if a.dim() == 2:
        a = a.expand(b, 2, 3)
    lin, t = a[..., :2], a[..., 2:]
    inv_lin = torch.linalg.inv(lin)
    inv = torch.cat([inv_lin, -inv_lin @ t], -1)  # output px -> source px
    # Output pixel grid -> source pixels -> grid_sample's [-1, 1] with align_corners=True
    # (−1 and +1 are the centres of the first and last pixel: our integer-centre convention).
    ys, xs = torch.meshgrid(torch.arange(h, dtype=a.dtype, device=a.device),
                            torch.arange(w, dtype=a.dtype, device=a.device), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)
    src = pts @ inv.transpose(1, 2)  # (B, h*w, 2)
    scale = torch.tensor([2.0 / max(w_in - 1, 1), 2.0 / max(h_in - 1, 1)], dtype=a.dtype, device=a.device)
    grid = (src * scale - 1.0).reshape(b, h, w, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def warp_image(image, M, size, fill: float = 0.0, antialias: bool = True):
    """Warp `image` by the (2, 3) source→output pixel transform `M` (bilinear).

    image: numpy (H, W) or (H, W, C), uint8 or float; or torch (C, H, W) / (B, C, H, W) float
        (then `M` may be (B, 2, 3); differentiable via grid_sample, no antialiasing).
    size: output (height, width), or an int for a square.
    fill: value outside the source (numpy; torch pads with zeros).
    antialias: numpy only: when `M` shrinks the image, blur the source first with a Gaussian of
        σ = (1/scale − 1)/2 source pixels (skimage's rule) so fine detail does not alias.
    Returns numpy with the input's dtype (uint8 rounded and clipped) or a torch tensor.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if isinstance(image, torch.Tensor):
        batched = image.dim() == 4
        x = image if batched else image[None]
        m = torch.as_tensor(M, dtype=x.dtype, device=x.device)
        out = warp_affine(x, m, (h, w))
        return out if batched else out[0]

    img = np.asarray(image)
    squeeze = img.ndim == 2
    src = img[..., None] if squeeze else img
    M = np.asarray(M, dtype=np.float64)
    inv = invert_affine(M)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    scale = transform_scale(M)
    sigma = (1.0 / scale - 1.0) / 2.0 if antialias and scale < 1.0 else 0.0
    # Only the source region that the output reads from (plus the blur's reach) is processed:
    # blurring a whole multi-megapixel photo for a 224² crop would dominate the run time.
    pad = int(np.ceil(3 * sigma)) + 2
    x_lo = max(int(np.floor(sx.min())) - pad, 0)
    y_lo = max(int(np.floor(sy.min())) - pad, 0)
    x_hi = min(int(np.ceil(sx.max())) + pad + 1, src.shape[1])
    y_hi = min(int(np.ceil(sy.max())) + pad + 1, src.shape[0])
    if x_hi <= x_lo or y_hi <= y_lo:
        out = np.full((h, w, src.shape[2]), fill, dtype=np.float64)
    else:
        region = src[y_lo:y_hi, x_lo:x_hi].astype(np.float64)
        if sigma > 0.3:
            from scipy.ndimage import gaussian_filter

            region = gaussian_filter(region, sigma=(sigma, sigma, 0), mode="nearest", truncate=3.0)
        out = _bilinear(region, sx - x_lo, sy - y_lo, fill)
    if squeeze:
        out = out[..., 0]
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64)
