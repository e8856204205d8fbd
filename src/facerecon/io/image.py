"""Image loading: every input becomes an (H, W, 3) uint8 RGB array with EXIF orientation applied."""

from __future__ import annotations

import io as _io
import logging
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from ..errors import InputImageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Image:
    """A decoded input image.

    pixels: (H, W, 3) uint8 RGB, EXIF orientation applied, row 0 at the top.
    name:   where it came from (file path or a caller-given label), used in messages and outputs.
    scale:  pixels per pixel of the file (1.0, or < 1 when `load_image(max_side=...)` downscaled it);
            a point x here is (x + 0.5) / scale - 0.5 in the file (pixel centres at integers).
    """

    pixels: np.ndarray
    name: str = "<array>"
    scale: float = 1.0

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _to_rgb8(img: PILImage.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if a.max(initial=0) > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        hi = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white: transparent pixels must not become black "faces".
        rgba = img.convert("RGBA")
        bg = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(PILImage.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


# Refused before decoding: a file whose header declares more pixels than this (a decompression bomb:
# a few kB of PNG can declare 30000x30000 = 900 MP, 2.7 GB of RGB). 100 MP is above any camera photo
# a face reconstruction needs and keeps one decode under ~300 MB.
MAX_PIXELS = 100_000_000
# The first bytes of video containers, to name a video in an image folder as such.
_VIDEO_MAGIC = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (8, b"AVI "), (0, b"\x00\x00\x01\xba"), (0, b"FLV"))
VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"})

# reason -> what it means, the names `InputImageError.reason` takes for files.
REASONS = {
    "missing": "no such file",
    "broken_symlink": "a symbolic link whose target does not exist",
    "not_a_file": "a directory or other non-file",
    "permission": "the file cannot be read (permissions)",
    "empty": "the file has no bytes",
    "video": "a video file, not an image",
    "not_an_image": "the bytes are not a known image format",
    "too_large": "the header declares more pixels than the limit (decompression-bomb guard)",
    "truncated": "the image data ends early or is corrupt",
    "too_small": "fewer than 2 pixels in a dimension",
}


def _sniff_video(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head[o:o + len(m)] == m for o, m in _VIDEO_MAGIC)


def _check_file(path: Path, label: str) -> None:
    """Name what is wrong with a path before Pillow sees it."""
    if not path.exists():
        if path.is_symlink():
            raise InputImageError(f"{label}: broken symbolic link (target {os.readlink(path)} does not exist)",
                                  "broken_symlink")
        raise InputImageError(f"{label}: no such file", "missing")
    if path.is_dir():
        raise InputImageError(f"{label}: is a directory, not an image", "not_a_file")
    if not path.is_file():
        raise InputImageError(f"{label}: not a regular file", "not_a_file")
    if not os.access(path, os.R_OK):
        raise InputImageError(f"{label}: permission denied", "permission")
    if path.stat().st_size == 0:
        raise InputImageError(f"{label}: empty file (0 bytes)", "empty")
    if path.suffix.lower() in VIDEO_EXTS or _sniff_video(path):
        raise InputImageError(f"{label}: a video, not an image (use `facerecon reconstruct --video`)", "video")


def load_image(source, name: str | None = None, max_pixels: int | None = MAX_PIXELS,
               max_side: int | None = None) -> Image:
    """Load a path, bytes, PIL image or array as an `Image`.

    Arrays: (H, W) grey or (H, W, 3|4) uint8 RGB(A), or float in [0, 1].
    Files and bytes: the header's size is checked against `max_pixels` (None: no limit) BEFORE the
    pixels are decoded; animated GIFs and multi-page TIFFs give their first frame. max_side: a photo
    whose longer side exceeds it is downscaled while decoding (JPEG draft mode) and resized to it;
    `Image.scale` says by how much.
    Raises InputImageError naming the file and, in `reason`, what is wrong (`REASONS`).
    """
    if isinstance(source, Image):
        return source
    if isinstance(source, np.ndarray):
        a = source
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
            raise InputImageError(f"{name or '<array>'}: expected (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating):
                a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
            elif a.dtype == np.uint16:
                a = (a.astype(np.uint32) * 255 // 65535).astype(np.uint8)
            else:
                raise InputImageError(f"{name or '<array>'}: unsupported dtype {a.dtype}")
        return Image(np.ascontiguousarray(a[..., :3]), name or "<array>")
    if isinstance(source, PILImage.Image):
        return Image(_to_rgb8(ImageOps.exif_transpose(source)), name or "<PIL image>")
    if isinstance(source, (bytes, bytearray)):
        label = name or "<bytes>"
        if not source:
            raise InputImageError(f"{label}: empty (0 bytes)", "empty")
        fh = _io.BytesIO(source)
    else:
        path = Path(os.fspath(source))
        label = name or str(path)
        _check_file(path, label)
        fh = path
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's bomb warning (its error above 2x its limit stays).
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(fh) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise InputImageError(f"{label}: declares {w}x{h} = {w * h / 1e6:.0f} MP, above the "
                                          f"{max_pixels / 1e6:.0f} MP limit (not decoded)", "too_large")
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    log.info("%s: %d frames (animated or multi-page): using the first", label, frames)
                    img.seek(0)
                # EXIF orientations 5-8 turn the picture by 90 degrees: the file's w and h swap.
                ow, oh = (h, w) if img.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w, h)
                if max_side is not None and max(w, h) > max_side:
                    img.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
                img.load()
                img = ImageOps.exif_transpose(img)
                if max_side is not None and max(img.size) > max_side:
                    img.thumbnail((max_side, max_side), PILImage.LANCZOS)
                pixels = _to_rgb8(img)
    except PILImage.DecompressionBombError as e:  # Pillow's own guard fires in open(), before ours
        n = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(n.group(1)) / 1e6:.0f} MP" if n else "too many pixels"
        limit = f"{max_pixels / 1e6:.0f} MP" if max_pixels else "Pillow's"
        raise InputImageError(f"{label}: declares {size}, above the {limit} limit (not decoded)",
                              "too_large") from None
    except UnidentifiedImageError:
        raise InputImageError(f"{label}: not a readable image (unknown format)", "not_an_image") from None
    except PermissionError:
        raise InputImageError(f"{label}: permission denied", "permission") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
            MemoryError, ZeroDivisionError) as e:
        # Pillow's plugins raise all of these for truncated or corrupt data.
        raise InputImageError(f"{label}: not a readable image, truncated or corrupt ({type(e).__name__}: {e})",
                              "truncated") from None
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        raise InputImageError(f"{label}: image is too small ({pixels.shape[1]}x{pixels.shape[0]})", "too_small")
    scale = 1.0
    if pixels.shape[1] != ow:
        scale = pixels.shape[1] / ow
        log.info("%s: %dx%d downscaled to %dx%d (max side %d)", label, ow, oh, pixels.shape[1], pixels.shape[0],
                 max_side)
    return Image(np.ascontiguousarray(pixels), label, scale=scale)

