"""MediaPipe's FaceMesh landmark network (``face_landmark.tflite``, Apache-2.0) in PyTorch.

192×192 RGB in [0, 1] -> 468 (x, y, z) points in input pixels plus a face-presence logit. A
PReLU residual backbone down to 6×6, then two heads: the landmarks (down to 3×3, one 3×3 conv
to 1404 values) and the face flag (the same shape, one output). Weights are read strictly from the
TFLite file (`nets/blazeface.load_tflite`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from .blazeface import ResBlock, block_names, conv_names, load_tflite, pad_same

# (cin, cout, stride) of the shared backbone's blocks (192² input -> 6×6×128).
BACKBONE = (
    (16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1),
    (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2), (128, 128, 1),
    (128, 128, 1),
)
NUM_POINTS = 468


class _Head(nn.Module):
    """[stride-2 block, (block)*]: 6×6×128 -> 3×3×128, then 1×1 conv to 32 + PReLU, a block, and a
    3×3 VALID conv to `out` values."""

    def __init__(self, extra_blocks: int, out: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ResBlock(128, 128, 2)] + [ResBlock(128, 128) for _ in range(extra_blocks)])
        self.reduce = nn.Conv2d(128, 32, 1)
        self.reduce_act = nn.PReLU(32)
        self.block32 = ResBlock(32, 32)
        self.out = nn.Conv2d(32, out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        x = self.block32(self.reduce_act(self.reduce(x)))
        return self.out(x).flatten(1)


class FaceMeshNet(nn.Module):
    """forward(x (B, 3, 192, 192) RGB in [0, 1]) -> (points (B, 468, 3), face_logit (B,)).

    points: x, y in pixels of the 192² input (pixel edges at 0 and 192, as MediaPipe's
    normalisation divides by 192), z in the same pixel units, relative (smaller = nearer).
    face_logit: sigmoid > 0.5 means a face is present.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 2)
        self.act = nn.PReLU(16)
        self.backbone = nn.ModuleList(ResBlock(i, o, s) for i, o, s in BACKBONE)
        self.landmarks = _Head(2, 3 * NUM_POINTS)
        self.face_flag = _Head(0, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.act(self.conv(pad_same(x, 3, 2)))
        for b in self.backbone:
            x = b(x)
        return self.landmarks(x).reshape(-1, NUM_POINTS, 3), self.face_flag(x)[:, 0]

    @staticmethod
    def tflite_names() -> dict[str, tuple[str, Callable]]:
        """State-dict key -> (TFLite tensor name, layout converter). The file numbers its layers in
        creation order: backbone block k uses depthwise_conv2d_k, conv2d_{k+1}, p_re_lu_{k+1}."""
        names = conv_names("conv", "conv2d_1")
        names["act.weight"] = ("p_re_lu_1/Alpha", lambda a: a.reshape(-1))
        for k in range(1, len(BACKBONE) + 1):
            names |= block_names(f"backbone.{k - 1}", f"depthwise_conv2d_{k}", f"conv2d_{k + 1}", f"p_re_lu_{k + 1}")
        # Landmark head: blocks 15-17, conv2d_19 + p_re_lu_19, block 18 (conv2d_20, p_re_lu_20), conv2d_21.
        for j, k in enumerate((15, 16, 17)):
            names |= block_names(f"landmarks.blocks.{j}", f"depthwise_conv2d_{k}", f"conv2d_{k + 1}", f"p_re_lu_{k + 1}")
        names |= conv_names("landmarks.reduce", "conv2d_19")
        names["landmarks.reduce_act.weight"] = ("p_re_lu_19/Alpha", lambda a: a.reshape(-1))
        names |= block_names("landmarks.block32", "depthwise_conv2d_18", "conv2d_20", "p_re_lu_20")
        names |= conv_names("landmarks.out", "conv2d_21")
        # Face-flag head.
        names |= block_names("face_flag.blocks.0", "depthwise_conv2d_23", "conv2d_28", "p_re_lu_26")
        names |= conv_names("face_flag.reduce", "conv2d_29")
        names["face_flag.reduce_act.weight"] = ("p_re_lu_27/Alpha", lambda a: a.reshape(-1))
        names |= block_names("face_flag.block32", "depthwise_conv2d_24", "conv2d_30", "p_re_lu_28")
        names |= conv_names("face_flag.out", "conv2d_31")
        return names

    @classmethod
    def from_tflite(cls, path: str | os.PathLike) -> FaceMeshNet:
        """The network with weights from ``face_landmark.tflite`` (strict)."""
        pads = {f"channel_padding_{j}": 16 * 2 ** (j - 1) for j in (1, 2, 3)}
        return load_tflite(cls(), path, cls.tflite_names(), pads)

