"""Backbone factory and the zero-initialised coefficient head (Deep3D's R-Net recipe).

Deep3D regresses its coefficient vector with a backbone whose final layer is initialised to zero
(weights and bias), so an untrained network outputs all-zero coefficients: the mean face, zero
pose, neutral light. Training then starts from a sensible render instead of noise.
"""

from __future__ import annotations

import torch
from torch import nn

from .mobilenet_v3 import MobileNetV3
from .resnet import resnet

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large", "mobilenet_v3_small")


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """A feature extractor without ImageNet classifier, and its feature size.

    name: one of `BACKBONES`. The module maps (B, 3, H, W) -> (B, feature_dim) (``forward``
    and ``forward_features`` agree); its parameter names are torchvision's, so
    `facerecon.nets.resnet.load_torchvision_state_dict` loads a torchvision checkpoint into it.
    feature_dim: 512 (resnet18/34), 2048 (resnet50/101), 1280 (mobilenet_v3_large),
    1024 (mobilenet_v3_small).
    """
    if name.startswith("resnet"):
        m = resnet(name, num_classes=None)
    elif name == "mobilenet_v3_large":
        m = MobileNetV3("large", num_classes=None)
    elif name == "mobilenet_v3_small":
        m = MobileNetV3("small", num_classes=None)
    else:
        raise ValueError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    return m, m.feature_dim


class CoefficientHead(nn.Module):
    """Linear map (B, feature_dim) -> (B, n_out), weight and bias initialised to zero.

    Also accepts (B, feature_dim, 1, 1) (a pooled feature map), like Deep3D's 1×1-conv heads.
    """

    def __init__(self, feature_dim: int, n_out: int):
        super().__init__()
        self.fc = nn.Linear(feature_dim, n_out)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(features, 1))


class CoefficientNet(nn.Module):
    """backbone + `CoefficientHead`: (B, 3, H, W) -> (B, n_out). Untrained output is exactly 0."""

    def __init__(self, backbone: str | nn.Module, n_out: int, feature_dim: int | None = None):
        super().__init__()
        if isinstance(backbone, str):
            backbone, feature_dim = build_backbone(backbone)
        elif feature_dim is None:
            feature_dim = int(backbone.feature_dim)
        self.backbone = backbone
        self.head = CoefficientHead(feature_dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
