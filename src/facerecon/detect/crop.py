"""3DDFA_V2's crop rules, written in numpy so that no OpenCV is needed.

- `roi_box_from_bbox`: 3DDFA_V2's ``parse_roi_box_from_bbox`` (enlarge a detector box to a square
  roi, shifted down by 14 % of the box size).
- `roi_box_from_landmarks`: ``parse_roi_box_from_landmark`` (the square around 68 landmarks,
  side = its diagonal), the roi 3DDFA_V2 tracks a face with between video frames.
- `crop_roi`: ``crop_img`` (integer-rounded roi, zero padding outside the image).
- `resize_linear_u8`: ``cv2.resize(..., INTER_LINEAR)`` for uint8 images, bit for bit in the
  common case: half-pixel centres, no antialiasing when shrinking, 11-bit fixed-point weights and
  OpenCV's SIMD rounding. (PIL's bilinear antialiases when shrinking, which moves the 3DDFA_V2
  NME by more than the port tolerance, so it is not a substitute.)
"""

from __future__ import annotations

import numpy as np

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


def roi_box_from_bbox(box) -> np.ndarray:
    """3DDFA_V2's roi box for a face-detector box.

    box: [x0, y0, x1, y1] (extra entries such as a score are ignored).
    Returns (4,) float64 [sx, sy, ex, ey]: a square of side int(1.58·s), s = mean of box width
    and height, centred at the box centre moved down by 0.14·s.
    """
    left, top, right, bottom = (float(v) for v in list(box)[:4])
    old_size = (right - left + bottom - top) / 2
    cx = right - (right - left) / 2.0
    cy = bottom - (bottom - top) / 2.0 + old_size * 0.14
    size = int(old_size * 1.58)  # truncation, as 3DDFA_V2 does
    x0, y0 = cx - size / 2, cy - size / 2
    return np.array([x0, y0, x0 + size, y0 + size], dtype=np.float64)


def bbox_from_roi_box(roi_box) -> np.ndarray:
    """The detector-like box that `roi_box_from_bbox` turns into `roi_box` (up to its truncation):
    a square of side s = side/1.58 centred 0.14·s above the roi's centre. (4,) float64."""
    sx, sy, ex, ey = (float(v) for v in list(roi_box)[:4])
    s = (ex - sx + ey - sy) / 2 / 1.58
    cx, cy = (sx + ex) / 2, (sy + ey) / 2 - 0.14 * s
    return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], dtype=np.float64)


def roi_box_from_landmarks(lm68) -> np.ndarray:
    """3DDFA_V2's roi box around landmarks: (K, 2+) pixels -> (4,) float64 [sx, sy, ex, ey], the
    square whose side is the diagonal of the landmarks' bounding square (√2 × its longer side),
    centred on the landmarks' bounding box."""
    p = np.asarray(lm68, np.float64)[:, :2]
    lo, hi = p.min(0), p.max(0)
    c = (lo + hi) / 2
    side = float(np.sqrt(2.0)) * float((hi - lo).max())
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2], dtype=np.float64)


def crop_roi(image: np.ndarray, roi_box) -> np.ndarray:
    """3DDFA_V2's ``crop_img``: (H, W, C) uint8 -> (ey − sy, ex − sx, C) uint8.

    The roi corners are rounded with Python's round (half to even, as 3DDFA_V2 does); parts of the
    roi outside the image are zero (black).
    """
    h, w = image.shape[:2]
    sx, sy, ex, ey = (round(float(v)) for v in list(roi_box)[:4])
    dh, dw = ey - sy, ex - sx
    if dh <= 0 or dw <= 0:
        raise ValueError(f"empty roi box {list(roi_box)[:4]}")
    out = np.zeros((dh, dw) + image.shape[2:], dtype=image.dtype)
    # Intersection of the roi with the image, in image and in roi coordinates.
    ix0, iy0, ix1, iy1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - sy:iy1 - sy, ix0 - sx:ix1 - sx] = image[iy0:iy1, ix0:ix1]
    return out


def _taps(dst: int, src: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's linear taps along one axis: (dst,) first source index (unclamped) and (dst,)
    float32 fraction, computed in float32 as OpenCV's resizeGeneric does."""
    scale = 1.0 / (dst / src)  # OpenCV stores inv_scale = dst/src and inverts it
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    frac = (f - i0.astype(np.float32)).astype(np.float32)
    return i0, frac


def _weights(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # saturate_cast<short>(float) rounds half to even, like np.rint.
    w0 = np.rint((np.float32(1.0) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    return w0, w1


def resize_linear_u8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)`` for uint8.

    image: (H, W) or (H, W, C) uint8; size: (out_w, out_h), OpenCV's order.
    Returns (out_h, out_w[, C]) uint8.
    """
    if image.dtype != np.uint8:
        raise TypeError(f"resize_linear_u8 needs uint8, got {image.dtype}")
    out_w, out_h = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    img = image.reshape(h, w, -1)

    # Vertical taps: OpenCV clamps the row indices but keeps the weights.
    y0, fy = _taps(out_h, h)
    b0, b1 = _weights(fy)
    # Horizontal taps: OpenCV clamps the tap *and* zeroes the fraction at both borders.
    x0, fx = _taps(out_w, w)
    fx = np.where((x0 < 0) | (x0 >= w - 1), np.float32(0), fx).astype(np.float32)
    x0 = np.clip(x0, 0, w - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    a0, a1 = _weights(fx)

    def hpass(rows: np.ndarray) -> np.ndarray:
        # Only the rows the vertical pass reads; int32 holds 255·2048 and (that >> 4)·2048.
        r = img[rows].astype(np.int32)
        return r[:, x0] * a0[None, :, None].astype(np.int32) + r[:, x1] * a1[None, :, None].astype(np.int32)

    r0 = hpass(np.clip(y0, 0, h - 1))
    r1 = hpass(np.clip(y0 + 1, 0, h - 1))
    # VResizeLinearVec_32s8u: (mulhi(s0 >> 4, b0) + mulhi(s1 >> 4, b1) + 2) >> 2.
    bb0 = b0[:, None, None].astype(np.int32)
    bb1 = b1[:, None, None].astype(np.int32)
    v = (((r0 >> 4) * bb0) >> 16) + (((r1 >> 4) * bb1) >> 16)
    out = np.clip((v + 2) >> 2, 0, 255).astype(np.uint8)
    return out.reshape((out_h, out_w) + image.shape[2:])


def crop_resize(image: np.ndarray, roi_box, size: int = 120) -> np.ndarray:
    """3DDFA_V2's input crop: `crop_roi` then `resize_linear_u8` to (size, size).

    (H, W, 3) uint8 -> (size, size, 3) uint8, same channel order as the input.
    """
    return resize_linear_u8(crop_roi(image, roi_box), (size, size))
