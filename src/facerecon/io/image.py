"""Image loading: every input becomes an (H, W, 3) uint8 RGB array with EXIF orientation applied."""

from __future__ import annotations

import io as _io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from ..errors import InputImageError


@dataclass(frozen=True)
class Image:
    """A decoded input image.

    pixels: (H, W, 3) uint8 RGB, EXIF orientation applied, row 0 at the top.
    name:   where it came from (file path or a caller-given label), used in messages and outputs.
    """

    pixels: np.ndarray
    name: str = "<array>"

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


def load_image(source, name: str | None = None) -> Image:
    """Load a path, bytes, PIL image or array as an `Image`.

    Arrays: (H, W) grey or (H, W, 3|4) uint8 RGB(A), or float in [0, 1].
    Raises InputImageError naming the file when it is missing, unreadable or not an image.
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
        fh = _io.BytesIO(source)
    else:
        path = Path(os.fspath(source))
        label = name or str(path)
        if not path.exists():
            raise InputImageError(f"{label}: no such file")
        if path.is_dir():
            raise InputImageError(f"{label}: is a directory, not an image")
        fh = path
    try:
        with PILImage.open(fh) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            pixels = _to_rgb8(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputImageError(f"{label}: not a readable image ({e})") from None
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        raise InputImageError(f"{label}: image is too small ({pixels.shape[1]}x{pixels.shape[0]})")
    return Image(np.ascontiguousarray(pixels), label)
