"""Landmark methods the evaluators can run, by name.

A *method* is a callable ``method(image_rgb, box) -> (68, 2) array | None``:
  image_rgb: (H, W, 3) uint8 RGB; box: (4,) [x0, y0, x1, y1] pixels, or None when the method
  must find the face itself (``--boxes detect``). Under the AFLW2000-3D protocol (``--boxes gt``)
  the box is the protocol's 3DDFA roi box (a loose square crop around the face); a method may use it
  as its crop or as a face box. Returns 68 iBUG points in original-image pixels (pixel centres at
  integers), or None when it finds no face (counted as a failure, never dropped).

A *factory* builds a method: ``factory(**options) -> method``. Register one with
``register_method(name, factory)``, where factory is a callable or a lazy ``"package.module:attr"``
string imported on first use. Other modules extend the table without editing this file, either by
calling `register_method` at import time or by an entry point in the ``facerecon.eval_methods``
group; `get_method` also accepts a ``"package.module:attr"`` string directly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from ..errors import FaceReconError

Method = Callable[[np.ndarray, np.ndarray | None], np.ndarray | None]
Factory = Callable[..., Method]

ENTRY_POINT_GROUP = "facerecon.eval_methods"

_REGISTRY: dict[str, tuple[str | Factory, str]] = {}


def register_method(name: str, factory: str | Factory, description: str = "",
                    overwrite: bool = False) -> None:
    """Add a method factory under `name` (a callable, or a lazy "package.module:attr" string)."""
    if not overwrite and name in _REGISTRY and _REGISTRY[name][0] is not factory:
        raise ValueError(f"evaluation method '{name}' is already registered (pass overwrite=True to replace it)")
    if isinstance(factory, str) and ":" not in factory:
        raise ValueError(f"lazy factory path must look like 'package.module:attr', got '{factory}'")
    _REGISTRY[name] = (factory, description)


def _import(path: str):
    mod, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise FaceReconError(f"cannot import '{path}': {e}") from e
    return obj


def _entry_points() -> dict:
    try:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # noqa: BLE001 - broken metadata must not break the built-in methods
        return {}


def available_methods() -> dict[str, str]:
    """name -> description of every registered (or entry-point) method."""
    out = {n: d for n, (_, d) in _REGISTRY.items()}
    for n, ep in _entry_points().items():
        out.setdefault(n, f"entry point {ep.value}")
    return dict(sorted(out.items()))


def get_factory(name: str) -> Factory:
    """The factory registered as `name`, or imported from a "package.module:attr" string."""
    if name in _REGISTRY:
        factory = _REGISTRY[name][0]
        return _import(factory) if isinstance(factory, str) else factory
    eps = _entry_points()
    if name in eps:
        return eps[name].load()
    if ":" in name:
        return _import(name)
    raise FaceReconError(
        f"unknown evaluation method '{name}'; known: {', '.join(available_methods()) or 'none'} "
        "(or give 'package.module:factory')"
    )


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
            detector = _import(detector)()
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


register_method("3ddfa", make_3ddfa, "3DDFA_V2 MobileNetV1x0.5 (our port); --boxes gt uses the roi box as-is")
register_method("default", "facerecon.detect.pipeline:eval_method",
                "facerecon's default detection pipeline (RetinaFace/FaceBoxes boxes + 3DDFA_V2 with TTA)")
register_method("fit", "facerecon.api:make_fit_method",
                "analysis-by-synthesis fit of the ICT model from the default pipeline's landmarks")
register_method("regress", "facerecon.api:make_regress_method", "the learned coefficient regressor alone")
register_method("regress+refine", "facerecon.api:make_regress_refine_method",
                "the regressor, then fitting from it (landmark + photometric stages)")
register_method("fit-photo", "facerecon.api:make_fit_photo_method",
                "the full fit: landmark stages + photometric stage through the renderer")
