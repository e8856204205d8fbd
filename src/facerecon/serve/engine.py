"""The web page's work, without the web framework: uploads in, a JSON-ready result and files out.

`Engine.run(uploads, method)` decides what the uploads are (one photo, several photos of one
person, or one short video), reconstructs them through `facerecon.api`, writes every output format
of each shown face into a result folder (one per request, the oldest dropped past `max_results`),
and returns the plain-dict payload the page renders. The formats the page shows (overlay, GLB, part
masks) are written before the answer; the other downloads right after it, in the background
(`status(id)` says when they are all there), so the page does not wait for a dozen files it may
never fetch. Models are built once per method and kept;
reconstructions run one at a time (the CPU is the bottleneck; torch already uses its threads), and
at most `max_pending` requests wait: the next one gets `BusyError` (HTTP 503).
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import api
from ..errors import FaceReconError, InputImageError
from ..io import export as exporters
from ..io.atomic import write_bytes, write_text
from ..io.image import Image

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif"}
#: Output formats whose PNG files are part masks (the `seg` exporters of issue 17), shown as masks.
MASK_PREFIX = "seg"


class ServeError(FaceReconError):
    """A request the page must refuse; `status` is its HTTP status (4xx, or 503 when busy)."""

    status = 400


class UploadError(ServeError):
    """The uploads are not something the page can reconstruct (message names the file)."""

    status = 400


class TooLargeError(ServeError):
    status = 413


class BusyError(ServeError):
    status = 503


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name as the browser gave it, and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. max_upload_mb: all files together; max_photos: photos in a set;
    max_frames: video frames reconstructed (after `stride`)."""

    max_upload_mb: float = 100.0
    max_photos: int = 16
    max_frames: int = 120


def safe_stem(name: str, fallback: str = "face") -> str:
    """A file stem from an uploaded name: letters, digits, '-', '_' and '.', at most 60 characters."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name or "").stem).strip("._")[:60]
    return stem or fallback


def unique_stems(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        s = safe_stem(n)
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return out


def landmark_sets(rec) -> dict[str, list[list[float]]]:
    """Every landmark set a Reconstruction carries in original-image pixels: its fields or properties
    named `lmN` holding (N, 2) arrays ("68" from `lm68`, "106" once a method provides `lm106`; None:
    not for this result), rounded to 0.01 px, by N."""
    names = {f.name for f in fields(rec)} | {n for n in dir(type(rec)) if isinstance(getattr(type(rec), n, None),
                                                                                   property)}
    out = {}
    for name in sorted(names, key=lambda n: (len(n), n)):
        m = re.fullmatch(r"lm(\d+)", name)
        if not m:
            continue
        a = getattr(rec, name)
        if isinstance(a, np.ndarray) and a.ndim == 2 and a.shape == (int(m.group(1)), 2):
            out[m.group(1)] = np.round(a.astype(np.float64), 2).tolist()
    return out


def _floats(d: dict | None, nd: int = 6) -> dict | None:
    return None if d is None else {k: round(float(v), nd) for k, v in d.items()}


#: Formats written before the answer (the page shows them); the rest follow in the background.
PAGE_FORMATS = ("overlay", "glb")


@dataclass
class _Result:
    """A kept result: its files by name, each shown face's downloads, and whether all are written."""

    files: dict = field(default_factory=dict)
    downloads: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class Engine:
    """Reconstructs uploads and keeps their results on disk.

    Args:
        workdir: where result folders go (default: a new temporary folder, removed by `close`).
        model: the morphable model's name, shared by every method.
        formats: output formats written per shown face (default: every registered one).
        limits: `Limits` of one request. max_results: result folders kept. max_pending: requests
            running or waiting; one more is refused with BusyError.
    """

    def __init__(self, workdir=None, model: str = "ict", formats=None, limits: Limits = Limits(),
                 max_results: int = 20, max_pending: int = 4):
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="facerecon-serve-") if workdir is None else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model_name = model
        self.formats = tuple(api.output_formats()) if formats is None else tuple(formats)
        self.limits = limits
        self.max_results = max_results
        self.max_pending = max_pending
        self._model = None
        self._recons: dict[str, api.FaceReconstructor] = {}
        self._results: OrderedDict[str, _Result] = OrderedDict()
        self._work = threading.Lock()      # one reconstruction at a time
        self._state = threading.Lock()     # counters, caches, the result index
        self._pending = 0
        self._closed = False

    # -- models --------------------------------------------------------------------------------
    def methods(self) -> dict[str, str]:
        return api.available_methods()

    def reconstructor(self, method: str) -> api.FaceReconstructor:
        """The method's FaceReconstructor, built on first use (all methods share one model)."""
        if method not in self.methods():
            raise UploadError(f"unknown method {method!r}; choose from {', '.join(self.methods())}")
        if method not in self._recons:
            t0 = time.perf_counter()
            if self._model is None:
                from ..models import load_model

                self._model = load_model(self.model_name)
            self._recons[method] = api.FaceReconstructor(self._model, method=method)
            log.info("method %s ready in %.1f s", method, time.perf_counter() - t0)
        return self._recons[method]

    def warm(self, method: str) -> None:
        """Build `method` (and its detector) now rather than on the first request."""
        with self._work:
            r = self.reconstructor(method)
            _ = r.detector

    # -- requests ------------------------------------------------------------------------------
    def run(self, uploads: list[Upload], method: str, photometric: bool = True, max_frames: int | None = None,
            stride: int = 1) -> dict:
        """Reconstruct the uploads; returns the page's payload: {"id", "kind" ("photo", "set", "video"),
        "method", "model", "faces": [per shown face: "source", "stem", "pose_deg" (degrees),
        "translation_mm", "blendshapes" (ARKit name: weight, or None), "landmarks" ({"68": (68, 2) original
        px, ...}), "image_size" [w, h], "photo", "overlay", "glb" (URLs), "masks", "downloads" (written so
        far), "times" (s)], "frames" (video: per frame "frame" index, "pose_deg", "translation_mm",
        "blendshapes"; else None), "skipped", "seconds" {"reconstruct", "outputs"}, "frames_csv", "status",
        "zip" (URLs)}. The downloads not yet written follow in a background job (`status`, `wait`).

        Raises ServeError (bad request, too large, busy) or FaceReconError (a bad file, no face: the
        message says which)."""
        self._check(uploads, method, max_frames, stride)
        with self._state:
            if self._pending >= self.max_pending:
                raise BusyError(f"the server is busy ({self._pending} requests running or waiting); try again soon")
            self._pending += 1
        try:
            with self._work:
                payload, later = self._run(uploads, method, photometric, max_frames, stride)
        finally:
            with self._state:
                self._pending -= 1
        threading.Thread(target=self._finish, args=(payload["id"], later), name="facerecon-outputs",
                         daemon=True).start()
        return payload

    def _finish(self, rid: str, later: list) -> None:
        """Write the formats left for after the answer (under the work lock: one job at a time)."""
        res = self._results.get(rid)
        try:
            with self._work:
                if rid not in self._results or self._closed:  # dropped meanwhile, or shutting down
                    return
                for i, (r, out, stem) in enumerate(later):
                    rest = tuple(f for f in self.formats if f not in self._page_formats())
                    if rest:
                        self._export(rid, i, r.export_item(rest), out, stem, rest)
        except Exception as e:  # reported to the page, logged with its traceback
            log.exception("writing the outputs of result %s", rid)
            if res is not None:
                res.error = f"some outputs could not be written ({type(e).__name__}: {e})"
        finally:
            if res is not None:
                res.done.set()

    def _page_formats(self) -> tuple[str, ...]:
        return tuple(f for f in self.formats if f in PAGE_FORMATS or f.startswith(MASK_PREFIX))

    def status(self, rid: str) -> dict:
        """{"done": all outputs written, "error": message or None, "downloads": per shown face}."""
        res = self._results.get(rid)
        if res is None:
            raise FileNotFoundError(rid)
        with self._state:
            return {"done": res.done.is_set(), "error": res.error, "downloads": [list(d) for d in res.downloads]}

    def wait(self, rid: str, timeout: float | None = None) -> bool:
        """Wait until every output of `rid` is written; False on timeout."""
        res = self._results.get(rid)
        if res is None:
            raise FileNotFoundError(rid)
        return res.done.wait(timeout)

    def _check(self, uploads, method, max_frames, stride) -> None:
        if not uploads:
            raise UploadError("no file uploaded: choose a photo, several photos of one person, or a short video")
        total = sum(len(u.data) for u in uploads)
        if total > self.limits.max_upload_mb * 1e6:
            raise TooLargeError(f"the upload is {total / 1e6:.1f} MB; the limit is {self.limits.max_upload_mb:g} MB")
        for u in uploads:
            if not u.data:
                raise UploadError(f"{u.name}: the file is empty")
        videos = [u for u in uploads if Path(u.name).suffix.lower() in VIDEO_SUFFIXES]
        if videos and len(uploads) > 1:
            raise UploadError(f"{videos[0].name}: upload one video on its own (not with other files)")
        if len(uploads) > self.limits.max_photos:
            raise UploadError(f"{len(uploads)} photos; at most {self.limits.max_photos} in one set")
        if method not in self.methods():
            raise UploadError(f"unknown method {method!r}; choose from {', '.join(self.methods())}")
        if stride < 1:
            raise UploadError(f"stride must be at least 1, got {stride}")
        if max_frames is not None and not 1 <= max_frames <= self.limits.max_frames:
            raise UploadError(f"max_frames must be between 1 and {self.limits.max_frames}, got {max_frames}")

    def _new_result(self) -> tuple[str, Path]:
        rid = uuid.uuid4().hex[:12]
        out = self.workdir / rid
        out.mkdir(parents=True)
        with self._state:
            self._results[rid] = _Result()
            while len(self._results) > self.max_results:
                old, gone = self._results.popitem(last=False)
                gone.done.set()
                shutil.rmtree(self.workdir / old, ignore_errors=True)
        return rid, out

    def _run(self, uploads, method, photometric, max_frames, stride) -> tuple[dict, list]:
        rid, out = self._new_result()
        t0 = time.perf_counter()
        skipped: list[str] = []
        frames: list[dict] | None = None
        is_video = Path(uploads[0].name).suffix.lower() in VIDEO_SUFFIXES
        try:
            if is_video:
                kind = "video"
                recs, frames, skipped = self._video(method, uploads[0], out, photometric,
                                                    max_frames or self.limits.max_frames, stride)
                shown = [recs[0]] if len(recs) == 1 else [recs[0], recs[-1]]
                stems = [r.source for r in shown]
            else:
                images = [api.load_image(u.data, name=u.name) for u in uploads]
                rec = self.reconstructor(method)
                if len(images) == 1:
                    kind = "photo"
                    shown = rec.reconstruct(images[0], max_faces=1, photometric=photometric)
                    stems = [safe_stem(uploads[0].name)]
                else:
                    # Named by unique stems so that two uploads called the same keep their own files.
                    kind = "set"
                    names = unique_stems([u.name for u in uploads])
                    shown = rec.reconstruct_set([Image(im.pixels, n) for im, n in zip(images, names)],
                                                photometric=photometric)
                    upload_of = dict(zip(names, (u.name for u in uploads)))
                    skipped = [f"{upload_of[s]}: no face found" for s in rec.last_skipped]
                    stems = [r.source for r in shown]
                    shown = [r.with_image(r.image, upload_of[r.source]) for r in shown]
            t_rec = time.perf_counter() - t0
            t1 = time.perf_counter()
            faces, later = [], []
            for i, (r, stem) in enumerate(zip(shown, stems)):
                face = self._write_face(rid, i, out, r, stem)
                faces.append(face)
                later.append((r, out, stem))
            t_out = time.perf_counter() - t1
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            with self._state:
                self._results.pop(rid, None)
            raise
        if frames is not None:
            self._register(rid, out / "frames.csv")
        payload = {"id": rid, "kind": kind, "method": method, "model": self.model_name, "faces": faces,
                   "frames": frames, "skipped": skipped,
                   "seconds": {"reconstruct": round(t_rec, 3), "outputs": round(t_out, 3)},
                   "frames_csv": None if frames is None else f"/api/results/{rid}/frames.csv",
                   "status": f"/api/results/{rid}", "zip": f"/api/results/{rid}/all.zip"}
        return payload, later

    def _video(self, method: str, upload: Upload, out: Path, photometric: bool, max_frames: int, stride: int):
        path = out / f"input{Path(upload.name).suffix.lower()}"
        write_bytes(path, upload.data)
        try:
            raw = api.read_frames(path, max_frames=max_frames, stride=stride)
            images = [Image(px, f"frame{k * stride:05d}") for k, px in enumerate(raw)]
        except InputImageError as e:
            raise InputImageError(str(e).replace(str(path), upload.name)) from None
        finally:
            path.unlink(missing_ok=True)
        rec = self.reconstructor(method)
        recs = rec.reconstruct_video(images, photometric=photometric)
        skipped = [f"{s}: no face found" for s in rec.last_skipped]
        frames = [{"frame": int(r.source.removeprefix("frame")), "pose_deg": _floats(r.pose_deg),
                   "translation_mm": [round(float(x), 4) for x in r.translation_mm],
                   "blendshapes": _floats(r.blendshapes, 4)} for r in recs]
        self._write_frames_csv(out / "frames.csv", frames)
        return recs, frames, skipped

    @staticmethod
    def _write_frames_csv(path: Path, frames: list[dict]) -> None:
        names = list(frames[0]["blendshapes"] or {}) if frames else []
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["frame", "yaw_deg", "pitch_deg", "roll_deg", "tx_mm", "ty_mm", "tz_mm", *names])
        for f in frames:
            p = f["pose_deg"]
            w.writerow([f["frame"], p["yaw"], p["pitch"], p["roll"], *f["translation_mm"],
                        *[(f["blendshapes"] or {}).get(n, "") for n in names]])
        write_text(path, buf.getvalue())

    def _register(self, rid: str, path: Path) -> str:
        with self._state:
            if rid in self._results:
                self._results[rid].files[path.name] = path
        return f"/api/results/{rid}/{path.name}"

    def _export(self, rid: str, face: int, item, out: Path, stem: str, formats) -> dict[str, list[Path]]:
        """Write `formats` of one face one at a time (so each file is known by its format) and add
        them to the face's downloads."""
        descriptions = api.output_formats()
        by_format = {}
        for name in formats:
            paths = exporters.export(item, out, stem, [name])
            by_format[name] = paths
            rows = [{"format": name, "description": descriptions.get(name, ""), "name": p.name,
                     "url": self._register(rid, p), "bytes": p.stat().st_size} for p in paths]
            with self._state:
                res = self._results.get(rid)
                if res is not None:
                    while len(res.downloads) <= face:
                        res.downloads.append([])
                    res.downloads[face].extend(rows)
        return by_format

    def _write_face(self, rid: str, index: int, out: Path, r, stem: str) -> dict:
        """The page's formats of one face and the photo as the page draws it (EXIF applied); the
        face's payload."""
        page = self._page_formats()
        item = r.export_item(page)
        by_format = self._export(rid, index, item, out, stem, page)
        photo = None
        if r.image is not None:
            from PIL import Image as PILImage

            p = out / f"{stem}_input.jpg"
            buf = io.BytesIO()
            PILImage.fromarray(r.image).save(buf, format="JPEG", quality=90)
            write_bytes(p, buf.getvalue())
            photo = self._register(rid, p)

        def first(fmt, suffix):
            return next((self._register(rid, p) for p in by_format.get(fmt, []) if p.name.endswith(suffix)), None)

        masks = [{"format": name, "name": p.name, "url": self._register(rid, p)}
                 for name, paths in by_format.items() if name.startswith(MASK_PREFIX)
                 for p in paths if p.suffix == ".png"]
        h, w = (r.image.shape[:2] if r.image is not None else (r.camera.height, r.camera.width))
        with self._state:
            downloads = list(self._results[rid].downloads[index]) if page else []
        return {
            "source": Path(r.source).name, "stem": stem, "method": r.method,
            "pose_deg": _floats(r.pose_deg), "translation_mm": [round(float(x), 6) for x in r.translation_mm],
            "blendshapes": _floats(r.blendshapes), "landmarks": landmark_sets(r), "image_size": [int(w), int(h)],
            "photo": photo, "overlay": first("overlay", "_overlay.png"), "glb": first("glb", ".glb"),
            "masks": masks, "downloads": downloads,
            "times": {k: round(float(v), 4) for k, v in r.times.items()},
        }

    # -- files ---------------------------------------------------------------------------------
    def file(self, rid: str, name: str) -> Path:
        """A file of a kept result, by its name (only names the result wrote: no paths)."""
        with self._state:
            res = self._results.get(rid)
            p = None if res is None else res.files.get(name)
        if p is None or not p.is_file():
            raise FileNotFoundError(f"{rid}/{name}")
        return p

    def files(self, rid: str, timeout: float = 300.0) -> list[Path]:
        """Every file of a kept result, once all are written (waits up to `timeout` s for them)."""
        self.wait(rid, timeout)
        with self._state:
            if rid not in self._results:
                raise FileNotFoundError(rid)
            return [p for p in self._results[rid].files.values() if p.is_file()]

    def close(self) -> None:
        """Let the running job finish, drop the jobs not started, remove an own temporary workdir."""
        self._closed = True
        with self._work:
            if self._own_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)
