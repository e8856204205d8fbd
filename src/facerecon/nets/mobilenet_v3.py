"""MobileNetV3-Large/Small with torchvision's module names (``features.i.block.j...``,
``classifier.0/3``), so torchvision checkpoints load strictly (see
`facerecon.nets.resnet.load_torchvision_state_dict`).

Architecture, BatchNorm settings (eps 1e-3, momentum 0.01) and initialisation follow
``torchvision.models.mobilenetv3`` at width multiplier 1.0, no dilation.

Input (B, 3, H, W) float. ``forward_features`` returns (B, 1280) for Large, (B, 1024) for Small:
the pooled last convolution passed through ``classifier.0`` (Linear) + Hardswish, i.e. everything
except the final ImageNet classifier layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    # Same rounding as torchvision/TF so channel counts (hence checkpoint shapes) agree.
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


class ConvNormAct(nn.Sequential):
    """conv + BN (+ activation): keys ``0.weight``, ``1.*`` like torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   _BN(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout


class SqueezeExcitation(nn.Module):
    """torchvision's SE block: avgpool → fc1 (1×1) → ReLU → fc2 (1×1) → Hardsigmoid → scale."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


@dataclass(frozen=True)
class BlockConfig:
    cin: int
    kernel: int
    expanded: int
    cout: int
    use_se: bool
    hardswish: bool
    stride: int


class InvertedResidual(nn.Module):
    def __init__(self, c: BlockConfig):
        super().__init__()
        act = nn.Hardswish if c.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if c.expanded != c.cin:
            layers.append(ConvNormAct(c.cin, c.expanded, 1, act=act))
        layers.append(ConvNormAct(c.expanded, c.expanded, c.kernel, c.stride, groups=c.expanded, act=act))
        if c.use_se:
            layers.append(SqueezeExcitation(c.expanded, _make_divisible(c.expanded // 4, 8)))
        layers.append(ConvNormAct(c.expanded, c.cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = c.stride == 1 and c.cin == c.cout
        self.out_channels = c.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


# (cin, kernel, expanded, cout, SE, hardswish, stride) — torchvision's _mobilenet_v3_conf, width 1.0.
_LARGE = [
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1),
]
_SMALL = [
    (16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1),
]
_VARIANTS = {"large": (_LARGE, 1280), "small": (_SMALL, 1024)}


class MobileNetV3(nn.Module):
    """torchvision-layout MobileNetV3.

    variant: "large" or "small".
    num_classes: size of the final classifier layer (``classifier.3``); None omits it (and its
        dropout), leaving ``classifier`` = Linear + Hardswish so ``forward`` returns features.
    """

    def __init__(self, variant: str = "large", num_classes: int | None = 1000, dropout: float = 0.2):
        super().__init__()
        try:
            conf, last_channel = _VARIANTS[variant]
        except KeyError:
            raise ValueError(f"unknown MobileNetV3 variant '{variant}'; use 'large' or 'small'") from None
        blocks = [BlockConfig(*c) for c in conf]
        layers: list[nn.Module] = [ConvNormAct(3, blocks[0].cin, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(c) for c in blocks]
        last_conv = 6 * blocks[-1].cout
        layers.append(ConvNormAct(blocks[-1].cout, last_conv, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head: list[nn.Module] = [nn.Linear(last_conv, last_channel), nn.Hardswish(inplace=True)]
        if num_classes is not None:
            head += [nn.Dropout(dropout, inplace=True), nn.Linear(last_channel, num_classes)]
        self.classifier = nn.Sequential(*head)
        self.feature_dim = last_channel
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, feature_dim)."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return F.hardswish(self.classifier[0](x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenet_v3_large(num_classes: int | None = 1000) -> MobileNetV3:
    return MobileNetV3("large", num_classes)


def mobilenet_v3_small(num_classes: int | None = 1000) -> MobileNetV3:
    return MobileNetV3("small", num_classes)
