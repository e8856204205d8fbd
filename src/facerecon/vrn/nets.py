"""VRN-unguided: stacked hourglasses whose output channels are the volume's depth slices.

Jackson et al. (ICCV 2017) use Newell's hourglass: a 7×7/2 stem and residual modules, two
hourglasses with intermediate supervision, and a 1×1 convolution to D = 200 channels; each output
channel is one slice of the 192 × 192 × 200 occupancy volume (logits; sigmoid -> occupancy). Here
the hourglasses run at half the input resolution and each stack's output is upsampled bilinearly
to the input size. `VRNConfig` parametrises size, slices, features, stacks and hourglass depth so
the reference size (`VRNConfig.full()`) stays constructible beside the reduced CPU one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VRNConfig:
    """size: input = output width/height px; slices: output channels D (depth slices);
    features: channels inside the hourglasses; stacks: hourglasses in sequence (intermediate
    supervision on each); depth: down-samplings per hourglass (size/2 must be divisible by 2**depth)."""

    size: int = 96
    slices: int = 100
    features: int = 64
    stacks: int = 1
    depth: int = 4

    @staticmethod
    def full() -> VRNConfig:
        """The paper's VRN-unguided: 192² input, 200 slices, 256 features, 2 hourglasses of depth 4."""
        return VRNConfig(size=192, slices=200, features=256, stacks=2, depth=4)

    @staticmethod
    def reduced() -> VRNConfig:
        """Our CPU configuration: 96² input, 100 slices (the same mm per slice), 64 features, 1 hourglass."""
        return VRNConfig()

    def to_dict(self) -> dict:
        return asdict(self)


class Residual(nn.Module):
    """Newell's bottleneck residual module (pre-activation): BN-ReLU-1×1, BN-ReLU-3×3, BN-ReLU-1×1 + skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(cout // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of `depth` levels: a residual branch at each scale, max-pool down, nearest up."""

    def __init__(self, depth: int, features: int):
        super().__init__()
        self.up = Residual(features, features)
        self.down = Residual(features, features)
        self.inner = Hourglass(depth - 1, features) if depth > 1 else Residual(features, features)
        self.after = Residual(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.after(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.up(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class VRN(nn.Module):
    """Image (B, 3, size, size) in [0, 1] -> per-stack volume logits, each (B, slices, size, size).

    `forward` returns the list of every stack's logits (training supervises all of them);
    `volume_logits` the last one (inference)."""

    def __init__(self, config: VRNConfig = VRNConfig()):
        super().__init__()
        c = config
        if c.size % (2 ** (c.depth + 1)):
            raise ValueError(f"VRN size {c.size} must be divisible by 2**(depth+1) = {2 ** (c.depth + 1)}")
        self.config = c
        f = c.features
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  Residual(64, 128), Residual(128, 128), Residual(128, f))
        self.hourglasses = nn.ModuleList(Hourglass(c.depth, f) for _ in range(c.stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(f, f), nn.Conv2d(f, f, 1), nn.BatchNorm2d(f), nn.ReLU(inplace=True))
            for _ in range(c.stacks))
        self.heads = nn.ModuleList(nn.Conv2d(f, c.slices, 1) for _ in range(c.stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(c.stacks - 1))
        self.merge_outputs = nn.ModuleList(nn.Conv2d(c.slices, f, 1) for _ in range(c.stacks - 1))
        # Mean (ImageNet-style) normalisation is part of the network, so callers pass [0, 1] RGB.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        size = self.config.size
        if image.shape[-2:] != (size, size):
            raise ValueError(f"VRN expects (B, 3, {size}, {size}) images, got {tuple(image.shape)}")
        x = self.stem((image - self.mean) / self.std)
        outs = []
        for i in range(self.config.stacks):
            feat = self.features[i](self.hourglasses[i](x))
            low = self.heads[i](feat)
            outs.append(F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False))
            if i + 1 < self.config.stacks:
                x = x + self.merge_features[i](feat) + self.merge_outputs[i](low)
        return outs

    def volume_logits(self, image: torch.Tensor) -> torch.Tensor:
        """(B, slices, size, size) logits of the last stack."""
        return self.forward(image)[-1]


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["VRN", "Hourglass", "Residual", "VRNConfig", "count_parameters"]
