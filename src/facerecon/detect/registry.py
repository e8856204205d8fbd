"""`get_detector(name, **kw)`: one place that maps backend names to classes, imported lazily so
that an optional extra (mediapipe, dlib) is only needed when its backend is asked for."""

from __future__ import annotations

from importlib import import_module

# name -> (module relative to facerecon.detect, class name, one-line description)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "retinaface": ("retinaface", "RetinaFaceDetector", "RetinaFace-MobileNet0.25: boxes + 5 points"),
    "faceboxes": ("faceboxes", "FaceBoxesDetector", "FaceBoxes (3DDFA_V2's detector): boxes only"),
    "mediapipe": ("mediapipe", "MediaPipeLandmarker", "BlazeFace + FaceMesh 468 -> 68 points (asset: mediapipe-facemesh)"),
    "dlib": ("dlib", "DlibLandmarker", "dlib HOG + 68-point predictor (extra: dlib)"),
    "3ddfa": ("tddfa", "TDDFALandmarker", "3DDFA_V2 68-point landmarker (needs a box; pose + shape)"),
    "default": ("pipeline", "DefaultPipeline", "RetinaFace/FaceBoxes boxes + 3DDFA_V2 (+ FaceMesh blend) landmarks"),
    "fast": ("pipeline", "FastPipeline", "the default pipeline without test-time augmentation (the regressor's)"),
}
ALIASES = {"tddfa": "3ddfa", "3ddfa_v2": "3ddfa", "mp": "mediapipe"}


def available() -> list[str]:
    """Backend names `get_detector` accepts (aliases not included)."""
    return list(BACKENDS)


def get_detector(name: str = "default", **kw):
    """Build a backend by name; keyword arguments go to its constructor.

    Raises ValueError for an unknown name, MissingExtraError when the backend's optional
    package is not installed, AssetError when its weights are missing.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise ValueError(f"unknown detector '{name}'; choose from: {', '.join(BACKENDS)}")
    module, cls, _ = BACKENDS[key]
    return getattr(import_module(f"{__package__}.{module}"), cls)(**kw)


def resolve_detector(spec):
    """A backend name (built with `get_detector`) or an already-built detector object, as given.
    ("auto", the method's own choice, is resolved by the API, which knows the method.)"""
    return get_detector(spec) if isinstance(spec, str) else spec
