"""Learned coefficient regression (Deep3D's R-Net): model, training, inference, ONNX.

    from facerecon.regress import load_regressor, project_landmarks
    reg = load_regressor()                    # shipped weights, AssetError when absent
    params = reg.predict(crops)               # (B, 224, 224, 3) uint8 aligned crops -> FaceParams

Photo → face → crop → regressor → mesh: `FaceReconstructor(method="regress")` (facerecon.api).
Training: `facerecon train` (see docs/training.md); data: `facerecon preprocess`.
"""

from .model import REGRESSOR_BACKBONES, Regressor, crops_to_tensor
from .predict import (
    aggregate_identity,
    export_checkpoint,
    load_regressor,
    project_landmarks,
    save_weights,
)

__all__ = [
    "REGRESSOR_BACKBONES",
    "Regressor",
    "aggregate_identity",
    "crops_to_tensor",
    "export_checkpoint",
    "load_regressor",
    "project_landmarks",
    "save_weights",
]
