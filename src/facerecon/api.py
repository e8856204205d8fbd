"""The Python API: `FaceReconstructor(method="fit").reconstruct(image_or_path)`.

Composes exactly the documented flow and nothing else:
    load_image → detect (detect.registry) → align (224² Deep3D crop) → method (methods registry)
    → `Reconstruction` (with `.save(dir)`, `.to_trimesh()`, numpy views).
Image sets share one identity; videos add temporal smoothing. The CLI talks only to this module
(plus the eval, assets, preprocess and train entry points), so everything it needs is here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import threads as _threads

# Before torch (and its OpenMP runtime) loads, when the API is imported first: threads that finish
# their share sleep instead of spinning (facerecon.threads; the user's own setting stands).
_threads.prefer_passive_wait()

import numpy as np
import torch

from .align import Crop, align_face
from .detect.base import Face
from .errors import FaceReconError, NoFaceError
from .fit import FitConfig
from .geometry.camera import PerspectiveCamera
from .io import export as _export
from .io.image import Image, load_image
from .io.paths import expand_inputs
from .io.video import VideoFrame, iter_frames, probe, read_frames
from .methods import (
    Method,
    MethodContext,
    Reconstruction,
    Request,
    available_methods,
    build_method,
    camera_for_original,
    check_landmarks,
    register_method,
)
from .methods.texture import TEXTURES, apply_texture
from .models import FaceParams, MorphableModel, load_model

#: The fitting methods: they take a FitConfig and estimate albedo coefficients (`texture="basis"`).
_FITTING = ("fit", "regress+refine")


def _check_texture(texture: str | None, model, method) -> str | None:
    """Validate `FaceReconstructor(texture=...)` against the model and method (FaceReconError)."""
    if texture is None:
        return None
    if texture not in TEXTURES:
        raise FaceReconError(f"unknown texture '{texture}'; choose from {', '.join(TEXTURES)}")
    if texture == "basis":
        if isinstance(method, str) and method != "fit":
            raise FaceReconError(f"texture 'basis' needs the fitting method 'fit' (the albedo coefficients are "
                                 f"fitted to the photo); method '{method}' has no albedo estimate")
        if isinstance(model, str) and model != "ict":
            raise FaceReconError(f"texture 'basis' is the learned ICT albedo basis; model '{model}' has its own "
                                 f"(use texture=None)")
        if isinstance(model, MorphableModel) and model.layout.n_albedo == 0:
            raise FaceReconError("texture 'basis' needs a model with an albedo basis (load_model('ict', "
                                 "albedo='learned'))")
    if texture == "refined":
        if isinstance(method, str) and method not in ("fit", "regress", "regress+refine"):
            raise FaceReconError(f"texture 'refined' needs a method with the model's mesh and a fitted light "
                                 f"(fit, regress, regress+refine), not '{method}'")
        if isinstance(model, str) and model != "ict":
            raise FaceReconError(f"texture 'refined' is trained on the ICT face mesh; model '{model}' is not it")
    return texture


def set_threads(n: int | None = None) -> dict[str, int]:
    """The thread policy (`facerecon.threads`) for this process: `n` torch intra-op threads (None: the
    cores this process may use), one inter-op thread, `n` numba threads, and the OpenMP/BLAS
    environment for the processes it starts. Returns the counts now in force."""
    return _threads.apply(n)


def output_formats() -> dict[str, str]:
    """name -> description of every output format `Reconstruction.save` can write."""
    return _export.available_exporters()


def video_outputs() -> dict[str, str]:
    """name -> description of the files `FaceReconstructor.reconstruct_video_file` writes."""
    from .methods.video import VIDEO_OUTPUTS

    return dict(VIDEO_OUTPUTS)


@dataclass(frozen=True)
class VideoSummary:
    """What `reconstruct_video_file` did: paths written, frames read, frames with a face, the names
    of frames without one, seconds taken."""

    paths: list[Path]
    frames: int
    faces: int
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        """Frames per second of the whole run (decode, detection, reconstruction and writing)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class FaceReconstructor:
    """Reconstruct 3D faces from photos, photo sets and video frames.

    Args:
        model: 'ict' (default), 'bfm', or a MorphableModel.
        detector: a detector name (see `facerecon.detect.registry`) or an object with
            `detect(image) -> list[Face]`; "auto": the method's own choice (`Method.detector`:
            "fast" for the regressor alone, "default" for the fitting methods).
        method: a registered method name (`available_methods()`: 'fit', 'regress', 'regress+refine',
            and any registered since) or a built `Method`.
        device: torch device.
        fit_config, identity_loss, mask, regressor, **method_options: options of the method's
            factory (e.g. `FitConfig` for the fitting methods, regressor weights for the regressor);
            only those given are passed on, and a method that takes no such option says so.
        texture: the colour source of meshes and renders (`methods.texture`): None (the method's
            own), 'constant' (the model's constant albedo, no per-vertex offset), 'basis' (the learned
            ICT albedo basis fitted to the photo; method 'fit'), 'photo' (the photo's de-lit colours),
            'refined' (the GCN texture refiner, `weights/texture_refiner/`; fit, regress, regress+refine).
    """

    def __init__(self, model: str | MorphableModel = "ict", detector="auto", fit_config=None,
                 device: str | torch.device = "cpu", identity_loss: bool | None = None, mask: bool | None = None,
                 method: str | Method = "fit", regressor=None, texture: str | None = None, **method_options):
        self.device = torch.device(device)
        self.texture = _check_texture(texture, model, method)
        if texture == "basis" and isinstance(model, str):
            model = load_model(model, albedo="learned")
        if texture in ("constant", "basis") and method in _FITTING:  # no per-vertex offset on top
            fit_config = dataclasses.replace(fit_config or FitConfig(), estimate_albedo=False)
        self.model = (load_model(model) if isinstance(model, str) else model).to(self.device)
        self.camera = PerspectiveCamera.deep3d(224)
        self.context = MethodContext(self.model, self.camera, self.device)
        given = {"config": fit_config, "identity_loss": identity_loss, "mask": mask, "regressor": regressor}
        options = {**{k: v for k, v in given.items() if v is not None}, **method_options}
        if isinstance(method, str):
            self.method = build_method(method, self.context, **options)
        else:
            self.method = method
        self.method_name = self.method.name
        self._detector_spec = detector
        self._detector = None
        self._lm5_ref = self.model.mean_lm5().detach().cpu().double().numpy()
        self.last_skipped: list[str] = []

    # -- detection -----------------------------------------------------------------------------
    @property
    def detector(self):
        if self._detector is None:
            from .detect.registry import resolve_detector

            spec = self._detector_spec
            auto = isinstance(spec, str) and spec.lower() == "auto"
            self._detector = resolve_detector(self.method.detector if auto else spec)
        return self._detector

    def detect(self, image: Image) -> list[Face]:
        return self.detector.detect(image.pixels)

    # -- core ----------------------------------------------------------------------------------
    def crop(self, image: Image, face: Face) -> Crop:
        """The 224² Deep3D crop of `face` (aligned on its 5 points to the model's own)."""
        return align_face(image.pixels, face.lm5, self._lm5_ref, camera=self.camera, lm68=face.lm68,
                          source=image.name)

    def reconstruct(self, image, max_faces: int = 1, photometric: bool = True) -> list[Reconstruction]:
        """Reconstruct up to `max_faces` faces (largest first) of one image (path, array, PIL, bytes).

        Raises InputImageError for an unreadable image and NoFaceError when no face is found.
        """
        img = load_image(image)
        t0 = time.perf_counter()
        faces = self.detect(img)[:max_faces]
        if not faces:
            raise NoFaceError(f"{img.name}: no face found")
        t_det = time.perf_counter() - t0
        return self.reconstruct_faces([img] * len(faces), faces, photometric=photometric,
                                      extra_times={"detect": t_det})

    def reconstruct_faces(self, images: list[Image], faces: list[Face], photometric: bool = True,
                          shared_identity: bool = False, temporal: float = 0.0,
                          extra_times: dict | None = None) -> list[Reconstruction]:
        """Reconstruct given detections (one per image, batched together)."""
        t0 = time.perf_counter()
        crops = [self.crop(im, f) for im, f in zip(images, faces)]
        t_align = time.perf_counter() - t0
        check_landmarks(self.method, crops)
        request = Request(photometric=photometric, shared_identity=shared_identity, temporal=temporal)
        recs = self.method.reconstruct(crops, faces, request)
        if len(recs) != len(crops):
            raise FaceReconError(f"method '{self.method_name}' returned {len(recs)} results for {len(crops)} faces")
        recs = apply_texture(recs, self.texture)
        return [replace(r, image=im.pixels, source=im.name, times={**(extra_times or {}), "align": t_align, **r.times})
                for r, im in zip(recs, images)]

    def reconstruct_set(self, images, photometric: bool = True) -> list[Reconstruction]:
        """Several photos of ONE person -> one shared identity (and albedo), per-photo expression,
        pose and light. Images without a face are skipped (reported in `self.last_skipped`)."""
        return self._multi(images, photometric, temporal=0.0)

    def reconstruct_video(self, frames, photometric: bool = False, smoothing: float = 1.0, window: int = 32,
                          overlap: int = 8) -> list[Reconstruction]:
        """Frames (in order) of one person -> shared identity + temporally smoothed pose/expression,
        one Reconstruction per frame with a face (frames without one are in `self.last_skipped`).
        `stream_video` does the same one window at a time; this collects its results."""
        return [r for _, r in self.stream_video(frames, photometric, smoothing, window, overlap) if r is not None]

    def stream_video(self, frames, photometric: bool = False, smoothing: float = 1.0, window: int = 32,
                     overlap: int = 8, max_carry: int = 10,
                     redetect: int = 8) -> Iterator[tuple[VideoFrame, Reconstruction | None]]:
        """Reconstruct a video's frames in overlapping windows (`methods.video.reconstruct_windows`):
        the first window's identity is kept for the clip, pose and expression are smoothed over time
        (`smoothing`: the fit's temporal weight) and cross-faded over the `overlap` frames where
        windows meet; memory holds one window of frames, whatever the clip's length.

        Args:
            frames: `io.video.VideoFrame`s (e.g. `iter_frames(path)`), or images (paths, arrays, ...;
                numbered from 0, timed at 0).
            window: frames per window (0: the whole clip as one batch); overlap: frames shared by
                consecutive windows.
            max_carry: a frame without a detection reuses the last one for up to this many frames.
            redetect: run the face detector on every `redetect`-th frame only and, in between, the
                landmarker on the box of the frame before, moved with its landmarks (tracking; the
                detector runs again when the tracked landmarks jump or shrink); 1: detect every frame.

        Yields:
            (frame, Reconstruction or None when no face was found), for every frame, in order.
        """
        from .methods.video import BREAK, Windows, reconstruct_windows

        self.last_skipped = []
        plan = Windows(window, overlap)
        request = Request(photometric=photometric, shared_identity=True, temporal=smoothing)
        pending: list[tuple[VideoFrame, str, bool]] = []  # frames read, not yet given back; False: no face
        # prev: the face of the frame before; since: frames since the detector ran; offset: the detector
        # box's centre minus its landmarks' centre (tracking keeps it).
        state = {"prev": None, "carried": 0, "since": 0, "offset": None}

        def items():
            for i, it in enumerate(frames):
                frame = it if isinstance(it, VideoFrame) else None
                img = load_image(frame.pixels if frame else it, name=frame.name if frame else None)
                if frame is None:
                    frame = VideoFrame(img.pixels, i, 0.0)
                face = None
                if 0 < state["since"] < redetect:
                    face = self._track(img, state["prev"], state["offset"])
                if face is not None:
                    state["since"] += 1
                else:
                    found = self.detect(img)
                    face = found[0] if found else None
                    state["since"] = 1 if face is not None else 0
                    if face is not None and face.lm68 is not None:
                        b = np.asarray(face.box, np.float64)[:4]
                        state["offset"] = (b[:2] + b[2:]) / 2 - (face.lm68.min(0) + face.lm68.max(0)) / 2
                if face is not None:
                    state["prev"], state["carried"] = face, 0
                elif state["prev"] is not None and state["carried"] < max_carry:
                    state["carried"] += 1
                else:
                    state["prev"] = None
                    self.last_skipped.append(img.name)
                    pending.append((frame, img.name, False))
                    yield BREAK
                    continue
                pending.append((frame, img.name, True))
                crop = self.crop(img, state["prev"])
                check_landmarks(self.method, [crop])
                yield crop, state["prev"], frame

        for frame, rec in reconstruct_windows(self.method, self.context, items(), request, plan):
            while pending and not pending[0][2]:
                yield pending.pop(0)[0], None
            if rec is None:  # after a gap: every frame before it was given back
                continue
            _, name, _ = pending.pop(0)
            yield frame, replace(apply_texture([rec], self.texture)[0], image=frame.pixels, source=name)
        for frame, _, _ in pending:
            yield frame, None

    def _track(self, img: Image, prev: Face | None, offset: np.ndarray | None) -> Face | None:
        """The face of `img` from the landmarker alone, on `prev`'s box re-centred on `prev`'s landmarks
        (+ `offset`, the detector box's centre minus its landmarks' centre when it was detected); None
        without a previous face or a landmarker, or when the result does not look like the same face
        (its landmarks moved by more than a quarter of their size, or their size changed by 30 %)."""
        det = self.detector
        if prev is None or prev.lm68 is None or offset is None or not hasattr(det, "landmarks"):
            return None
        lo, hi = prev.lm68.min(0), prev.lm68.max(0)
        box = np.asarray(prev.box, np.float64)[:4]
        half = (box[2:] - box[:2]) / 2
        centre = (lo + hi) / 2 + offset
        face = det.landmarks(img.pixels, np.concatenate([centre - half, centre + half]), score=prev.score)
        if face is None or face.lm68 is None:
            return None
        lo2, hi2 = face.lm68.min(0), face.lm68.max(0)
        size, size2 = float(np.linalg.norm(hi - lo)), float(np.linalg.norm(hi2 - lo2))
        moved = float(np.linalg.norm((lo2 + hi2) / 2 - (lo + hi) / 2))
        if moved > 0.25 * size or not 0.7 < size2 / max(size, 1e-6) < 1.3:
            return None
        return face

    def reconstruct_video_file(self, path, out_dir, outputs=None, frame_formats=(), photometric: bool = False,
                               smoothing: float = 1.0, window: int = 32, overlap: int = 8, start: int = 0,
                               max_frames: int | None = None, stride: int = 1, stem: str | None = None,
                               progress: bool = True) -> VideoSummary:
        """Reconstruct a video file into `out_dir`, streaming (decode → windows → outputs):
        `stem`_overlay.mp4, `stem`_sequence.csv/.npz, `stem`.glb (animated), `stem`_livelink.csv
        (`video_outputs()`; None: all), and per-frame files of `frame_formats` (exporter names,
        e.g. ("obj",)) in `out_dir`/frames/ named by frame number. A progress bar shows frames/s.
        Raises InputImageError for an unreadable video and NoFaceError when no frame has a face."""
        from .log import progress as bar
        from .methods.video import VIDEO_OUTPUTS, VideoOutputs

        info = probe(path)
        stem = stem or Path(path).stem
        sink = VideoOutputs(out_dir, stem, info.fps / stride, tuple(VIDEO_OUTPUTS) if outputs is None else outputs,
                            frame_formats, source=Path(path).name)
        total = max(0, info.frames - start)
        total = -(-total // stride) if total else None
        if max_frames is not None:
            total = min(total or max_frames, max_frames)
        n = faces = 0
        t0 = time.perf_counter()
        try:
            with bar(total=total, desc=Path(path).name, unit="frame", show=progress) as pbar:
                stream = self.stream_video(iter_frames(path, start, max_frames, stride), photometric, smoothing,
                                           window, overlap)
                for frame, rec in stream:
                    sink.add(frame, rec)
                    n += 1
                    faces += rec is not None
                    pbar.update(1)
        except BaseException:
            sink.abort()
            raise
        if not faces:
            sink.abort()
            raise NoFaceError(f"{path}: no face found in any of {n} frames")
        paths = sink.close()
        return VideoSummary(paths, n, faces, list(self.last_skipped), time.perf_counter() - t0)

    def _multi(self, items, photometric, temporal):
        imgs, faces, self.last_skipped = [], [], []
        for it in items:
            img = load_image(it)
            found = self.detect(img)
            if not found:
                self.last_skipped.append(img.name)
                continue
            imgs.append(img)
            faces.append(found[0])
        if not faces:
            raise NoFaceError("no face found in any input")
        return self.reconstruct_faces(imgs, faces, photometric=photometric, shared_identity=True, temporal=temporal)


# ----------------------------------------------------------------------------- decoding parameters


@dataclass(frozen=True)
class DecodedFace:
    """A face decoded from model parameters: vertices (V, 3) float32 model space mm, triangles
    (F, 3) int64, colors (V, 3) float32 [0, 1] (albedo under a soft frontal light, for viewing)."""

    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray
    model_name: str

    def save(self, path) -> Path:
        """Write an .obj or .ply (by suffix) atomically."""
        from .io.mesh import write_obj, write_ply

        path = Path(path)
        if path.suffix.lower() == ".ply":
            write_ply(path, self.vertices, self.triangles, self.colors)
        else:
            write_obj(path, self.vertices, self.triangles, colors=self.colors)
        return path


def read_coefficients(path) -> np.ndarray:
    """A flat coefficient vector from a Deep3D-style .mat ('coeff'), an .npz ('coeff') or an .npy."""
    from .io.arrays import read_mat

    src = Path(path)
    try:
        if src.suffix == ".mat":
            vec = read_mat(src)["coeff"]
        elif src.suffix == ".npz":
            with np.load(src) as z:
                vec = z["coeff"]
        else:
            vec = np.load(src)
    except (OSError, KeyError, ValueError) as e:
        raise FaceReconError(f"{src}: cannot read a coefficient vector ({e})") from None
    return np.asarray(vec, np.float32).reshape(1, -1)


def decode(model: str | MorphableModel = "ict", variant: str | None = None, coeffs=None, seed: int = 0,
           identity_scale: float = 1.0, expression: dict[str, float] | None = None) -> DecodedFace:
    """Decode model parameters into a mesh: `coeffs` (a flat vector in the model's layout, or a path
    for `read_coefficients`) or a random identity (seeded) at a neutral expression; `expression`
    ({'jawOpen': 0.6, ...}, ARKit names for ICT) is added on top."""
    m = load_model(model, variant=variant) if isinstance(model, str) else model
    if coeffs is not None:
        vec = read_coefficients(coeffs) if isinstance(coeffs, (str, Path)) else np.asarray(coeffs, np.float32)
        try:
            params: FaceParams = m.layout.split(torch.as_tensor(vec).reshape(1, -1))
        except ValueError as e:
            raise FaceReconError(str(e)) from None
    else:
        g = torch.Generator().manual_seed(seed)
        params = m.random_params(1, generator=g, id_scale=identity_scale, exp_scale=0.0)
    if expression:
        try:
            params = params.replace(expression=params.expression + m.expression_vector(expression))
        except KeyError as e:
            raise FaceReconError(e.args[0]) from None
    with torch.no_grad():
        geo = m(params)
    # Simple Lambert shading from the camera direction: a viewable vertex colour.
    shade = geo.normals[0][:, 2].clamp(0, 1) * 0.7 + 0.3
    colors = geo.albedo[0] * shade[:, None]
    return DecodedFace(geo.vertices[0].numpy().astype(np.float32), m.faces.numpy().astype(np.int64),
                       colors.numpy().astype(np.float32), m.name)


__all__ = [
    "DecodedFace",
    "FaceReconstructor",
    "FitConfig",
    "Reconstruction",
    "VideoFrame",
    "VideoSummary",
    "available_methods",
    "camera_for_original",
    "decode",
    "expand_inputs",
    "iter_frames",
    "load_image",
    "output_formats",
    "probe",
    "read_coefficients",
    "read_frames",
    "register_method",
    "set_threads",
    "video_outputs",
]
