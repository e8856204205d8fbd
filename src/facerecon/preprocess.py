"""Build a training dataset from photos (Deep3D's ``preprocess_img.py``): detect → align → mask.

For each input image: the default detection pipeline (largest face), the aligned 224² crop that
`FaceReconstructor` uses (5 points of the model's mean face, `PerspectiveCamera.deep3d()`), the 68
and 5 landmarks in crop pixels and the landmark/skin face mask. Output folder layout:

    OUT/crops/NAME.png       (224, 224, 3) uint8 RGB aligned crop
    OUT/masks/NAME.png       (224, 224) uint8 face/skin mask, 255 = use the pixel
    OUT/items/NAME.npz       lm68 (68, 2) float32 crop px; lm5 (5, 2); lm68_conf (68,) or absent;
                             M (2, 3) original -> crop; yaw/pitch/roll (3DDFA, degrees);
                             optional lm68_gt (68, 2) crop px (NaN where unknown) + vis68_gt (68,) int8
    OUT/manifest.jsonl       one JSON object per processed input (see `ManifestEntry`)

Resumable: inputs whose source path is already in the manifest are skipped (``retry_failed``
re-runs the failed ones). Every file is written atomically and the manifest line is appended only
after the item's files exist, so an interrupted run never leaves a listed-but-missing item.
A bad input (unreadable file, no face) becomes a ``failed`` line with the error; never fatal.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .align import align_face, face_mask
from .errors import FaceReconError
from .geometry.camera import PerspectiveCamera
from .io.atomic import atomic_path, read_jsonl, write_bytes
from .io.image import load_image
from .io.paths import expand_inputs

MANIFEST = "manifest.jsonl"


@dataclass
class ManifestEntry:
    """One line of manifest.jsonl.

    name: item name (file stem, made unique); source: input path; status: 'ok' | 'failed';
    error: message when failed; lm_source: landmark backend(s), e.g. 'retinaface+3ddfa+mediapipe';
    box: 'detect' or 'full' (whole image used as the face box after detection failed);
    yaw: 3DDFA yaw in degrees (None when failed); n_faces: faces detected; gt: GT landmarks stored.
    """

    name: str
    source: str
    status: str
    error: str | None = None
    lm_source: str | None = None
    box: str | None = None
    yaw: float | None = None
    n_faces: int = 0
    gt: bool = False


@dataclass
class PreprocessSummary:
    """Counts of one run: processed now (ok / failed), skipped (already in the manifest)."""

    out_dir: Path
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    errors: list = field(default_factory=list)  # (source, message), this run only


def _item_name(path: Path, used: set) -> str:
    """File name without its last extension, made filesystem-safe and unique (path hash suffix)."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "item"
    name = base
    if name in used:
        name = f"{base}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}"
    used.add(name)
    return name


def read_manifest(out_dir) -> list[dict]:
    """Entries of OUT/manifest.jsonl (a truncated last line from a crash is ignored)."""
    return read_jsonl(Path(out_dir) / MANIFEST)


def _append_manifest(out_dir: Path, entry: ManifestEntry) -> None:
    # One short write per line + fsync: appends of a few hundred bytes land whole.
    with open(out_dir / MANIFEST, "a") as f:
        f.write(json.dumps(asdict(entry)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = _io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _load_gt(path) -> dict:
    """GT landmark file (aflw-lm68 `labels.npz` layout: names, lm68 (N,68,2), vis68 (N,68)) ->
    {name: (lm68, vis68)} in the pixels of the image files it names."""
    with np.load(path) as z:
        names = [str(n) for n in z["names"]]
        lm = z["lm68"].astype(np.float32)
        vis = z["vis68"].astype(np.int8) if "vis68" in z.files else np.ones(lm.shape[:2], np.int8)
    return {n: (lm[i], vis[i]) for i, n in enumerate(names)}


class Preprocessor:
    """Detect, align and mask one image at a time (the model and detector are loaded once).

    detector: a name for `facerecon.detect.registry.get_detector` or an object with
        `detect(pixels) -> [Face]` (and `landmarks(pixels, box) -> Face` for the full-box fallback).
    model: 'ict' | 'bfm' | MorphableModel: its mean face's 5 points are the alignment reference.
    full_box_fallback: when detection finds nothing, landmark the whole image as the face box
        (right for tight face crops such as UTKFace or 3DDFA's 120² crops).
    """

    def __init__(self, detector="default", model="ict", size: int = 224, full_box_fallback: bool = True,
                 mask_skin: bool = True):
        from .detect.registry import resolve_detector

        self.detector = resolve_detector(detector)
        if isinstance(model, str):
            from .models import load_model

            model = load_model(model)
        self.lm5_ref = model.mean_lm5().detach().cpu().double().numpy()
        self.camera = PerspectiveCamera.deep3d(size)
        self.full_box_fallback = full_box_fallback
        self.mask_skin = mask_skin

    def process(self, source) -> tuple[dict, ManifestEntry]:
        """Returns (arrays, partial entry): arrays has crop (224,224,3) uint8, mask (224,224) uint8,
        lm68, lm5 (crop px), M and pose; raises FaceReconError (or ValueError) on failure."""
        img = load_image(source)
        faces = self.detector.detect(img.pixels)
        box_kind = "detect"
        if not faces and self.full_box_fallback and hasattr(self.detector, "landmarks"):
            h, w = img.pixels.shape[:2]
            faces = [self.detector.landmarks(img.pixels, np.array([0, 0, w - 1, h - 1], np.float32))]
            box_kind = "full"
        if not faces:
            raise FaceReconError("no face found")
        face = faces[0]  # largest first
        if face.lm68 is None:
            raise FaceReconError(f"detector '{face.source}' gave no 68 landmarks")
        crop = align_face(img.pixels, face.lm5, self.lm5_ref, camera=self.camera, lm68=face.lm68,
                          source=img.name)
        mask = face_mask(crop.image, crop.lm68, skin=self.mask_skin)
        pose = face.pose
        arrays = {
            "crop": crop.image, "mask": np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8),
            "lm68": crop.lm68.astype(np.float32), "lm5": crop.lm5.astype(np.float32),
            "M": crop.M.astype(np.float64),
            "pose": np.array([np.nan] * 3 if pose is None else [pose.yaw, pose.pitch, pose.roll], np.float32),
        }
        if face.lm68_conf is not None:
            arrays["lm68_conf"] = np.asarray(face.lm68_conf, np.float32)
        entry = ManifestEntry(name="", source="", status="ok", lm_source=face.source, box=box_kind,
                              yaw=None if pose is None else float(pose.yaw), n_faces=len(faces))
        return arrays, entry


def preprocess(inputs, out_dir, detector="default", model="ict", retry_failed: bool = False,
               gt_landmarks=None, limit: int | None = None, progress: bool = True,
               preprocessor: Preprocessor | None = None) -> PreprocessSummary:
    """Turn images into a training dataset folder (layout in the module docstring).

    inputs: paths, folders or glob patterns. out_dir: dataset folder (created).
    gt_landmarks: optional npz (names, lm68, vis68 in the image files' pixels, e.g. aflw-lm68's
        `labels.npz`): matched by file stem, mapped into crop pixels and stored as lm68_gt/vis68_gt.
    limit: process at most this many new items. Returns a `PreprocessSummary`.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    for sub in ("crops", "masks", "items"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    done = {}
    for e in read_manifest(out):
        done[os.path.abspath(e["source"])] = e
    used = {e["name"] for e in done.values()}
    paths, _ = expand_inputs(inputs, recursive=True, keep_missing=True)  # a missing file: a failed item
    gt = _load_gt(gt_landmarks) if gt_landmarks else {}
    summary = PreprocessSummary(out)
    todo = []
    for p in paths:
        prev = done.get(os.path.abspath(p))
        if prev is not None and (prev["status"] == "ok" or not retry_failed):
            summary.skipped += 1
            continue
        todo.append((p, prev["name"] if prev else None))
    if limit is not None:
        todo = todo[:limit]
    # Built before the loop so a missing asset fails the run once, not every item.
    pre = preprocessor if preprocessor is not None or not todo else Preprocessor(detector, model)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="img", desc="preprocess")
        except ImportError:
            bar = None
    for p, name in todo:
        name = name or _item_name(p, used)
        entry = ManifestEntry(name=name, source=os.fspath(p), status="failed")
        try:
            arrays, e = pre.process(p)
            e.name, e.source = name, os.fspath(p)
            item = {k: v for k, v in arrays.items() if k not in ("crop", "mask")}
            if p.stem in gt:
                lm, vis = gt[p.stem]
                M = arrays["M"]
                lm_c = (lm.astype(np.float64) @ M[:, :2].T + M[:, 2]).astype(np.float32)
                item["lm68_gt"], item["vis68_gt"] = lm_c, vis
                e.gt = True
            write_bytes(out / "crops" / f"{name}.png", _png_bytes(arrays["crop"]))
            write_bytes(out / "masks" / f"{name}.png", _png_bytes(arrays["mask"]))
            with atomic_path(out / "items" / f"{name}.npz") as tmp, open(tmp, "wb") as f:
                np.savez(f, **item)
            entry = e
            summary.ok += 1
        except (FaceReconError, ValueError, OSError, RuntimeError) as ex:
            entry.error = f"{type(ex).__name__}: {ex}"
            summary.failed += 1
            summary.errors.append((os.fspath(p), entry.error))
        _append_manifest(out, entry)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ok=summary.ok, failed=summary.failed)
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = ["ManifestEntry", "PreprocessSummary", "Preprocessor", "preprocess", "read_manifest"]
