"""A small face-part segmentation network (facerecon's own; `detect.parsing.FaceParser` drives it).

U-Net over depthwise-separable blocks: an encoder down to 1/16 of the input with two dilated blocks
at the bottom (a profile's parts need context across the whole face), a decoder that upsamples and
concatenates each encoder level up to 1/2 of the input. Logits are at 1/2 resolution, upsampled
bilinearly by the caller; an optional thin full-resolution level (`full_width` > 0) adds a residual
correction at the input's resolution (eyes and brows are a few pixels wide at 1/2), its head
zero-initialised so that a network trained without it starts from the same output. Plain torch, no
torchvision ops.

Input (B, 3, S, S) float RGB in [0, 1] (S = `PartNetConfig.input_size`, a multiple of 16);
output (B, C, S/2, S/2) logits (S × S with `full_width`), C = 9: background/other + the eight parts of
`models.annotations.PART_NAMES` (channel k + 1 = part k, the label-map encoding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class PartNetConfig:
    """input_size: S, the side the 224² crop is resized to; widths: channels of the 1/2, 1/4, 1/8 and
    1/16 levels; n_classes: background + parts; full_width: channels of the full-resolution level
    (0: none, logits at S/2)."""

    input_size: int = 128
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    n_classes: int = 9
    full_width: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> PartNetConfig:
        return cls(input_size=int(d["input_size"]), widths=tuple(int(w) for w in d["widths"]),
                   n_classes=int(d["n_classes"]), full_width=int(d.get("full_width", 0)))


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DSBlock(nn.Module):
    """Depthwise 3×3 (stride, dilation) + pointwise 1×1, each with BN + ReLU; residual when the shape
    is kept."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.dw = _cbr(cin, cin, 3, stride, groups=cin, dilation=dilation)
        self.pw = _cbr(cin, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


class PartNet(nn.Module):
    """(B, 3, S, S) RGB in [0, 1] -> (B, n_classes, S/2, S/2) logits ((B, n_classes, S, S) when
    `config.full_width` > 0)."""

    def __init__(self, config: PartNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or PartNetConfig()
        w1, w2, w3, w4 = cfg.widths
        self.stem = _cbr(3, w1, 3, stride=2)                                   # 1/2
        self.enc2 = nn.Sequential(DSBlock(w1, w2, 2), DSBlock(w2, w2))         # 1/4
        self.enc3 = nn.Sequential(DSBlock(w2, w3, 2), DSBlock(w3, w3))         # 1/8
        self.enc4 = nn.Sequential(DSBlock(w3, w4, 2), DSBlock(w4, w4, dilation=2), DSBlock(w4, w4, dilation=4))
        self.dec3 = DSBlock(w4 + w3, w3)
        self.dec2 = DSBlock(w3 + w2, w2)
        self.dec1 = DSBlock(w2 + w1, w1)
        self.head = nn.Conv2d(w1, cfg.n_classes, 1)
        if cfg.full_width:
            w0 = cfg.full_width
            self.stem0 = _cbr(3, w0, 3)                                        # 1/1
            self.dec0 = DSBlock(w1 + w0, w0)
            self.head0 = nn.Conv2d(w0, cfg.n_classes, 1)
            # Zero: the full-resolution level starts as "no correction" (warm starts keep their output).
            nn.init.zeros_(self.head0.weight)
            nn.init.zeros_(self.head0.bias)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * 4.0  # [0, 1] -> about [-2, 2]
        f1 = self.stem(x)
        f2 = self.enc2(f1)
        f3 = self.enc3(f2)
        f4 = self.enc4(f3)
        y = self.dec3(torch.cat([self._up(f4, f3), f3], 1))
        y = self.dec2(torch.cat([self._up(y, f2), f2], 1))
        y = self.dec1(torch.cat([self._up(y, f1), f1], 1))
        out = self.head(y)
        if self.config.full_width:
            f0 = self.stem0(x)
            out = self._up(out, f0) + self.head0(self.dec0(torch.cat([self._up(y, f0), f0], 1)))
        return out


__all__ = ["DSBlock", "PartNet", "PartNetConfig"]
