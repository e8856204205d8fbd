"""Video frames as RGB uint8 arrays (OpenCV's FFmpeg reader, shipped with the `detect` extra)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputImageError, MissingExtraError


def read_frames(path, start: int = 0, max_frames: int | None = None, stride: int = 1) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames `start, start+stride, ...` (at most `max_frames`)."""
    try:
        import cv2
    except ImportError:
        raise MissingExtraError("detect", "opencv (via mediapipe)", "video input") from None
    p = Path(path)
    if not p.is_file():
        raise InputImageError(f"{p}: no such video file")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise InputImageError(f"{p}: cannot open as a video")
    try:
        i = n = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i >= start and (i - start) % stride == 0:
                yield np.ascontiguousarray(frame[..., ::-1])
                n += 1
            i += 1
        if n == 0:
            raise InputImageError(f"{p}: no decodable frames")
    finally:
        cap.release()
