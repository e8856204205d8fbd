"""MobileFaceNet identity embeddings (for the identity-perceptual loss).

Structure of Xiaoccer/MobileFaceNet_Pytorch (``core/model.py``) with the same parameter names, so
its ``068.ckpt`` (asset ``mobilefacenet``, key ``net_state_dict``) loads strictly. The network takes
RGB faces aligned SphereFace-style to 112 (h) × 96 (w) pixels, normalised ``(x − 127.5) / 128``
with x in 0..255, and returns a 128-d embedding compared by cosine similarity.

`IdentityEncoder` wraps it for use inside losses: [0, 1] float images in, optional differentiable
warp to the 112×96 template (`geometry.transforms2d.warp_affine`), L2-normalised embeddings out;
weights frozen and BatchNorm always in inference mode.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from ..geometry.transforms2d import estimate_similarity_torch, warp_affine
from .checkpoint import load_strict

# SphereFace's 5-point template for 112×96 crops (eye, eye, nose tip, mouth corner, mouth corner;
# image left first). The published numbers are MATLAB (1-based) pixel coordinates.
SPHEREFACE_TEMPLATE_1BASED = ((30.2946, 51.6963), (65.5318, 51.5014), (48.0252, 71.7366),
                              (33.5493, 92.3655), (62.7299, 92.2041))
# The same template with pixel centres at integer 0-based coordinates (facerecon's convention).
TEMPLATE_112x96 = tuple((x - 1.0, y - 1.0) for x, y in SPHEREFACE_TEMPLATE_1BASED)
INPUT_SIZE = (112, 96)  # (height, width)

# (expansion t, channels c, repeats n, first stride s) — the MobileFaceNet paper's table.
BOTTLENECK_SETTING = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class ConvBlock(nn.Module):
    """conv (optionally depthwise) + BN (+ PReLU unless linear); keys ``conv``, ``bn``, ``prelu``."""

    def __init__(self, cin: int, cout: int, k, s: int, p, dw: bool = False, linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, groups=cin if dw else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = None if linear else nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class Bottleneck(nn.Module):
    """Inverted residual: 1×1 expand + BN + PReLU, 3×3 depthwise + BN + PReLU, 1×1 project + BN."""

    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hid = cin * t
        self.connect = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hid, 1, 1, 0, bias=False), nn.BatchNorm2d(hid), nn.PReLU(hid),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.PReLU(hid),
            nn.Conv2d(hid, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.connect else self.conv(x)


class MobileFaceNet(nn.Module):
    """(B, 3, 112, 96) normalised RGB -> (B, 128) raw (unnormalised) embedding.

    The 7×6 depthwise ``linear7`` layer fixes the input size: the last feature map must be 7×6.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.dw_conv1 = ConvBlock(64, 64, 3, 1, 1, dw=True)
        layers, cin = [], 64
        for t, c, n, s in BOTTLENECK_SETTING:
            for i in range(n):
                layers.append(Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*layers)
        self.conv2 = ConvBlock(128, 512, 1, 1, 0)
        self.linear7 = ConvBlock(512, 512, (7, 6), 1, 0, dw=True, linear=True)
        self.linear1 = ConvBlock(512, 128, 1, 1, 0, linear=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.dw_conv1(self.conv1(x)))
        x = self.linear1(self.linear7(self.conv2(x)))
        return torch.flatten(x, 1)


def load_mobilefacenet(weights: str | os.PathLike | None = None, verify: bool = False) -> MobileFaceNet:
    """A MobileFaceNet in eval mode with the checkpoint loaded strictly (every key matched).

    weights: a ``.ckpt`` path; None resolves asset ``mobilefacenet`` / ``mobilefacenet_068.ckpt``
    (raises `facerecon.errors.AssetError` when absent). verify: check the registry sha256.
    """
    from .. import assets

    if weights is None:
        weights = assets.path("mobilefacenet", "mobilefacenet_068.ckpt")
        if verify:
            assets.verify("mobilefacenet", "mobilefacenet_068.ckpt", weights)
    return load_strict(MobileFaceNet(), weights, key="net_state_dict")


def similarity_to_template(lm5: torch.Tensor, template=TEMPLATE_112x96) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) taking image
    landmarks to the template, as SphereFace's ``cp2tform(..., 'similarity')`` does
    (`geometry.transforms2d.estimate_similarity_torch`).

    lm5: (B, 5, 2) or (5, 2) pixels (x, y), pixel centres at integers. Returns (B, 2, 3) or (2, 3)
    mapping image pixels -> template pixels; differentiable in `lm5`.
    """
    dst = torch.as_tensor(template, dtype=lm5.dtype, device=lm5.device).expand_as(lm5)
    return estimate_similarity_torch(lm5, dst)


class IdentityEncoder(nn.Module):
    """Frozen MobileFaceNet for identity features.

    forward(images, affine=None) -> (B, 128) L2-normalised embeddings.
      images: (B, 3, H, W) float RGB in [0, 1].
      affine: (B, 2, 3) or (2, 3) image pixels -> 112×96 template pixels (e.g.
        `similarity_to_template(lm5)`); None means the images are already aligned crops (resized
        bilinearly to 112×96 when their size differs).
    flip: also embed the horizontally flipped crop and average (the source's evaluation uses both).
    Gradients flow to `images` and `affine`; the network's own weights are frozen, and
    ``train()`` never switches BatchNorm to batch statistics.
    """

    def __init__(self, weights: str | os.PathLike | None = None, flip: bool = True,
                 net: MobileFaceNet | None = None):
        super().__init__()
        self.net = net if net is not None else load_mobilefacenet(weights)
        self.flip = flip
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> IdentityEncoder:
        super().train(mode)
        self.net.eval()  # a loss network must not update or use batch statistics
        return self

    def align(self, images: torch.Tensor, affine: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] -> (B, 3, 112, 96) [0, 1] aligned crops."""
        if affine is not None:
            return warp_affine(images, affine, INPUT_SIZE)
        if tuple(images.shape[-2:]) != INPUT_SIZE:
            return F.interpolate(images, size=INPUT_SIZE, mode="bilinear", align_corners=False)
        return images

    def forward(self, images: torch.Tensor, affine: torch.Tensor | None = None) -> torch.Tensor:
        x = self.align(images, affine)
        x = (x * 255.0 - 127.5) / 128.0
        if self.flip:
            f = self.net(torch.cat([x, x.flip(-1)], 0))
            f = f[: x.shape[0]] + f[x.shape[0]:]
        else:
            f = self.net(x)
        return F.normalize(f, dim=1)
