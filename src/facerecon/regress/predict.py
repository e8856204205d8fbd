"""Inference with a trained regressor: loading weights, landmarks in crop pixels, image sets.

    reg = load_regressor()                      # shipped weights (AssetError when absent)
    params = reg.predict(crops_uint8)           # (B, 224, 224, 3) aligned crops -> FaceParams
    lm = project_landmarks(model, params)       # (B, 68, 2) crop pixels
    ident = aggregate_identity(params, weights) # one identity for a photo set

Weights files (`save_weights`) are plain torch pickles of {"regressor": config, "model": state_dict,
"meta": {...}} loaded with ``weights_only=True``; training checkpoints (last.pt / best.pt) load too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..geometry.camera import PerspectiveCamera
from ..models.layout import FaceParams
from ..models.morphable import MorphableModel
from .model import Regressor

#: The shipped weights: repository `weights/` folder (source checkouts) or $FACERECON_ASSETS/regressor.
DEFAULT_WEIGHTS = "regressor_ict_mbv1.pt"


def default_weights_paths() -> list[Path]:
    """Where `load_regressor()` looks, in order."""
    from ..assets import weights_paths

    return weights_paths("FACERECON_REGRESSOR", f"regressor/{DEFAULT_WEIGHTS}", repo_rel=DEFAULT_WEIGHTS)


def load_regressor(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Regressor:
    """A Regressor in eval mode from a weights file or a training checkpoint (an `.onnx` export
    gives a `regress.onnx.OnnxRegressor`, which predicts the same way).

    path None: the shipped weights (see `default_weights_paths`); raises AssetError listing the
    paths searched when none exists, or when the file is not a regressor.
    """
    from ..nets.checkpoint import find_weights, load_state, read_weights

    path = find_weights(path, default_weights_paths(), "regressor",
                        ". Train one (docs/training.md) or set FACERECON_REGRESSOR=FILE.")
    if path.suffix.lower() == ".onnx":  # an exported network: onnxruntime, same `predict`
        from .onnx import OnnxRegressor

        return OnnxRegressor(path)
    ck = read_weights(path, "regressor", "regressor", checkpoints=True)
    reg = load_state(Regressor.from_config(ck["regressor"]), ck, path, ck["regressor"])
    reg.meta = ck.get("meta", {})
    return reg.to(device).eval()


def save_weights(reg: Regressor, path: str | os.PathLike, meta: dict | None = None, half: bool = False) -> Path:
    """Write a compact inference file (config + state dict, optionally float16), atomically."""
    from ..nets.checkpoint import write_weights

    return write_weights(path, "regressor", reg.config(), reg, meta, half)


def export_checkpoint(ckpt: str | os.PathLike, path: str | os.PathLike, meta: dict | None = None,
                      half: bool = False) -> Path:
    """Training checkpoint (last.pt / best.pt) -> inference weights file (no optimizer state)."""
    reg = load_regressor(ckpt)
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    m = {"step": int(ck.get("step", 0)), "train_config": ck.get("train_config", {}), **(meta or {})}
    return save_weights(reg, path, m, half=half)


def project_landmarks(model: MorphableModel, params: FaceParams,
                      camera: PerspectiveCamera | None = None) -> torch.Tensor:
    """FaceParams (B) -> (B, 68, 2) the model's 68 landmarks in crop pixels (Deep3D camera, 224²);
    `MorphableModel.project_landmarks` with that default camera."""
    return model.project_landmarks(params, camera or PerspectiveCamera.deep3d(224))


def aggregate_identity(params: FaceParams, weights=None) -> FaceParams:
    """One identity (and albedo) for a set of photos of the same person.

    params: FaceParams (B) from `predict`; weights: (B,) non-negative confidences (e.g. detection
    score × frontalness), None = equal. Identity and albedo become the weighted mean over the set;
    expression, pose and light stay per photo. Returns FaceParams (B).
    """
    B = params.batch_size
    w = torch.ones(B) if weights is None else torch.as_tensor(np.asarray(weights, np.float64)).float()
    if w.shape != (B,) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be (B,) = ({B},) non-negative with a positive sum")
    w = (w / w.sum()).to(params.identity)[:, None]
    ident = (params.identity * w).sum(0, keepdim=True).expand(B, -1)
    alb = (params.albedo * w).sum(0, keepdim=True).expand(B, -1) if params.albedo.shape[1] else params.albedo
    return params.replace(identity=ident.clone(), albedo=alb.clone())


class FlipTTA:
    """A regressor with flip test-time augmentation: `predict(crops)` regresses the crops and their
    left-right mirror images and returns `models.mirror.flip_average` of the two (identity,
    expression and pose averaged; albedo and light from the plain pass). Twice the network time.

    regressor: anything with `predict(crops uint8 (B, H, W, 3)) -> FaceParams` (torch or ONNX).
    model: the morphable model of its parameters. camera: the crop camera (default Deep3D 224²).
    """

    def __init__(self, regressor, model: MorphableModel, camera: PerspectiveCamera | None = None):
        from ..models.mirror import ParamMirror

        self.regressor = regressor
        self.mirror = ParamMirror(model, camera or PerspectiveCamera.deep3d(224))

    def predict(self, crops) -> FaceParams:
        from ..models.mirror import flip_average

        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        # One network call for both passes: batch 2B costs much less than two calls of B at small B.
        both = self.regressor.predict(np.concatenate([crops, crops[:, :, ::-1]]))
        B = len(crops)
        return flip_average(both[:B], both[B:], self.mirror)


__all__ = ["FlipTTA", "aggregate_identity", "default_weights_paths", "export_checkpoint", "load_regressor",
           "project_landmarks", "save_weights"]
