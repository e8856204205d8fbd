"""MediaPipe's static-image FaceMesh graph, reproduced around our PyTorch networks.

What ``mp.solutions.face_mesh.FaceMesh(static_image_mode=True)`` (mediapipe 0.10) does, step by step
(graphs face_landmark_front_cpu / face_detection_short_range / face_landmark_cpu .pbtxt):

1. BlazeFace short range: the whole image letterboxed (zero border) into 128×128, values in [-1, 1];
   896 anchors decoded, sigmoid scores >= min_score, weighted NMS (IoU 0.3); boxes and 6 keypoints
   mapped back to normalised image coordinates. The best detection is kept (max_num_faces = 1).
2. ROI: the detection's box centre and size, rotated so that the eye keypoints (0 -> 1) are
   level, squared on the longer side (in pixels) and scaled by 1.5.
3. The ROI warped to 192×192 (bilinear, border replicated), values in [0, 1]; the landmark network;
   the face flag's sigmoid must exceed 0.5 (min_tracking_confidence).
4. Points mapped back through the ROI (x, y normalised; z scaled like x by the ROI width).

MediaPipe's full-range detector (``FaceDetection(model_selection=1)``, a sparse model with a
feature-pyramid head) is not reproduced: `BlazeFace` is the short-range one.

Coordinates here are MediaPipe's normalised ones (0 and 1 at the image's outer pixel edges);
warps reproduce OpenCV's fixed-point bilinear sampling, so that our input tensors match MediaPipe's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..nets.blazeface import BlazeFaceShortRange
from ..nets.facemesh import FaceMeshNet


@dataclass(frozen=True)
class Detection:
    """One BlazeFace detection in normalised image coordinates.

    box: (4,) xmin, ymin, xmax, ymax; keypoints: (6, 2) right eye, left eye (the subject's),
    nose tip, mouth, right ear tragion, left ear tragion; score: face probability.
    """

    box: np.ndarray
    keypoints: np.ndarray
    score: float


@dataclass(frozen=True)
class Roi:
    """A rotated rectangle in normalised image coordinates (MediaPipe's NormalizedRect):
    centre (xc, yc), width, height (fractions of the image width / height), rotation (radians,
    clockwise on screen: image y points down)."""

    xc: float
    yc: float
    width: float
    height: float
    rotation: float = 0.0


def ssd_anchors(size: int, strides: tuple[int, ...], interpolated: bool) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1] as MediaPipe's SsdAnchorsCalculator makes them (fixed anchor
    size 1, aspect ratio 1, offset 0.5): consecutive layers with one stride share a grid; each layer
    adds one anchor per cell, two when `interpolated` (the interpolated-scale anchor)."""
    out, i = [], 0
    per_layer = 2 if interpolated else 1
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = -(-size // strides[i])
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(cells, per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def _lu_solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting in OpenCV's operation order (its LU solver), so that
    the perspective matrix comes out bit-identical to cv::getPerspectiveTransform's."""
    n = len(b)
    for i in range(n):
        k = max(range(i, n), key=lambda r: (abs(a[r][i]), -r))
        if k != i:
            a[i], a[k], b[i], b[k] = a[k], a[i], b[k], b[i]
        d = -1.0 / a[i][i]
        for j in range(i + 1, n):
            alpha = a[j][i] * d
            for c in range(i + 1, n):
                a[j][c] += alpha * a[i][c]
            b[j] += alpha * b[i]
    for i in range(n - 1, -1, -1):
        s = b[i]
        for c in range(i + 1, n):
            s -= a[i][c] * b[c]
        b[i] = s / a[i][i]
    return b


def _inv3(m: list[float]) -> list[float]:
    """3×3 inverse by cofactors (OpenCV's cv::invert for 3×3 matrices), row-major in and out."""
    (a, b, c), (d, e, f), (g, h, i) = m[0:3], m[3:6], m[6:9]
    det = 1.0 / (a * (e * i - h * f) - b * (d * i - g * f) + c * (d * h - g * e))
    return [(e * i - f * h) * det, (c * h - b * i) * det, (b * f - c * e) * det,
            (f * g - d * i) * det, (a * i - c * g) * det, (c * d - a * f) * det,
            (d * h - e * g) * det, (b * g - a * h) * det, (a * e - b * d) * det]


def _opencv_source_coords(roi_px: tuple[float, float, float, float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) int64 source x, y in 1/32 pixels, computed as OpenCV does, to the bit: float32
    box corners (cv::boxPoints), getPerspectiveTransform, its inverse, then per 64-pixel block
    rint((M⁻¹·(block start) + M⁻¹₀·x) · 32 / w). Coordinates exactly on a rounding tie are common
    (a 450-pixel image letterboxed to 128: x·32 = 112.5·j) and go whichever way OpenCV's float
    error sends them."""
    cx, cy, w, h = (np.float32(v) for v in roi_px[:4])
    ang = float(np.float32(roi_px[4] * 180 / math.pi)) * math.pi / 180
    a, b = np.float32(math.sin(ang) * 0.5), np.float32(math.cos(ang) * 0.5)
    p0 = (cx - a * h - b * w, cy + b * h - a * w)
    p1 = (cx + a * h - b * w, cy - b * h - a * w)
    src = [p0, p1, (2 * cx - p0[0], 2 * cy - p0[1]), (2 * cx - p1[0], 2 * cy - p1[1])]
    dst = [(0.0, size), (0.0, 0.0), (size, 0.0), (size, size)]
    rows, rhs = [[0.0] * 8 for _ in range(8)], [0.0] * 8
    for k, ((x, y), (u, v)) in enumerate(zip(src, dst)):
        fu, fv = np.float32(u), np.float32(v)
        rows[k] = [float(x), float(y), 1.0, 0.0, 0.0, 0.0, -float(x * fu), -float(y * fu)]
        rows[k + 4] = [0.0, 0.0, 0.0, float(x), float(y), 1.0, -float(x * fv), -float(y * fv)]
        rhs[k], rhs[k + 4] = u, v
    m = np.array(_inv3(_lu_solve(rows, rhs) + [1.0])).reshape(3, 3)
    j = np.arange(size, dtype=np.float64)
    y = j[:, None]
    x0 = (j // 64 * 64)[None, :]  # OpenCV's block start (blocks of 16 rows × 64 columns here)
    x1 = (j % 64)[None, :]
    X0 = m[0, 0] * x0 + m[0, 1] * y + m[0, 2]
    Y0 = m[1, 0] * x0 + m[1, 1] * y + m[1, 2]
    W0 = m[2, 0] * x0 + m[2, 1] * y + m[2, 2]
    W = W0 + m[2, 0] * x1
    W = np.where(W != 0, 32.0 / np.where(W != 0, W, 1.0), 0.0)
    X = np.rint((X0 + m[0, 0] * x1) * W).astype(np.int64)
    Y = np.rint((Y0 + m[1, 0] * x1) * W).astype(np.int64)
    return X, Y


def warp(pixels: np.ndarray, roi_px: tuple[float, float, float, float, float], size: int,
         border: str) -> torch.Tensor:
    """Sample the rotated rectangle (cx, cy, w, h, rotation) in pixels of `pixels` (H, W, 3) uint8
    onto a size×size grid as OpenCV's warpPerspective(INTER_LINEAR) does in MediaPipe's
    ImageToTensorCalculator: dst pixel (u, v) reads src = centre + R·((u/size − ½)·w, (v/size − ½)·h)
    (pixel centres at integers), with OpenCV's fixed-point arithmetic for uint8 images: source
    coordinates rounded to 1/32 pixel, 15-bit bilinear weights, the sum rounded half up.

    border: "replicate" (clamped taps) or "zero". Returns (1, 3, size, size) float32 in 0..255.
    """
    X, Y = _opencv_source_coords(roi_px, size)
    x0, y0, fx, fy = X >> 5, Y >> 5, (X & 31).astype(np.int32), (Y & 31).astype(np.int32)
    H, W = pixels.shape[:2]
    acc = np.full((size, size, pixels.shape[2]), 1 << 14, np.int32)  # + half: rounds the >> 15
    for dy, wy in ((0, 32 - fy), (1, fy)):
        for dx, wx in ((0, 32 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            val = pixels[np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)].astype(np.int32)
            if border != "replicate":
                val *= ((xi >= 0) & (xi < W) & (yi >= 0) & (yi < H))[..., None]
            acc += val * (wy * wx * 32)[..., None]  # the 4 weights sum to 2**15
    out = acc >> 15
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32))[None]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) with boxes b (N, 4)."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 threshold: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-max suppression: repeatedly take the best remaining box, average it
    with every remaining box overlapping it by IoU > threshold (itself included), weights = scores;
    the score stays the best one's. Returns [(box (4,), keypoints (K, 2), score)], best first."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        sim = _iou(boxes[top], boxes[order])
        cand = order[sim > threshold]
        order = order[sim <= threshold]
        if cand.size == 0:  # only with a degenerate (zero-area) best box
            cand = np.array([top])
            order = order[order != top]
        w = scores[cand][:, None]
        box = (boxes[cand] * w).sum(0) / w.sum()
        kps = (keypoints[cand] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[top])))
    return out


class BlazeFace:
    """MediaPipe's short-range face detection graph on our network.

    __call__(pixels (H, W, 3) uint8, min_score) -> [Detection], best first.
    """

    size = 128

    def __init__(self, net: BlazeFaceShortRange) -> None:
        self.net = net.eval()
        self.anchors = ssd_anchors(self.size, (8, 16, 16, 16), interpolated=True)

    def __call__(self, pixels: np.ndarray, min_score: float = 0.5) -> list[Detection]:
        H, W = pixels.shape[:2]
        size = self.size
        # Letterbox the whole image into the square tensor (keep_aspect_ratio, zero border).
        side = float(max(W, H))
        x = warp(pixels, (W / 2, H / 2, side, side, 0.0), size, "zero") / 127.5 - 1.0
        with torch.no_grad():
            reg, logit = self.net(x)
        reg = reg[0].double().numpy() / size
        score = 1 / (1 + np.exp(-np.clip(logit[0].double().numpy(), -100, 100)))
        keep = score >= min_score
        if not keep.any():
            return []
        reg, score, anc = reg[keep], score[keep], self.anchors[keep].astype(np.float64)
        ctr = reg[:, :2] + anc
        half = reg[:, 2:4] / 2
        boxes = np.concatenate([ctr - half, ctr + half], 1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) + anc[:, None]
        out = []
        for box, kp, sc in weighted_nms(boxes, kps, score):
            # Tensor-normalised -> image-normalised through the letterbox.
            sx, sy = side / W, side / H
            box = np.array([(box[0] - 0.5) * sx + 0.5, (box[1] - 0.5) * sy + 0.5,
                            (box[2] - 0.5) * sx + 0.5, (box[3] - 0.5) * sy + 0.5])
            kp = np.stack([(kp[:, 0] - 0.5) * sx + 0.5, (kp[:, 1] - 0.5) * sy + 0.5], 1)
            out.append(Detection(box, kp, sc))
        return out


def roi_from_detection(det: Detection, width: int, height: int, scale: float = 1.5) -> Roi:
    """The landmark ROI of a detection (FaceDetectionFrontDetectionToRoi): box centre, rotation
    levelling the eye keypoints 0 -> 1, square on the longer pixel side, × scale."""
    x0, y0, x1, y1 = det.box
    (ex0, ey0), (ex1, ey1) = det.keypoints[0], det.keypoints[1]
    rot = -math.atan2(-(ey1 - ey0) * height, (ex1 - ex0) * width)
    rot = rot - 2 * math.pi * math.floor((rot + math.pi) / (2 * math.pi))
    long_side = max((x1 - x0) * width, (y1 - y0) * height)
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, long_side / width * scale, long_side / height * scale, rot)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    # Both networks are hundreds of tiny ops: extra intra-op threads only add synchronisation (and
    # stall when the cores are busy), as for the fitter's landmark stages (fit/threads.py).
    prev = torch.get_num_threads()
    if n is not None and n != prev:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != prev:
            torch.set_num_threads(prev)


class FaceMeshGraph:
    """Static-image FaceMesh: detector -> ROI -> landmark network -> points.

    __call__(pixels (H, W, 3) uint8 RGB) -> (468, 3) float64 normalised points (x / W, y / H,
    z relative, in units of the image width like x) or None when no face is detected or the face
    flag is below `min_presence`. threads: torch intra-op threads while it runs (None: unchanged).
    """

    def __init__(self, detector: BlazeFace, landmarks: FaceMeshNet, min_detection: float = 0.5,
                 min_presence: float = 0.5, threads: int | None = 1) -> None:
        self.detector = detector
        self.net = landmarks.eval()
        self.min_detection = min_detection
        self.min_presence = min_presence
        self.threads = threads

    def landmarks_in_roi(self, pixels: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """The landmark network on `roi`: ((468, 3) normalised image points, face probability)."""
        H, W = pixels.shape[:2]
        x = warp(pixels, (roi.xc * W, roi.yc * H, roi.width * W, roi.height * H, roi.rotation), 192,
                 "replicate") / 255.0
        with torch.no_grad():
            pts, logit = self.net(x)
        p = pts[0].double().numpy() / 192.0
        prob = float(torch.sigmoid(logit[0].double()))
        c, s = math.cos(roi.rotation), math.sin(roi.rotation)
        dx, dy = p[:, 0] - 0.5, p[:, 1] - 0.5
        out = np.stack([(c * dx - s * dy) * roi.width + roi.xc,
                        (s * dx + c * dy) * roi.height + roi.yc,
                        p[:, 2] * roi.width], 1)
        return out, prob

    def __call__(self, pixels: np.ndarray) -> np.ndarray | None:
        with _threads(self.threads):
            dets = self.detector(pixels, self.min_detection)
            if not dets:
                return None
            H, W = pixels.shape[:2]
            pts, prob = self.landmarks_in_roi(pixels, roi_from_detection(dets[0], W, H))
        return pts if prob > self.min_presence else None
