"""ResNet-18/34/50/101 with torchvision's module names, so torchvision checkpoints load strictly.

torchvision cannot be imported here (its compiled ops need the CUDA torch), so the architecture is
written out; parameter names, shapes and initialisation follow ``torchvision.models.resnet``
(v1.5: the stride of a bottleneck sits on its 3×3 convolution).

Input: (B, 3, H, W) float, ImageNet-normalised when using ImageNet weights. ``forward_features``
returns (B, C) globally average-pooled features (C = 512 for 18/34, 2048 for 50/101);
``forward`` applies ``fc`` when the model has one (``num_classes`` not None).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .checkpoint import strip_dataparallel


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-layout ResNet.

    block: BasicBlock or Bottleneck; layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    num_classes: size of ``fc``; None builds no ``fc`` (a pure feature extractor: ``forward``
        then returns the pooled (B, feature_dim) features).
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int | None = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512 * block.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes) if num_classes is not None else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, n: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, feature_dim) pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.forward_features(x)
        return f if self.fc is None else self.fc(f)


_CONFIGS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def resnet(name: str, num_classes: int | None = 1000) -> ResNet:
    """``resnet("resnet50")`` etc.; see `ResNet` for ``num_classes``."""
    try:
        block, layers = _CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown ResNet '{name}'; known: {', '.join(_CONFIGS)}") from None
    return ResNet(block, layers, num_classes)


def resnet18(num_classes: int | None = 1000) -> ResNet:
    return resnet("resnet18", num_classes)


def resnet50(num_classes: int | None = 1000) -> ResNet:
    return resnet("resnet50", num_classes)


# Final classifier parameter prefixes in torchvision checkpoints (ResNet: fc, MobileNetV3: classifier).
_HEAD_PREFIXES = ("fc.", "classifier.")


def load_torchvision_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision checkpoint strictly, except that classifier weights (``fc.*``,
    ``classifier.*``) are skipped when `module` was built without that classifier.

    Every other key must match in name and shape; a ``module.`` prefix (DataParallel) is removed.
    Raises RuntimeError listing missing/unexpected keys otherwise.
    """
    sd = strip_dataparallel(state_dict)
    own = module.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(_HEAD_PREFIXES)}
    module.load_state_dict(sd, strict=True)
