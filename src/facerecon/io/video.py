"""Video in and out with PyAV (the `video` extra): a streaming decoder and an atomic H.264 writer.

Decoding is one frame at a time (memory flat in the clip's length); every frame carries its number
in the video (0-based, in presentation order, counted over every decoded frame whatever `start` and
`stride` select) and its timestamp in seconds from the stream's first frame.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputImageError, MissingExtraError
from .atomic import atomic_path

log = logging.getLogger(__name__)


def _av():
    try:
        import av
    except ImportError:
        raise MissingExtraError("video", "av (PyAV)", "video input and output") from None
    return av


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame.

    pixels: (H, W, 3) uint8 RGB. index: its number in the video (0-based, presentation order).
    time: seconds from the first frame (the frame's presentation timestamp; index / fps when the
    container has none). name: "frame{index:06d}", how outputs name it.
    """

    pixels: np.ndarray
    index: int
    time: float

    @property
    def name(self) -> str:
        return frame_name(self.index)


def frame_name(index: int) -> str:
    """The name of video frame `index` in outputs and error messages: 'frame000123'."""
    return f"frame{int(index):06d}"


@dataclass(frozen=True)
class VideoInfo:
    """fps: average frame rate (frames/s); frames: frame count from the container (0: unknown);
    duration: seconds (0: unknown); width, height: pixels."""

    fps: float
    frames: int
    duration: float
    width: int
    height: int


def _open(path):
    av = _av()
    p = Path(path)
    if not p.is_file():
        raise InputImageError(f"{p}: no such video file")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputImageError(f"{p}: cannot open as a video ({e})") from None
    if not container.streams.video:
        container.close()
        raise InputImageError(f"{p}: has no video stream")
    return p, container, container.streams.video[0]


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(path) -> VideoInfo:
    """Frame rate, frame count, duration and size of a video file (InputImageError when unreadable)."""
    _, container, stream = _open(path)
    try:
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        fps = _fps(stream)
        frames = int(stream.frames or 0) or (round(duration * fps) if duration and fps else 0)
        return VideoInfo(fps, frames, duration, int(stream.codec_context.width), int(stream.codec_context.height))
    finally:
        container.close()


def iter_frames(path, start: int = 0, max_frames: int | None = None, stride: int = 1) -> Iterator[VideoFrame]:
    """Yield the frames `start, start + stride, ...` (at most `max_frames`) of a video, decoded one at
    a time. Raises InputImageError for a missing or undecodable file, or one without such frames."""
    if stride < 1 or start < 0 or (max_frames is not None and max_frames < 0):
        raise ValueError(f"need start >= 0, stride >= 1, max_frames >= 0 (got {start}, {stride}, {max_frames})")
    av = _av()
    p, container, stream = _open(path)
    stream.thread_type = "AUTO"
    fps = _fps(stream)
    t0 = None
    n = i = 0
    try:
        if max_frames == 0:
            return
        try:
            for frame in container.decode(stream):
                if i >= start and (i - start) % stride == 0:
                    if frame.pts is not None and frame.time_base is not None:
                        t = float(frame.pts * frame.time_base)
                        t0 = t if t0 is None else t0
                        t -= t0
                    else:
                        t = i / fps if fps else 0.0
                    yield VideoFrame(np.ascontiguousarray(frame.to_ndarray(format="rgb24")), i, t)
                    n += 1
                    if max_frames is not None and n >= max_frames:
                        break
                elif t0 is None and frame.pts is not None and frame.time_base is not None:
                    t0 = float(frame.pts * frame.time_base)
                i += 1
        except av.error.FFmpegError as e:
            if n == 0:
                raise InputImageError(f"{p}: cannot decode ({e})") from None
            log.warning("%s: decoding stopped after frame %d: %s", p, i, e)
        if n == 0:
            raise InputImageError(f"{p}: no decodable frames" + (f" from frame {start}" if start else ""))
    finally:
        container.close()


def read_frames(path, start: int = 0, max_frames: int | None = None, stride: int = 1) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames `start, start+stride, ...` (at most `max_frames`); the pixels
    of `iter_frames`, which also gives each frame's number and timestamp."""
    for f in iter_frames(path, start, max_frames, stride):
        yield f.pixels


class VideoWriter:
    """An MP4 written frame by frame, H.264 (yuv420p) by default, renamed into place on `close()`
    (a failed or abandoned write leaves nothing at `path`).

    fps: frame rate; crf: x264's constant rate factor (lower: larger and sharper); frames whose
    size is odd are padded by one pixel (yuv420p needs even sizes). Use as a context manager.
    """

    def __init__(self, path, fps: float, crf: int = 23, codec: str = "libx264"):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.crf, self.codec = crf, codec
        self.frames = 0
        self._av = _av()
        self._atomic = atomic_path(self.path, suffix=".mp4")
        self._tmp = self._atomic.__enter__()
        self._container = self._av.open(str(self._tmp), mode="w")
        self._stream = None
        self._size = None

    def _start(self, h: int, w: int) -> None:
        rate = Fraction(self.fps).limit_denominator(1001)
        try:
            s = self._container.add_stream(self.codec, rate=rate)
        except (ValueError, self._av.error.FFmpegError):  # an FFmpeg build without libx264
            log.warning("%s: no %s encoder in this PyAV build; writing MPEG-4 Part 2", self.path, self.codec)
            s = self._container.add_stream("mpeg4", rate=rate)
        s.width, s.height = w + w % 2, h + h % 2
        s.pix_fmt = "yuv420p"
        if s.codec_context.name == "libx264":
            s.options = {"crf": str(self.crf), "preset": "veryfast"}
        self._stream, self._size = s, (h, w)

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (every frame the size of the first)."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"VideoWriter.write needs (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if self._stream is None:
            self._start(*rgb.shape[:2])
        if rgb.shape[:2] != self._size:
            raise ValueError(f"{self.path}: frame {self.frames} is {rgb.shape[:2]}, the video {self._size}")
        h, w = self._size
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = Fraction(1) / self._stream.codec_context.framerate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Flush, close and move the file into place; returns its path."""
        if self._container is None:
            return self.path
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
            self._container = None
        except BaseException as e:
            self.abort(e)
            raise
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self, exc: BaseException | None = None) -> None:
        """Give up: close and delete the temporary file; nothing is left at `path`."""
        if self._container is not None:
            try:
                self._container.close()
            except (OSError, ValueError, self._av.error.FFmpegError) as e:  # the temp file goes anyway
                log.debug("%s: closing an abandoned video: %s", self.path, e)
            self._container = None
        err = exc or RuntimeError("aborted")
        with contextlib.suppress(type(err)):  # atomic_path re-raises what it is given, after deleting
            self._atomic.__exit__(type(err), err, None)

    def __enter__(self) -> VideoWriter:  # noqa: PYI034
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)


__all__ = ["VideoFrame", "VideoInfo", "VideoWriter", "frame_name", "iter_frames", "probe", "read_frames"]
