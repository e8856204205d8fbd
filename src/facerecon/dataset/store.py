"""The engine's on-disk format: one compressed .npz per sample (+ its crop as JPEG), a JSONL manifest.

    OUT/images/<photo>_v<k>.jpg    (S, S, 3) RGB crop of view k (k = 0: the source photo's aligned crop)
    OUT/samples/<photo>_v<k>.npz   the sample's labels (`SAMPLE_KEYS`)
    OUT/manifest.jsonl             one line per sample ("status": "ok") and one per photo that yields
                                   none ("failed": unreadable / no face / fit error; "dropped": poor fit)
    OUT/build.json                 the build's settings (seed, views, thresholds, model)

The .npz is written by `write_npz` with fixed zip timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path, read_jsonl

MANIFEST = "manifest.jsonl"

#: name -> what it holds (shapes; units). V = model vertices, S = crop size.
SAMPLE_KEYS = {
    "image_file": "str, the crop's path relative to the dataset folder",
    "source": "str, the source photo's path as given", "photo_id": "str", "view": "int, 0 = the source photo",
    "split": "str, 'train' | 'val'",
    "model": "str, morphable model name (topology: its triangles; load_model(model))",
    "layout": "(3,) int64 n_identity, n_expression, n_albedo of the flat parameter vector",
    "params": "(D,) float32 flat FaceParams in `layout` order (ParamLayout.join); rotation and translation are this view's",
    "rotation": "(3,) float64 [pitch, yaw, roll] radians, R = Rz(roll) Ry(yaw) Rx(pitch)",
    "translation": "(3,) float64 mm, v_world = R v + t",
    "camera": "(7,) float64 focal px, cx, cy, width, height, distance mm, near mm (PerspectiveCamera)",
    "vertices_px": "(V, 3) float32 x px, y px (crop, centres at integers), depth mm",
    "vertices_world": "(V, 3) float32 mm, camera frame (x right, y up, camera at +z distance)",
    "lm68": "(68, 2) float32 crop px, the model's 68 landmarks (3-D convention: fixed vertices)",
    "lm68_3d": "(68, 3) float32 mm, camera frame", "vis68": "(68,) int8 1 visible, -1 self-occluded, 0 outside the crop",
    "mask": "(S, S) bool, pixels of the face mesh",
    "quality": "float64, the photo's fit quality: landmark residual, % of face size (lower is better)",
    "photo_error": "float64, mean |render - photo| over the face mask of the source fit (0..1 units)",
    "texture_from_photo": "float64, fraction of face pixels textured from the photo (else mirror/albedo)",
    "mirror_fraction": "float64, fraction of face pixels textured from the mirrored side",
}


def write_npz(path, arrays: dict) -> None:
    """Atomic, deterministic compressed .npz (fixed member timestamps and order)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def write_jpeg(path, image: np.ndarray, quality: int = 95) -> None:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality, subsampling=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def read_manifest(out_dir) -> list[dict]:
    """Entries of OUT/manifest.jsonl; a truncated last line (a crash mid-write) is ignored."""
    return read_jsonl(Path(out_dir) / MANIFEST)


def append_manifest(out_dir, rows: list[dict]) -> None:
    """All lines of one photo in one write + fsync, after its files exist."""
    if not rows:
        return
    path = Path(out_dir) / MANIFEST
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        # A line torn by a crash is closed first, so it stays one unreadable line, not two.
        f.write(("\n" if torn else "") + "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def load_sample(path) -> dict:
    """A sample's arrays as a dict (str fields as Python str, scalars as Python numbers)."""
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for k in z.files:
            a = z[k]
            out[k] = a.item() if a.ndim == 0 else a
    return out


def load_photo_sample(folder, row: dict) -> tuple[dict, np.ndarray] | None:
    """A manifest row's sample and its image ((H, W, 3) uint8 RGB), or None (logged as skipped) when
    either is missing or unreadable: one bad sample never stops a pass over a build."""
    import logging

    from PIL import Image

    folder = Path(folder)
    try:
        return load_sample(folder / row["sample"]), np.array(Image.open(folder / row["image"]).convert("RGB"))
    except (OSError, ValueError, KeyError) as e:
        logging.getLogger(__name__).warning("%s: skipped (%s)", folder / row.get("sample", "?"), e)
        return None


__all__ = ["MANIFEST", "SAMPLE_KEYS", "append_manifest", "load_photo_sample", "load_sample", "read_manifest",
           "write_jpeg", "write_npz"]
