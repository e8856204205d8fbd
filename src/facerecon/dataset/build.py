"""`build_dataset`: photos -> fitted, quality-filtered, face-profiled training samples (300W-LP style).

Per source photo (one process per worker, one torch thread each):
  1. load, detect, align and fit with `api.FaceReconstructor(method="fit")` (3DDFA_V2 landmarks with
     TTA, FaceMesh dense points, and the photometric stages unless `photometric` is off);
  2. score the fit: `quality` = mean distance between the fitted model's 68 landmarks and the
     detector's, in % of the detected face size (sqrt(w·h) of its 68-point box); photos above
     `max_quality` are dropped (docs/dataset.md says how the threshold was chosen);
  3. view 0 = the aligned crop itself with the fit's labels; views 1..K = the head rotated to
     seeded yaws (stratified over |yaw| ≤ `max_yaw_deg`) with pitch/roll jitter, re-rendered from the
     photo's own texture by `dataset.profile`;
  4. write each sample (`dataset.store`) atomically, then the photo's manifest lines.
Resumable (photos in the manifest are skipped), parallel over processes, deterministic per seed: a
photo's views depend only on (seed, its key), never on the order or the worker that ran it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FaceReconError
from ..io.atomic import write_text
from ..io.paths import IMAGE_EXTS
from . import store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a build (all stored in OUT/build.json).

    views: K synthesized views per photo (plus view 0, the photo itself).
    max_yaw_deg: target |yaw| range [0, max]; the K views take one |yaw| each from K equal bins.
    toward_source: probability that a view turns further the way the source already faces (its
        texture is seen there); otherwise the other way (mirror texture).
    pitch_jitter_deg / roll_jitter_deg: std of the Gaussian added to the source's pitch / roll
        (clipped at 2 std).
    photometric: run the fitter's photometric + albedo stages (they pay: on synthetic faces with
        known truth the profiled views' landmarks are ~40 % closer at 75-90° of yaw; docs/dataset.md).
    max_quality: drop photos whose landmark residual (% of face size) exceeds this; None: the
        calibrated default (`quality_limit`: 1.6 with the photometric stages, 1.3 without).
    val_fraction: share of identities in the 'val' split (by a hash of the identity, not the seed).
    split_by: 'photo' (every photo its own identity) or 'folder' (the photo's parent folder, e.g.
        LFW's person folders), so views of one photo / person never straddle train and val.
    size: crop size (the pipeline's 224² aligned crop); jpeg_quality: of the stored crops.
    model: morphable model name; seed: the build's seed.
    """

    views: int = 4
    max_yaw_deg: float = 90.0
    toward_source: float = 0.7
    pitch_jitter_deg: float = 8.0
    roll_jitter_deg: float = 6.0
    photometric: bool = True
    max_quality: float | None = None
    val_fraction: float = 0.05
    split_by: str = "photo"
    size: int = 224
    jpeg_quality: int = 95
    model: str = "ict"
    seed: int = 0


    @property
    def quality_limit(self) -> float:
        """Tukey's far-out fence of an unlabelled calibration sample (docs/dataset.md), per fit kind."""
        if self.max_quality is not None:
            return float(self.max_quality)
        return 1.6 if self.photometric else 1.3


@dataclass
class BuildSummary:
    """Counts of one run: photos processed now (ok / dropped / failed), skipped (already in the
    manifest), samples written, seconds; errors: (source, message) of this run."""

    out_dir: Path
    ok: int = 0
    dropped: int = 0
    failed: int = 0
    skipped: int = 0
    samples: int = 0
    seconds: float = 0.0
    errors: list = field(default_factory=list)


@dataclass(frozen=True)
class Photo:
    """One source photo: path, key (stable name: source folder name + relative path), identity."""

    path: str
    key: str
    identity: str

    @property
    def photo_id(self) -> str:
        stem = self.key.rsplit(".", 1)[0] if "." in Path(self.key).name else self.key
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stem.replace("/", "__"))


def list_photos(sources, split_by: str = "photo") -> list[Photo]:
    """SOURCES (files or folders, folders searched recursively) -> photos in a stable order.

    The key of a photo in folder D is `D.name/relative/path`, of a file given directly its name;
    a missing file is kept (and reported as failed when processed)."""
    if split_by not in ("photo", "folder"):
        raise FaceReconError(f"split_by must be 'photo' or 'folder', got {split_by!r}")
    out, seen = [], set()
    for s in sources:
        p = Path(s)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not files:
                raise FaceReconError(f"{s}: folder holds no images")
            items = [(q, f"{p.resolve().name}/{q.relative_to(p).as_posix()}") for q in files]
        else:
            items = [(p, p.name)]
        for q, key in items:
            if key in seen:
                continue
            seen.add(key)
            ident = key if split_by == "photo" else (Path(key).parent.name or key)
            out.append(Photo(os.fspath(q), key, ident))
    return out


def split_of(identity: str, val_fraction: float) -> str:
    """'val' for a fixed, seed-independent `val_fraction` of identities (sha256 of the identity)."""
    h = int.from_bytes(hashlib.sha256(f"facerecon-dataset-split|{identity}".encode()).digest()[:8], "little")
    return "val" if h / 2.0**64 < val_fraction else "train"


def photo_rng(seed: int, key: str) -> np.random.Generator:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:8], "little")
    return np.random.default_rng(h)


def sample_rotations(source_rotation: np.ndarray, cfg: BuildConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """K target rotations [pitch, yaw, roll] radians: |yaw| stratified over K bins of [0, max_yaw],
    turned the source's way with probability `toward_source`; pitch/roll = source + clipped jitter."""
    pitch0, yaw0, roll0 = (float(a) for a in source_rotation)
    out = []
    edges = np.linspace(0.0, cfg.max_yaw_deg, cfg.views + 1)
    for k in range(cfg.views):
        mag = rng.uniform(edges[k], edges[k + 1])
        side = np.sign(yaw0) if abs(np.degrees(yaw0)) > 5 else (1.0 if rng.random() < 0.5 else -1.0)
        if rng.random() >= cfg.toward_source:
            side = -side
        jp = np.clip(rng.normal(0, cfg.pitch_jitter_deg), -2 * cfg.pitch_jitter_deg, 2 * cfg.pitch_jitter_deg)
        jr = np.clip(rng.normal(0, cfg.roll_jitter_deg), -2 * cfg.roll_jitter_deg, 2 * cfg.roll_jitter_deg)
        out.append(np.array([pitch0 + np.radians(jp), np.radians(side * mag), roll0 + np.radians(jr)]))
    return out


# ---------------------------------------------------------------------------------------- worker
class Engine:
    """What a worker holds: the reconstructor (fit method), the profiler and the config."""

    def __init__(self, cfg: BuildConfig, detector="auto"):
        from ..api import FaceReconstructor
        from .profile import Profiler

        self.cfg = cfg
        self.rec = FaceReconstructor(model=cfg.model, method="fit", detector=detector)
        if cfg.size != self.rec.camera.width:
            raise FaceReconError(f"crop size {cfg.size} is not the pipeline's {self.rec.camera.width}")
        self.model = self.rec.model
        self.profiler = Profiler.of_model(self.model, self.rec.camera)
        self._warmed = False

    def fit(self, path: str):
        """(Reconstruction, SourceView, seconds) of the photo's largest face."""
        from ..api import load_image
        from ..render.views import shaded_colors
        from .profile import SourceView

        if not self._warmed:
            # A process's first fit is the least reproducible: the first use of the native kernels
            # (numba's parallel runtime, MKL) shifted later detections and fits measurably (FaceMesh
            # points by ~0.01 px, a fit by up to 0.4 mm). So a worker's first photo is fitted twice
            # and the first result dropped. Fits still carry run-to-run floating-point noise
            # (typically < 1e-4 mm, now and then more; docs/dataset.md), everything after them is exact.
            self._warmed = True
            try:
                self.rec.reconstruct(load_image(path), photometric=self.cfg.photometric)
            except FaceReconError:
                pass
        t0 = time.perf_counter()
        img = load_image(path)
        rec = self.rec.reconstruct(img, photometric=self.cfg.photometric)[0]
        g = rec.geometry
        src = SourceView(photo=img.pixels, M=rec.crop.M, camera=rec.camera_crop,
                         vertices_model=rec.vertices_model.astype(np.float64),
                         rotation=rec.params.rotation[0].detach().double().numpy(),
                         translation=rec.params.translation[0].detach().double().numpy(),
                         fallback_rgb=np.asarray(shaded_colors(g.albedo, g.normals, rec.light), np.float64))
        return rec, src, time.perf_counter() - t0

    def quality(self, rec) -> tuple[float, float]:
        """(landmark residual % of the detected face size, mean |render - photo| on the face)."""
        import torch

        from ..render import MeshRenderer

        det = np.asarray(rec.crop.lm68, np.float64)
        fit = np.asarray(rec.lm68_crop, np.float64)
        wh = np.ptp(det, axis=0)
        size = float(np.sqrt(max(wh[0] * wh[1], 1e-9)))
        lm_res = float(np.linalg.norm(det - fit, axis=1).mean() / size * 100.0)
        g = rec.geometry
        with torch.no_grad():
            light = rec.light if rec.light is not None else torch.zeros(1, 27)
            out = MeshRenderer(rec.camera_crop, self.model.faces, outputs=("rgb", "mask"))(
                g.vertices_world, g.albedo, light.to(g.albedo))
        m = out.mask[0].numpy() > 0.5
        crop = rec.crop.image.astype(np.float64) / 255.0
        err = float(np.abs(out.rgb[0].numpy().clip(0, 1) - crop)[m].mean()) if m.any() else 1.0
        return lm_res, err

    def process(self, photo: Photo, out_dir: Path) -> dict:
        """Fit, score, profile and write one photo. Returns {'rows': manifest lines, 'error': str|None}."""
        from .profile import ProfiledView

        cfg = self.cfg
        base = {"source": photo.path, "key": photo.key, "photo_id": photo.photo_id,
                "split": split_of(photo.identity, cfg.val_fraction)}
        try:
            rec, src, t_fit = self.fit(photo.path)
        except FaceReconError as e:
            return {"rows": [{**base, "status": "failed", "view": -1, "error": str(e)}], "error": str(e)}
        except Exception as e:  # a fit that blows up on one photo must not stop the build
            log.debug("fit failed on %s", photo.path, exc_info=True)
            msg = f"{photo.path}: fit failed ({type(e).__name__}: {e})"
            return {"rows": [{**base, "status": "failed", "view": -1, "error": msg}], "error": msg}
        q, perr = self.quality(rec)
        src_deg = [float(np.degrees(a)) for a in src.rotation]
        if not np.isfinite(q) or q > cfg.quality_limit:
            return {"rows": [{**base, "status": "dropped", "view": -1, "quality": q, "photo_error": perr,
                              "source_pitch_yaw_roll_deg": src_deg, "fit_s": t_fit}], "error": None}
        t0 = time.perf_counter()
        scene = self.profiler.scene(src)
        t_scene = time.perf_counter() - t0
        views: list[tuple[ProfiledView, float]] = [(self.profiler.source_view(src, rec.crop.image), 0.0)]
        for rot in sample_rotations(src.rotation, cfg, photo_rng(cfg.seed, photo.key)):
            t0 = time.perf_counter()
            views.append((self.profiler.render(src, scene, rot), time.perf_counter() - t0))
        params = rec.params
        rows = []
        for k, (v, t_render) in enumerate(views):
            stem = f"{photo.photo_id}_v{k}"
            image_file = f"images/{stem}.jpg"
            store.write_jpeg(out_dir / image_file, v.image, cfg.jpeg_quality)
            import torch

            p = params.replace(rotation=torch.as_tensor(v.rotation, dtype=params.rotation.dtype)[None])
            cam = v.camera
            store.write_npz(out_dir / "samples" / f"{stem}.npz", {
                "image_file": np.str_(image_file), "source": np.str_(photo.path), "photo_id": np.str_(photo.photo_id),
                "view": np.int64(k), "split": np.str_(base["split"]), "model": np.str_(self.model.name),
                "layout": np.array([self.model.layout.n_identity, self.model.layout.n_expression,
                                    self.model.layout.n_albedo], np.int64),
                "params": self.model.layout.join(p)[0].detach().numpy().astype(np.float32),
                "rotation": v.rotation, "translation": v.translation,
                "camera": np.array([cam.focal, cam.cx, cam.cy, cam.width, cam.height, cam.distance, cam.near]),
                "vertices_px": v.vertices_px.astype(np.float32), "vertices_world": v.vertices_world.astype(np.float32),
                "lm68": v.lm68.astype(np.float32), "lm68_3d": v.lm68_3d.astype(np.float32), "vis68": v.vis68,
                "mask": v.mask, "quality": np.float64(q), "photo_error": np.float64(perr),
                "texture_from_photo": np.float64(v.texture_from_photo), "mirror_fraction": np.float64(v.mirror_fraction),
            })
            pitch, yaw, roll = (float(np.degrees(a)) for a in v.rotation)
            rows.append({**base, "status": "ok", "view": k, "sample": f"samples/{stem}.npz", "image": image_file,
                         "yaw": yaw, "pitch": pitch, "roll": roll, "quality": q, "photo_error": perr,
                         "visible68": int((v.vis68 == 1).sum()), "fit_s": t_fit if k == 0 else 0.0,
                         "render_s": t_render + (t_scene if k == 1 else 0.0)})
        return {"rows": rows, "error": None}


_ENGINE: Engine | None = None


def _init_worker(cfg_dict: dict, detector) -> None:
    import torch

    global _ENGINE
    torch.set_num_threads(1)
    _ENGINE = Engine(BuildConfig(**cfg_dict), detector)


def _work(photo: Photo, out_dir: str) -> dict:
    return _ENGINE.process(photo, Path(out_dir))


# ----------------------------------------------------------------------------------------- driver
def build_dataset(sources, out_dir, config: BuildConfig | None = None, *, limit: int | None = None,
                  workers: int = 1, resume: bool = False, progress: bool = True, detector="auto") -> BuildSummary:
    """Build (or, with `resume`, continue) a profiled dataset in `out_dir` from SOURCES.

    Raises FaceReconError when `out_dir` already holds a build and `resume` is off, or when a resumed
    build's settings differ from the stored ones (mixing seeds or thresholds would be silent)."""
    cfg = config or BuildConfig()
    out = Path(out_dir)
    t_start = time.perf_counter()
    settings = asdict(cfg)
    stored = out / "build.json"
    done = store.read_manifest(out)
    if done or stored.is_file():
        if not resume:
            raise FaceReconError(f"{out}: already holds a dataset build; pass --resume to continue it")
        if stored.is_file():
            import json

            old = json.loads(stored.read_text())
            diff = {k: (old.get(k), v) for k, v in settings.items() if k != "split_by" and old.get(k) != v}
            if diff:
                raise FaceReconError(f"{out}: built with other settings {diff} (stored, asked); use a new folder")
    out.mkdir(parents=True, exist_ok=True)
    if not stored.is_file():
        import json

        write_text(stored, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    photos = list_photos(sources, cfg.split_by)
    finished = {r.get("key") for r in done}
    todo = [p for p in photos if p.key not in finished]
    summary = BuildSummary(out, skipped=len(photos) - len(todo))
    if limit is not None:
        todo = todo[: max(int(limit), 0)]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="photo", desc="dataset")

    def record(res: dict) -> None:
        rows = res["rows"]
        store.append_manifest(out, rows)
        status = rows[0]["status"]
        if status == "ok":
            summary.ok += 1
            summary.samples += len(rows)
        elif status == "dropped":
            summary.dropped += 1
        else:
            summary.failed += 1
            summary.errors.append((rows[0]["source"], res["error"]))
            log.warning("%s", res["error"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ok=summary.ok, dropped=summary.dropped, failed=summary.failed)

    try:
        if todo:
            # Always fresh worker processes (even for one): a photo's fit then never depends on what
            # the calling process ran before (thread pools, native libraries' first-use state).
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=max(int(workers), 1), mp_context=mp.get_context("spawn"),
                                     initializer=_init_worker, initargs=(settings, detector)) as pool:
                futures = [pool.submit(_work, p, os.fspath(out)) for p in todo]
                for f in as_completed(futures):
                    record(f.result())
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t_start
    return summary


__all__ = ["BuildConfig", "BuildSummary", "Engine", "Photo", "build_dataset", "list_photos", "photo_rng",
           "sample_rotations", "split_of"]
