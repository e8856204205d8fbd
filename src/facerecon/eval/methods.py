"""Landmark methods the evaluators can run, by name.

A *landmark method* is a callable ``method(image_rgb, box) -> (68, 2) array | None``:
  image_rgb: (H, W, 3) uint8 RGB; box: (4,) [x0, y0, x1, y1] pixels, or None when the method
  must find the face itself (``--boxes detect``). Under the AFLW2000-3D protocol (``--boxes gt``)
  the box is the protocol's 3DDFA roi box (a loose square crop around the face); a method may use it
  as its crop or as a face box. Returns 68 iBUG points in original-image pixels (pixel centres at
  integers), or None when it finds no face (counted as a failure, never dropped).

`get_method(name, **options)` builds one:
  - a name registered here (`register_method(name, factory)`, or an entry point in the
    ``facerecon.eval_methods`` group): landmark-only methods ("3ddfa", "default") and the built-in
    reconstruction variants ("fit" = landmark stages only, "fit-photo", "regress", "regress+refine");
  - otherwise any reconstruction method of `facerecon.methods` (registered anywhere), wrapped by
    `reconstruction_method`: it reconstructs from the protocol box and reports its projected landmarks;
  - or a ``"package.module:factory"`` string.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from ..errors import FaceReconError
from ..registry import Registry, import_path

Method = Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]
Factory = Callable[..., Method]

ENTRY_POINT_GROUP = "facerecon.eval_methods"
EVAL_METHODS = Registry("evaluation method", group=ENTRY_POINT_GROUP)


def register_method(name: str, factory: str | Factory, description: str = "", overwrite: bool = False) -> None:
    """Add a landmark-method factory under `name` (a callable, or a lazy "package.module:attr" string)."""
    EVAL_METHODS.register(name, factory, description, overwrite)


def available_methods() -> dict[str, str]:
    """name -> description of every evaluable method: those registered here and every reconstruction method."""
    from ..api import available_methods as reconstruction_methods

    out = {n: f"reconstruction method: {d}" for n, d in reconstruction_methods().items()}
    return dict(sorted({**out, **EVAL_METHODS.available()}.items()))


def get_factory(name: str) -> Factory:
    """The factory registered as `name`, a reconstruction method's adapter, or a "module:attr" import."""
    if name in EVAL_METHODS:
        return EVAL_METHODS.get(name)
    from ..api import available_methods as reconstruction_methods

    if name in reconstruction_methods():
        return partial(reconstruction_method, name)
    if ":" in name:
        return import_path(name)
    raise FaceReconError(f"unknown evaluation method '{name}'; known: {', '.join(available_methods())} "
                         "(or give 'package.module:factory')")


def get_method(name: str, **options) -> Method:
    """Build the method `name` with `options` passed to its factory."""
    return get_factory(name)(**options)


# ----------------------------------------------------------------------------- built-in methods

# 3DDFA_V2's own detector, so that `--boxes detect` reproduces its end-to-end pipeline.
DEFAULT_DETECTOR = "faceboxes"


def _resolve_detector(detector):
    """`detector`: an object with .detect(image) -> [Face], a callable image -> [Face], a backend
    name of `facerecon.detect.registry` ("retinaface", "faceboxes", ...), or a "package.module:attr"
    path to a class / zero-argument factory that returns one of those."""
    if isinstance(detector, str):
        if ":" in detector:
            detector = import_path(detector)()
        else:
            from ..detect.registry import get_detector

            try:
                detector = get_detector(detector)
            except ValueError as e:
                raise FaceReconError(str(e)) from None
    fn = getattr(detector, "detect", detector)
    if not callable(fn):
        raise FaceReconError(f"detector {detector!r} is neither callable nor has .detect(image)")
    return fn


def make_3ddfa(asset_dir=None, detector=None, device: str = "cpu") -> Method:
    """3DDFA_V2 (our port). With a box: the box is used as the roi crop as-is (3DDFA protocol).
    Without: `detector` (default `DEFAULT_DETECTOR`, resolved on first use) finds faces, the
    largest is enlarged with 3DDFA_V2's roi rule and landmarked; no face -> None."""
    from ..detect.tddfa import TDDFALandmarker

    lm = TDDFALandmarker(asset_dir, device=device)
    state = {"detect": None}

    def method(image: np.ndarray, box: np.ndarray | None) -> np.ndarray | None:
        if box is not None:
            return lm.landmarks(image, box, box_is_roi=True).lm68
        if state["detect"] is None:
            state["detect"] = _resolve_detector(detector if detector is not None else DEFAULT_DETECTOR)
        faces = list(state["detect"](image))
        if not faces:
            return None
        face = max(faces, key=lambda f: f.size)
        return lm.landmarks(image, face.box).lm68

    method.landmarker = lm  # lets callers batch (e.g. the port test) without a second load
    return method


def make_default(**options) -> Method:
    """facerecon's default detection pipeline alone. A given box is the AFLW2000-3D protocol roi and
    is turned back into a detector-style box; None runs the full pipeline and takes the first face."""
    from ..detect.crop import bbox_from_roi_box
    from ..detect.pipeline import DefaultPipeline

    pl = DefaultPipeline(**options)

    def method(image: np.ndarray, box) -> np.ndarray | None:
        if box is not None:
            return pl.landmarks(image, bbox_from_roi_box(box)).lm68
        faces = pl.detect(image)
        return faces[0].lm68 if faces else None

    method.pipeline = pl
    return method


class ReconstructionRunner:
    """A reconstruction method (any name of `facerecon.methods`) run the way the benchmarks run it.

    `run(image, box)` -> the Reconstruction of the face, or None when none is found. A given box is
    the protocol's 3DDFA roi box: 3DDFA_V2 runs on it directly, as 3DDFA does, with test-time
    augmentation when the method's own detector uses it, and the detector's FaceMesh points are
    attached when it has them; None: the method's detector finds the face (the first one).
    `last_input` holds the 68 landmarks the method started from. options: the method's options
    (and `detector`), as for `FaceReconstructor`."""

    def __init__(self, name: str, photometric: bool = True, model: str = "ict", **options):
        from ..api import FaceReconstructor

        self.reconstructor = FaceReconstructor(model, method=name, **options)
        self.photometric = photometric
        self.last_input = None
        self._tddfa = None

    def face(self, img, box):
        """The detection to reconstruct: from the detector (box None) or 3DDFA_V2 on the roi box."""
        from ..detect.crop import bbox_from_roi_box
        from ..detect.tddfa import TDDFALandmarker

        rec = self.reconstructor
        if box is None:
            faces = rec.detect(img)
            return faces[0] if faces else None
        if self._tddfa is None:
            pipe = rec.detector
            self._tddfa = (getattr(pipe, "tddfa", None) or TDDFALandmarker(), getattr(pipe, "tta", True))
        tddfa, tta = self._tddfa
        face = (tddfa.landmarks_tta(img.pixels, [box], box_is_roi=True)[0] if tta
                else tddfa.landmarks(img.pixels, box, box_is_roi=True))
        if hasattr(rec.detector, "attach_dense"):  # a no-op for pipelines without FaceMesh points
            face = rec.detector.attach_dense(img.pixels, face, bbox_from_roi_box(box))
        return face

    def run(self, image: np.ndarray, box):
        from ..api import load_image

        img = load_image(image)
        self.last_input = None
        face = self.face(img, box)
        if face is None:
            return None
        self.last_input = face.lm68
        return self.reconstructor.reconstruct_faces([img], [face], photometric=self.photometric)[0]


def reconstruction_method(name: str, photometric: bool = True, model: str = "ict", **options) -> Method:
    """A reconstruction method as a landmark method: its model's 68 landmarks projected into the
    photo (see `ReconstructionRunner`). The landmarks it started from are left in
    `method.last_input`, which the evaluator scores in the same run."""
    runner = ReconstructionRunner(name, photometric, model, **options)

    def method(image: np.ndarray, box) -> np.ndarray | None:
        r = runner.run(image, box)
        method.last_input = runner.last_input
        return None if r is None else r.lm68

    method.reconstructor = runner.reconstructor
    method.runner = runner
    method.last_input = None
    return method


def reconstruction_landmarks_3d(r) -> np.ndarray | None:
    """(68, 3) float64 a Reconstruction's 68 landmarks in the original image for the 3-D NME
    (`aflw2000.nme3d`): x, y pixels (the photo camera's projection of the posed model landmarks,
    vertex + offset) and z = (distance − depth) · focal / distance, the height towards the camera in
    the same pixel scale (larger nearer, as AFLW2000-3D's ``pt3d_68``). None without annotations."""
    sets = r.landmark_sets()
    if sets is None:
        return None
    import torch

    posed = torch.as_tensor(np.asarray(sets["lm68"]["posed_mm"], np.float64))
    cam = r.camera
    scr = cam.project(posed).numpy()
    z = (cam.distance - scr[:, 2]) * cam.focal / cam.distance
    return np.concatenate([scr[:, :2], z[:, None]], 1)


register_method("3ddfa", make_3ddfa, "3DDFA_V2 MobileNetV1x0.5 (our port); --boxes gt uses the roi box as-is")
register_method("default", make_default,
                "facerecon's default detection pipeline (RetinaFace/FaceBoxes boxes + 3DDFA_V2 with TTA)")
register_method("fit", partial(reconstruction_method, "fit", False),
                "analysis-by-synthesis fit of the ICT model from the default pipeline's landmarks")
register_method("fit-photo", partial(reconstruction_method, "fit", True),
                "the full fit: landmark stages + photometric stage through the renderer")
register_method("fit-prdl", partial(reconstruction_method, "fit", False, prdl=True),
                "fit + 3DDFA_V3's PRDL against the face parser's part maps (landmark stages)")
register_method("regress", partial(reconstruction_method, "regress", False),
                "the learned coefficient regressor alone")
register_method("regress+refine", partial(reconstruction_method, "regress+refine", True),
                "the regressor, then fitting from it (landmark + photometric stages)")
