"""The method protocol: how a reconstruction method plugs into facerecon.

A *method* turns aligned crops of detected faces into `Reconstruction`s:

    method = build_method("fit", context)            # a registered factory, called once
    recs = method.reconstruct(crops, faces, Request())  # B crops and their B detections

A *factory* is ``factory(context: MethodContext, **options) -> Method``; register it with
`register_method(name, factory_or_"package.module:attr", description)` or through an entry point
in the ``facerecon.methods`` group. The API, the CLI (`--method NAME`) and the evaluator
(`facerecon eval ... --method NAME`) then reach it by name, with no edit to any of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..align import Crop
from ..detect.base import Face
from ..errors import FaceReconError
from ..geometry.camera import PerspectiveCamera
from ..models import FaceParams, MorphableModel
from ..registry import Registry
from .result import Reconstruction


@dataclass(frozen=True)
class MethodContext:
    """What every method is built with: the morphable model (its topology, landmarks and layout are
    the common currency of all methods), the crop camera (Deep3D's 224² camera) and the torch device."""

    model: MorphableModel
    camera: PerspectiveCamera
    device: torch.device


@dataclass(frozen=True)
class Request:
    """How to reconstruct one batch.

    photometric: use the photo's pixels, not only landmarks (methods that always or never do ignore it).
    shared_identity: the batch shows ONE person (an image set or a video): one identity for all.
    temporal: video: weight of temporal smoothness over the batch, frames in order (0: off).
    start: FaceParams (batch B) to start from, e.g. a video window's overlap with the window before
        (methods without model parameters ignore it); None: the method's own start.
    keep_identity: keep `start`'s identity (and albedo) fixed: a video's later windows keep the one
        its first window estimated.
    """

    photometric: bool = True
    shared_identity: bool = False
    temporal: float = 0.0
    start: FaceParams | None = None
    keep_identity: bool = False


@runtime_checkable
class Method(Protocol):
    """A reconstruction method.

    name: its registered name. needs_landmarks: every Face must carry 68 landmarks (`lm68`).
    detector: the detector backend that "auto" picks for it ("default": boxes + 68 landmarks with
    test-time augmentation and FaceMesh points; "fast": one landmark pass, enough for a crop).
    reconstruct(crops, faces, request) -> one Reconstruction per crop, in order; crops and faces are
    lists of the same length B (aligned 224² crops and the detections they came from).
    """

    name: str
    needs_landmarks: bool
    detector: str

    def reconstruct(self, crops: list[Crop], faces: list[Face], request: Request) -> list[Reconstruction]: ...


Factory = Callable[..., Method]

METHODS = Registry("reconstruction method", group="facerecon.methods")


def register_method(name: str, factory: str | Factory, description: str = "", overwrite: bool = False) -> None:
    """Add a method factory under `name` (a callable, or a lazy "package.module:attr" string)."""
    METHODS.register(name, factory, description, overwrite)


def available_methods() -> dict[str, str]:
    """name -> description of every registered reconstruction method."""
    return METHODS.available()


def build_method(name: str, context: MethodContext, **options) -> Method:
    """Build the method `name` for `context` with `options` (keyword arguments of its factory).

    Raises FaceReconError for an unknown name or an option the factory does not take."""
    factory = METHODS.get(name)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        bad = sorted(set(options) - set(sig.parameters))
        if bad:
            raise FaceReconError(f"method '{name}' takes no option {', '.join(map(repr, bad))}")
    method = factory(context, **options)
    for attr in ("reconstruct", "needs_landmarks", "detector"):
        if not hasattr(method, attr):
            raise FaceReconError(f"method '{name}' ({type(method).__name__}) has no '{attr}' (see methods.base.Method)")
    return method


def check_landmarks(method: Method, crops: list[Crop]) -> None:
    """A clear error when a method that needs 68 landmarks gets a detection without them."""
    missing = [c.source or "image" for c in crops if c.lm68 is None]
    if missing and method.needs_landmarks:
        raise FaceReconError(f"{missing[0]}: the detector gave no 68 landmarks, which method '{method.name}' "
                             "needs; use a landmark detector (e.g. 'default') or method 'regress'")


__all__ = ["METHODS", "Method", "MethodContext", "Request", "available_methods", "build_method",
           "check_landmarks", "register_method"]
