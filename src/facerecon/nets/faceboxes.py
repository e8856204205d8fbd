"""FaceBoxes (Zhang et al. 2017) as 3DDFA_V2 ships it (`FaceBoxesProd.pth`).

Names follow 3DDFA_V2's `FaceBoxes/models/faceboxes.py` so the 174-key state dict loads strictly.
Input: (B, 3, H, W) float32 **BGR** minus (104, 117, 123). Outputs box regressions and 2-class
scores per anchor; no landmarks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_strict

MIN_SIZES = ((32, 64, 128), (256,), (512,))
STEPS = (32, 64, 128)
VARIANCES = (0.1, 0.2)
MEAN_BGR = (104.0, 117.0, 123.0)
# Small anchors are tiled densely inside a cell (paper's "anchor densification"): offsets in cells.
_DENSE = {32: (0.0, 0.25, 0.5, 0.75), 64: (0.0, 0.5)}


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class CRelu(nn.Module):
    """conv+bn then concat(x, -x) and ReLU: doubles the channels cheaply in the first layers."""

    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(torch.cat([x, -x], 1))


class Inception(nn.Module):
    """128 -> 128 channels: 1x1, avgpool+1x1, 1x1+3x3, 1x1+3x3+3x3 branches (32 each)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(128, 32, kernel_size=1, padding=0)
        self.branch1x1_2 = BasicConv2d(128, 32, kernel_size=1, padding=0)
        self.branch3x3_reduce = BasicConv2d(128, 24, kernel_size=1, padding=0)
        self.branch3x3 = BasicConv2d(24, 32, kernel_size=3, padding=1)
        self.branch3x3_reduce_2 = BasicConv2d(128, 24, kernel_size=1, padding=0)
        self.branch3x3_2 = BasicConv2d(24, 32, kernel_size=3, padding=1)
        self.branch3x3_3 = BasicConv2d(32, 32, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b2 = self.branch1x1_2(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        b3 = self.branch3x3(self.branch3x3_reduce(x))
        b4 = self.branch3x3_3(self.branch3x3_2(self.branch3x3_reduce_2(x)))
        return torch.cat([b1, b2, b3, b4], 1)


class FaceBoxesNet(nn.Module):
    """forward(x: (B,3,H,W)) -> (loc (B,N,4), scores (B,N,2)); softmax probabilities in eval mode."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = CRelu(3, 24, kernel_size=7, stride=4, padding=3)
        self.conv2 = CRelu(48, 64, kernel_size=5, stride=2, padding=2)
        self.inception1 = Inception()
        self.inception2 = Inception()
        self.inception3 = Inception()
        self.conv3_1 = BasicConv2d(128, 128, kernel_size=1, stride=1, padding=0)
        self.conv3_2 = BasicConv2d(128, 256, kernel_size=3, stride=2, padding=1)
        self.conv4_1 = BasicConv2d(256, 128, kernel_size=1, stride=1, padding=0)
        self.conv4_2 = BasicConv2d(128, 256, kernel_size=3, stride=2, padding=1)
        self.loc = nn.Sequential(
            nn.Conv2d(128, 21 * 4, 3, padding=1), nn.Conv2d(256, 4, 3, padding=1), nn.Conv2d(256, 4, 3, padding=1)
        )
        self.conf = nn.Sequential(
            nn.Conv2d(128, 21 * num_classes, 3, padding=1),
            nn.Conv2d(256, num_classes, 3, padding=1),
            nn.Conv2d(256, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        x = F.max_pool2d(self.conv2(x), kernel_size=3, stride=2, padding=1)
        s1 = self.inception3(self.inception2(self.inception1(x)))
        s2 = self.conv3_2(self.conv3_1(s1))
        s3 = self.conv4_2(self.conv4_1(s2))
        b = x.shape[0]
        loc = torch.cat([lc(s).permute(0, 2, 3, 1).reshape(b, -1) for lc, s in zip(self.loc, (s1, s2, s3))], 1)
        conf = torch.cat([cf(s).permute(0, 2, 3, 1).reshape(b, -1) for cf, s in zip(self.conf, (s1, s2, s3))], 1)
        loc = loc.view(b, -1, 4)
        conf = conf.view(b, -1, self.num_classes)
        if not self.training:
            conf = F.softmax(conf, dim=-1)
        return loc, conf


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors for an input of (height, width): (N, 4) float32 [cx, cy, w, h] normalised.

    Per stride-32 cell: 16 anchors of 32 px (4x4 grid), 4 of 64 px (2x2), 1 of 128 px; one anchor
    per cell at strides 64 (256 px) and 128 (512 px) — 21 + 1 + 1, the order the heads emit.
    """
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ii, jj = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cell = []
        for s in sizes:
            offs = _DENSE.get(s, (0.5,))
            for oy in offs:  # rows outer, columns inner, as the source's product(dense_cy, dense_cx)
                for ox in offs:
                    cx = (jj + ox) * step / width
                    cy = (ii + oy) * step / height
                    cell.append(np.stack([cx, cy, np.full_like(cx, s / width, dtype=float),
                                          np.full_like(cx, s / height, dtype=float)], -1))
        out.append(np.stack(cell, axis=2).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def load_faceboxes(weights: str | Path | None = None) -> FaceBoxesNet:
    """Build the network and load `FaceBoxesProd.pth` strictly; eval mode."""
    if weights is None:
        from ..assets import path

        weights = path("3ddfa-v2", "FaceBoxesProd.pth")
    return load_strict(FaceBoxesNet(), weights)
