"""The Python API: `FaceReconstructor(method="fit").reconstruct(image_or_path)`.

Composes exactly the documented flow and nothing else:
    load_image → detect (detect.registry) → align (224² Deep3D crop) → method (methods registry)
    → `Reconstruction` (with `.save(dir)`, `.to_trimesh()`, numpy views).
Image sets share one identity; videos add temporal smoothing. The CLI talks only to this module
(plus the eval, assets, preprocess and train entry points), so everything it needs is here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
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
from .io.video import read_frames
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
from .models import FaceParams, MorphableModel, load_model


def set_threads(n: int | None = None) -> dict[str, int]:
    """The thread policy (`facerecon.threads`) for this process: `n` torch intra-op threads (None: the
    cores this process may use), one inter-op thread, `n` numba threads, and the OpenMP/BLAS
    environment for the processes it starts. Returns the counts now in force."""
    return _threads.apply(n)


def output_formats() -> dict[str, str]:
    """name -> description of every output format `Reconstruction.save` can write."""
    return _export.available_exporters()


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
    """

    def __init__(self, model: str | MorphableModel = "ict", detector="auto", fit_config=None,
                 device: str | torch.device = "cpu", identity_loss: bool | None = None, mask: bool | None = None,
                 method: str | Method = "fit", regressor=None, **method_options):
        self.device = torch.device(device)
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
        return [replace(r, image=im.pixels, source=im.name, times={**(extra_times or {}), "align": t_align, **r.times})
                for r, im in zip(recs, images)]

    def reconstruct_set(self, images, photometric: bool = True) -> list[Reconstruction]:
        """Several photos of ONE person -> one shared identity (and albedo), per-photo expression,
        pose and light. Images without a face are skipped (reported in `self.last_skipped`)."""
        return self._multi(images, photometric, temporal=0.0)

    def reconstruct_video(self, frames, photometric: bool = False, smoothing: float = 1.0) -> list[Reconstruction]:
        """Frames (in order) of one person -> shared identity + temporally smoothed pose/expression.
        Frames where detection fails reuse the previous frame's detection."""
        return self._multi(frames, photometric, temporal=smoothing, carry=True)

    def _multi(self, items, photometric, temporal, carry=False):
        imgs, faces, self.last_skipped = [], [], []
        prev = None
        for it in items:
            img = load_image(it)
            found = self.detect(img)
            if not found and carry and prev is not None:
                found = [prev]
            if not found:
                self.last_skipped.append(img.name)
                continue
            prev = found[0]
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
    "available_methods",
    "camera_for_original",
    "decode",
    "expand_inputs",
    "load_image",
    "output_formats",
    "read_coefficients",
    "read_frames",
    "register_method",
    "set_threads",
]
