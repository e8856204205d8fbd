"""What a batch worker does with one input: read, detect, reconstruct, write, and describe it as
table rows, or as one failure with a named reason. Never raises for a bad input."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FaceReconError, InputImageError, NoFaceError
from ..io.image import MAX_PIXELS, load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchConfig:
    """What every worker builds and does (picklable: it travels to worker processes and Ray actors).

    output: the output folder (faces under output/faces). outputs: `Reconstruction.save` formats
    (empty: tables only). method, model, detector, device, method_options: as `FaceReconstructor`.
    photometric: the fit's photometric stages (False: landmark-only fit). max_faces: per image,
    largest first. max_pixels: refuse files declaring more (decompression bombs). max_side: larger
    photos are downscaled to it (the tables give file pixels and the scale). plugins: modules every
    worker imports before building its reconstructor (e.g. one that registers a method).
    detector may also be a picklable detector object.
    """

    output: str
    outputs: tuple[str, ...] = ("json",)
    method: str = "fit"
    model: str = "ict"
    detector: str = "auto"
    device: str = "cpu"
    photometric: bool = True
    max_faces: int = 1
    max_pixels: int | None = MAX_PIXELS
    max_side: int | None = 4096
    method_options: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_reconstructor(cfg: BatchConfig):
    """The worker's FaceReconstructor (models loaded once per worker)."""
    import importlib

    from ..api import FaceReconstructor

    for name in cfg.plugins:
        importlib.import_module(name)
    return FaceReconstructor(cfg.model, detector=cfg.detector, method=cfg.method, device=cfg.device,
                             **cfg.method_options)


def _one_line(text: str, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def failure(source: str, reason: str, message: str, t_total: float = 0.0) -> dict:
    return {"source": source, "reason": reason, "message": _one_line(message), "t_total": float(t_total),
            "worker": worker_name()}


def _to_file_px(xy: np.ndarray, scale: float) -> np.ndarray:
    """Points in decoded pixels -> the file's pixels (centres at integers)."""
    return xy if scale == 1.0 else (np.asarray(xy, np.float64) + 0.5) / scale - 0.5


def _frames(path: str) -> int:
    try:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - the image was read already; this is only a note
        return 1


def process_item(rec, cfg: BatchConfig, source: str, stem: str) -> tuple[list[dict], dict | None]:
    """Reconstruct one input with `rec`: (face rows, None) or ([], failure row)."""
    t0 = time.perf_counter()
    try:
        img = load_image(source, max_pixels=cfg.max_pixels, max_side=cfg.max_side)
        t_load = time.perf_counter() - t0
        recs = rec.reconstruct(img, max_faces=cfg.max_faces, photometric=cfg.photometric)
        t_rec = time.perf_counter() - t0 - t_load
        rows = []
        s = img.scale
        w, h = round(img.width / s), round(img.height / s)
        frames = _frames(source) if Path(source).suffix.lower() in (".gif", ".tif", ".tiff", ".webp", ".png") else 1
        for k, r in enumerate(recs):
            t = time.perf_counter()
            fstem = stem if k == 0 else f"{stem}_face{k}"
            paths = r.save(Path(cfg.output) / "faces", cfg.outputs, stem=fstem) if cfg.outputs else []
            t_save = time.perf_counter() - t
            box = np.asarray(r.face.box, np.float64)[:4].reshape(2, 2)
            coeff = r.coeff
            times = {k2: float(v) for k2, v in r.times.items()}
            rows.append({
                "source": source, "face": k, "stem": fstem, "status": "ok", "method": r.method,
                "model": r.model_name, "width": w, "height": h, "scale": s, "frames": frames,
                "box": _to_file_px(box, s).reshape(-1).astype(np.float32),
                "score": float(getattr(r.face, "score", np.nan)),
                "yaw": r.pose_deg["yaw"], "pitch": r.pose_deg["pitch"], "roll": r.pose_deg["roll"],
                "translation_mm": np.asarray(r.translation_mm, np.float32).reshape(-1),
                "params": None if coeff is None else coeff.reshape(-1),
                "landmarks": _to_file_px(r.lm68, s).reshape(-1).astype(np.float32),
                "t_load": t_load, "t_detect": times.get("detect", float("nan")), "t_reconstruct": t_rec,
                "t_save": t_save, "t_total": 0.0, "times": json.dumps(times),
                "outputs": [str(p.relative_to(cfg.output)) if p.is_relative_to(cfg.output) else str(p)
                            for p in paths],
                "worker": worker_name(), "node": socket.gethostname(),
            })
        total = time.perf_counter() - t0
        for row in rows:
            row["t_total"], row["finished"] = total, time.time()
        return rows, None
    except InputImageError as e:
        return [], failure(source, e.reason, str(e), time.perf_counter() - t0)
    except NoFaceError as e:
        return [], failure(source, "no_face", str(e), time.perf_counter() - t0)
    except FaceReconError as e:
        return [], failure(source, "error", f"{source}: {e}", time.perf_counter() - t0)
    except Exception as e:  # a bad input must not stop the batch (its traceback goes to debug)
        log.debug("%s failed", source, exc_info=True)
        return [], failure(source, "error", f"{source}: {type(e).__name__}: {e}", time.perf_counter() - t0)


__all__ = ["BatchConfig", "build_reconstructor", "failure", "process_item", "worker_name"]
