"""MobileNetV1 as used by 3DDFA_V2 (Howard et al. 2017), with 3DDFA_V2's layer names so that its
checkpoints (``mb05_120x120.pth``) load strictly.

Layout (width factor w, 120×120 input): conv1 3×3 s2 → bn1 → ReLU, then 13 depthwise-separable
blocks ``dw2_1 … dw6`` (3×3 depthwise → BN → ReLU → 1×1 pointwise → BN → ReLU), global average
pool, and two linear heads on the 1024·w features: ``fc_param`` (62 3DMM parameters, whitened)
and ``fc_lm`` (136 = 68×2 landmarks, trained as an auxiliary head; 3DDFA_V2's inference ignores it).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import AssetError
from .checkpoint import strip_dataparallel

# (name, in_channels, out_channels, stride) at width 1.0, in 3DDFA_V2's order.
_BLOCKS = (
    ("dw2_1", 32, 64, 1),
    ("dw2_2", 64, 128, 2),
    ("dw3_1", 128, 128, 1),
    ("dw3_2", 128, 256, 2),
    ("dw4_1", 256, 256, 1),
    ("dw4_2", 256, 512, 2),
    ("dw5_1", 512, 512, 1),
    ("dw5_2", 512, 512, 1),
    ("dw5_3", 512, 512, 1),
    ("dw5_4", 512, 512, 1),
    ("dw5_5", 512, 512, 1),
    ("dw5_6", 512, 1024, 2),
    ("dw6", 1024, 1024, 1),
)


class DepthWiseBlock(nn.Module):
    """3×3 depthwise conv (stride s) + BN + ReLU, then 1×1 pointwise conv + BN + ReLU.

    (N, cin, H, W) -> (N, cout, ceil(H/s), ceil(W/s)).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """3DDFA_V2's MobileNetV1 regressor.

    forward: (N, 3, H, W) float (BGR, (x − 127.5)/128 for the 3DDFA_V2 weights) -> (N, num_params)
    whitened parameters. `landmark_head(x)` gives the auxiliary (N, num_lm) output.
    """

    def __init__(self, widen_factor: float = 0.5, num_params: int = 62, num_lm: int = 136, in_channels: int = 3):
        super().__init__()
        w = widen_factor
        c0 = int(32 * w)
        self.conv1 = nn.Conv2d(in_channels, c0, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        for name, cin, cout, stride in _BLOCKS:
            self.add_module(name, DepthWiseBlock(int(cin * w), int(cout * w), stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        feat = int(1024 * w)
        self.fc_param = nn.Linear(feat, num_params)
        # Present in the checkpoint; defined so that loading is strict, unused by `forward`.
        self.fc_lm = nn.Linear(feat, num_lm) if num_lm else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 1024·w) pooled features."""
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in _BLOCKS:
            x = getattr(self, name)(x)
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_param(self.features(x))

    def landmark_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc_lm is None:
            raise RuntimeError("this MobileNetV1 was built without the fc_lm head (num_lm=0)")
        return self.fc_lm(self.features(x))


def load_3ddfa_mobilenet(path: str | os.PathLike, widen_factor: float = 0.5) -> MobileNetV1:
    """Build a MobileNetV1 and load a 3DDFA_V2 checkpoint strictly (every key must match).

    The checkpoint is ``{'epoch', 'state_dict'}`` with keys prefixed ``module.`` (DataParallel);
    the prefix is stripped. Returns the model in eval mode on CPU.
    """
    try:
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a corrupt / non-torch file
        raise AssetError(f"{path}: cannot read 3DDFA_V2 checkpoint ({e})") from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise AssetError(f"{path}: expected a dict with 'state_dict', got {type(ckpt).__name__}")
    sd = strip_dataparallel(sd)
    num_params = sd["fc_param.weight"].shape[0] if "fc_param.weight" in sd else 62
    num_lm = sd["fc_lm.weight"].shape[0] if "fc_lm.weight" in sd else 0
    model = MobileNetV1(widen_factor, num_params=num_params, num_lm=num_lm)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise AssetError(f"{path}: does not match MobileNetV1(widen_factor={widen_factor}): {e}") from None
    return model.eval()
