"""Box utilities shared by the anchor-based detectors: IoU, greedy NMS, SSD-style decoding.

Written here because torchvision's compiled `nms` does not load with the CPU torch wheel.
Boxes are (N, 4) [x0, y0, x1, y1] in pixels (or any common unit); areas use w*h without the
"+1" of old Caffe code, matching RetinaFace/FaceBoxes' own Python NMS closely enough for
thresholds in 0.3-0.5.
"""

from __future__ import annotations

import numpy as np
import torch


def box_area(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) -> (N,) areas, zero for degenerate boxes."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas: (N, 4), (M, 4) -> (N, M) float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU: (N, 4), (M, 4) -> (N, M) float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    boxes (N, 4), scores (N,) -> (K,) int64 indices of the kept boxes, highest score first.
    A box is dropped when its IoU with an already kept, higher-scoring box exceeds `iou_threshold`.
    Ties in score keep the lower index first (stable sort), so results are deterministic.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"nms: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = np.argsort(-scores, kind="stable")
    areas = box_area(boxes)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        xx0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """`nms` for tensors: (N, 4), (N,) -> (K,) int64 tensor on the boxes' device."""
    keep = nms(boxes.detach().cpu().double().numpy(), scores.detach().cpu().double().numpy(), iou_threshold)
    return torch.from_numpy(keep).to(boxes.device)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """SSD decoding of box regressions against anchors.

    loc (N, 4) [dcx, dcy, dw, dh]; priors (N, 4) [cx, cy, w, h] (normalised to the input size)
    -> (N, 4) [x0, y0, x1, y1] in the same normalised units.
    """
    loc = np.asarray(loc, dtype=np.float32)
    priors = np.asarray(priors, dtype=np.float32)
    centre = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * variances[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def decode_landmarks(pre: np.ndarray, priors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """RetinaFace landmark decoding: pre (N, 2K) offsets, priors (N, 4) -> (N, K, 2) normalised points."""
    pre = np.asarray(pre, dtype=np.float32)
    pre = pre.reshape(pre.shape[0], pre.shape[1] // 2 if pre.ndim == 2 else 0, 2)
    priors = np.asarray(priors, dtype=np.float32)
    return priors[:, None, :2] + pre * variances[0] * priors[:, None, 2:]
