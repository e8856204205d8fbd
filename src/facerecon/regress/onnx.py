"""ONNX export of the regressor and an onnxruntime runner with the same `predict` signature.

`export_regressor_onnx(reg, "r.onnx")` writes the network (input "image" (B, 3, 224, 224) float
[0, 1], output "coefficients" (B, dim): the final flat vector, normalisation, output scaling and
expression clamp included) and a sidecar "r.json" with the regressor config (layout), so
`OnnxRegressor("r.onnx").predict(crops)` returns the same FaceParams as `Regressor.predict`.
Needs the onnx extra: ``pip install "facerecon[onnx]"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import AssetError, MissingExtraError
from ..io.atomic import write_text
from ..models.layout import FaceParams, ParamLayout
from ..nets.onnx_export import export_onnx
from .model import Regressor


def export_regressor_onnx(reg: Regressor, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export `reg` (eval mode, dynamic batch) to `path` + its config to `path` with suffix .json."""
    path = Path(path)
    reg = reg.eval()
    dev = next(reg.parameters()).device
    export_onnx(reg, torch.zeros(1, 3, 224, 224, device=dev), path, dynamic_batch=True, opset=opset,
                input_name="image", output_name="coefficients")
    write_text(path.with_suffix(".json"), json.dumps(reg.config(), indent=1))
    return path


class OnnxRegressor:
    """onnxruntime inference of an exported regressor.

    path: the .onnx file (its .json sidecar gives the layout). threads: ORT intra-op threads.
    predict(crops (B, 224, 224, 3) uint8) -> FaceParams (float32, CPU), like `Regressor.predict`.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 2, providers=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingExtraError("onnx", "onnxruntime", "ONNX inference") from None
        path = Path(path)
        side = path.with_suffix(".json")
        if not path.is_file() or not side.is_file():
            raise AssetError(f"ONNX regressor needs {path} and its config {side}")
        cfg = json.loads(side.read_text())
        self.layout = ParamLayout.from_dict(cfg["layout"])
        self.config = cfg
        self.model_name = cfg.get("model", "ict")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # No busy-waiting between ops: on a shared CPU spinning threads steal time from each other.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(os.fspath(path), so, providers=providers or ["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, 224, 224) float32 [0, 1] -> (B, dim) float32 flat coefficient vectors."""
        return self.session.run(["coefficients"], {"image": np.ascontiguousarray(x, np.float32)})[0]

    def predict(self, crops, batch_size: int = 32) -> FaceParams:
        """Aligned crops (B, 224, 224, 3) uint8 RGB (or one (224, 224, 3)) -> FaceParams (B)."""
        # numpy, not torch: on a busy CPU waking torch's intra-op pool costs more than the network.
        x = _crops_to_array(crops)
        out = np.concatenate([self.run(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)], 0)
        return self.layout.split(torch.from_numpy(out))


def _crops_to_array(crops) -> np.ndarray:
    """(B, H, W, 3) or (H, W, 3) uint8 (or float [0, 1]) -> (B, 3, H, W) float32 [0, 1]."""
    if torch.is_tensor(crops):
        crops = crops.detach().cpu().numpy()
    a = np.asarray(crops)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"crops must be (B, H, W, 3), got {a.shape}")
    x = a.transpose(0, 3, 1, 2).astype(np.float32)
    if a.dtype == np.uint8:
        x *= np.float32(1.0 / 255.0)
    return np.ascontiguousarray(x)


__all__ = ["OnnxRegressor", "export_regressor_onnx"]
