"""PRNet's encoder-decoder (Feng et al. 2018) and the extension's MobileNetV2 / ResNet-18 encoders.

All three share PRNet's decoder: 17 transposed convolutions from (B, 512·w, R/32, R/32) up to the
(B, 3, R, R) position map, BN + ReLU after each but the last (sigmoid). The network is fully
convolutional: R = 256 is the paper's input and map size (8 × 8 × 512 bottleneck), R = 128 the CPU
variant (4 × 4 × 512); any multiple of 32 works.

Deviation from PRNet's TensorFlow code: its stride-1 transposed convolutions are 4 × 4 "SAME",
which needs asymmetric padding; ours are 3 × 3 (the stride-2 ones are 4 × 4 as in the paper, which
double the size exactly). `width` scales the decoder's channels (1.0 = PRNet's 512 … 16).

Input: (B, 3, R, R) RGB in [0, 1]. Output: (B, 3, R, R) in (0, 1), the normalised position map
(`prnet.model.PositionNet` maps it to crop pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODERS = ("baseline", "mobilenetv2", "resnet18", "mobilenetv1_3ddfa")


class SamePadConv(nn.Module):
    """TF-style 'SAME' convolution (even kernels pad asymmetrically: more after than before)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, 0, bias=bias)
        self.k, self.stride = k, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = max(self.k - self.stride, 0)
        a = total // 2
        return self.conv(F.pad(x, (a, total - a, a, total - a)))


class ResBlock(nn.Module):
    """PRNet's residual block: 1×1 (C/2) → k×k stride s (C/2) → 1×1 (C), + shortcut, then BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 4):
        super().__init__()
        self.short = None if (stride == 1 and cin == cout) else nn.Conv2d(cin, cout, 1, stride)
        h = cout // 2
        self.body = nn.Sequential(
            nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
            SamePadConv(h, h, k, stride, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
            nn.Conv2d(h, cout, 1))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x if self.short is None else self.short(x)
        return F.relu(self.bn(self.body(x) + s), inplace=True)


class BaselineEncoder(nn.Sequential):
    """PRNet's encoder: a 4×4 convolution (16) and 10 residual blocks to (B, 512, R/32, R/32)."""

    out_channels = 512

    def __init__(self):
        layers = [SamePadConv(3, 16, 4, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        cin = 16
        for c in (32, 64, 128, 256, 512):
            layers += [ResBlock(cin, c, 2), ResBlock(c, c, 1)]
            cin = c
        super().__init__(*layers)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    out = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return out + [nn.ReLU6(inplace=True)] if act else out


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        h = cin * expand
        layers = [] if expand == 1 else _conv_bn(cin, h, 1)
        layers += _conv_bn(h, h, 3, stride, groups=h) + _conv_bn(h, cout, 1, act=False)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2Encoder(nn.Sequential):
    """MobileNetV2 (Sandler et al. 2018, width 1.0) to stride 32; its last 1×1 convolution gives 512
    channels (the decoder's input) instead of the classifier's 1280."""

    out_channels = 512
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self):
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(*_conv_bn(cin, 512, 1)))
        super().__init__(*layers)


class ResNet18Encoder(nn.Module):
    """torchvision's ResNet-18 (`nets.resnet`) up to layer4: (B, 512, R/32, R/32)."""

    out_channels = 512

    def __init__(self):
        super().__init__()
        from ..nets.resnet import resnet18

        self.net = resnet18(num_classes=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class TDDFAEncoder(nn.Module):
    """3DDFA_V2's MobileNetV1 ×0.5 (`nets.mobilenet_v1`) without its pooling: (B, 512, R/32, R/32).

    Not one of the extension's encoders: a face-trained start (asset ``3ddfa-v2``, `pretrained`)
    for short CPU runs, where the others, from scratch, learn little beyond the mean map. It takes
    3DDFA_V2's input normalisation (BGR, (x·255 − 127.5)/128)."""

    out_channels = 512

    def __init__(self, pretrained: bool = False):
        super().__init__()
        from ..nets.mobilenet_v1 import MobileNetV1, load_3ddfa_mobilenet

        if pretrained:
            from .. import assets

            net = load_3ddfa_mobilenet(assets.path("3ddfa-v2", "mb05_120x120.pth"))
        else:
            net = MobileNetV1(0.5, num_lm=0)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        from ..nets.mobilenet_v1 import _BLOCKS as blocks

        self.blocks = nn.Sequential(*[getattr(net, name) for name, *_ in blocks])

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        return (x.flip(1) * 255.0 - 127.5) / 128.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.relu(self.bn1(self.conv1(x))))


def _deconv(cin: int, cout: int, stride: int, last: bool = False) -> nn.Sequential:
    if stride == 2:
        conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=last)
    else:
        conv = nn.ConvTranspose2d(cin, cout, 3, 1, 1, bias=last)
    if last:
        return nn.Sequential(conv, nn.Sigmoid())
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Decoder(nn.Sequential):
    """PRNet's 17 transposed convolutions (channels × `width`, stride-2 ones marked): 512, 256*, 256,
    256, 128*, 128, 128, 64*, 64, 64, 32*, 32, 16*, 16, 3, 3, 3 (sigmoid)."""

    PLAN = ((512, 1), (256, 2), (256, 1), (256, 1), (128, 2), (128, 1), (128, 1), (64, 2), (64, 1), (64, 1),
            (32, 2), (32, 1), (16, 2), (16, 1))

    def __init__(self, cin: int = 512, width: float = 1.0, sigmoid: bool = True, head: int = 3):
        layers, c = [], cin
        for ch, s in self.PLAN:
            out = max(8, round(ch * width))
            layers.append(_deconv(c, out, s))
            c = out
        # PRNet's last three layers are 3 channels wide (`head` 3); two ReLU'd 3-channel layers are a
        # bottleneck that learns slowly, so `head` can widen the two hidden ones.
        layers += [_deconv(c, head, 1), _deconv(head, head, 1), _deconv(head, 3, 1, last=True)]
        if not sigmoid:  # the caller applies it (PositionNet adds its mean-map prior first)
            layers[-1] = layers[-1][0]
        super().__init__(*layers)


class PRNet(nn.Module):
    """Encoder + PRNet decoder: (B, 3, R, R) RGB in [0, 1] -> (B, 3, R, R) in (0, 1).

    encoder: one of `ENCODERS`; width: decoder channel multiplier; sigmoid False: the last layer's raw
    output (logits). `config` rebuilds it."""

    def __init__(self, encoder: str = "resnet18", width: float = 1.0, sigmoid: bool = True, pretrained: bool = False,
                 head: int = 3):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown PRNet encoder {encoder!r}; choose one of {ENCODERS}")
        self.config = {"encoder": encoder, "width": float(width)} | ({"head": int(head)} if head != 3 else {})
        self.decoder = Decoder(512, width, sigmoid, head)
        init = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        if encoder == "mobilenetv1_3ddfa":
            self.encoder = TDDFAEncoder(pretrained)
        else:
            self.encoder = {"baseline": BaselineEncoder, "mobilenetv2": MobileNetV2Encoder,
                            "resnet18": ResNet18Encoder}[encoder]()
            init = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        for m in init:  # not the pretrained encoder's
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"PRNet input must be a multiple of 32 pixels, got {tuple(x.shape[-2:])}")
        prep = getattr(self.encoder, "prepare", None)
        return self.decoder(self.encoder(prep(x) if prep else (x - self.mean) / self.std))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["ENCODERS", "BaselineEncoder", "Decoder", "MobileNetV2Encoder", "PRNet", "ResNet18Encoder",
           "count_parameters"]
