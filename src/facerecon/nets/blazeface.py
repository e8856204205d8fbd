"""BlazeFace (MediaPipe's short-range face detector) in PyTorch, and the residual block and strict
TFLite weight loading that it shares with the FaceMesh landmark network (`nets/facemesh.py`).

Weights come from MediaPipe's Apache-2.0 ``face_detection_short_range.tflite`` (read by
`nets/tflite.py`). Layers follow TensorFlow's conventions: SAME padding puts the odd pixel at the
bottom/right; residual shortcuts are a 2×2 max-pool on stride 2 and zero channels appended when
the block widens.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import tflite


def pad_same(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow SAME padding of (B, C, H, W) for a k×k window at stride s (extra pixel after)."""
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class ResBlock(nn.Module):
    """act(pointwise(depthwise3x3(x, stride)) + shortcut(x)); shortcut = [max-pool 2×2 when
    stride 2] then zero channels appended up to `cout`. act: PReLU(cout) or ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, prelu: bool = True) -> None:
        super().__init__()
        self.stride, self.cin, self.cout = stride, cin, cout
        self.dw = nn.Conv2d(cin, cin, 3, stride, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout) if prelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw(self.dw(pad_same(x, 3, self.stride)))
        if self.stride == 2:
            x = F.max_pool2d(pad_same(x, 2, 2), 2)
        if self.cout > self.cin:
            x = F.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))
        return self.act(h + x)


def _conv_weight(a: np.ndarray, depthwise: bool) -> np.ndarray:
    # TFLite: conv OHWI, depthwise 1HWC; torch: OIHW and (C, 1, H, W).
    return a.transpose(3, 0, 1, 2) if depthwise else a.transpose(0, 3, 1, 2)


def block_names(prefix: str, dw: str, pw: str, act: str | None) -> dict[str, tuple[str, Callable]]:
    """State-dict keys of one `ResBlock` at `prefix` -> (TFLite layer name, converter)."""
    out = {
        f"{prefix}.dw.weight": (f"{dw}/Kernel", lambda a: _conv_weight(a, True)),
        f"{prefix}.dw.bias": (f"{dw}/Bias", np.asarray),
        f"{prefix}.pw.weight": (f"{pw}/Kernel", lambda a: _conv_weight(a, False)),
        f"{prefix}.pw.bias": (f"{pw}/Bias", np.asarray),
    }
    if act is not None:
        out[f"{prefix}.act.weight"] = (f"{act}/Alpha", lambda a: a.reshape(-1))
    return out


def conv_names(prefix: str, name: str) -> dict[str, tuple[str, Callable]]:
    """State-dict keys of a plain `nn.Conv2d` at `prefix` -> (TFLite layer name, converter)."""
    return {
        f"{prefix}.weight": (f"{name}/Kernel", lambda a: _conv_weight(a, False)),
        f"{prefix}.bias": (f"{name}/Bias", np.asarray),
    }


def _tflite_name(name: str) -> str:
    # Float16 files name the weight read by the op "<layer>/Kernel_dequantize"; float32 files "<layer>/Kernel".
    return name.removesuffix("_dequantize")


def load_tflite(net: nn.Module, path: str | os.PathLike, names: dict[str, tuple[str, Callable]],
                channel_pads: dict[str, int]) -> nn.Module:
    """Load `net`'s weights from a TFLite file strictly and return it in eval mode.

    names: every state-dict key of `net` -> (TFLite tensor name without "_dequantize", converter
           to the torch layout). channel_pads: the file's PAD constants (shortcut channel padding)
           -> the number of zero channels `net` appends there.
    Every weight constant the file's ops read must be used exactly once and every state-dict key
    filled (else `tflite.TFLiteError` naming the tensors), and shapes must agree.
    """
    model = tflite.read(path)
    used_by_ops = {i for op in model.ops for i in op.inputs[1:] if i in model.constants}
    consts = {_tflite_name(model.names[i]): model.constants[i] for i in used_by_ops}
    pads = {k: v for k, v in consts.items() if k.endswith("/Paddings")}
    weights = {k: v for k, v in consts.items() if k not in pads}
    # Shape constants of RESHAPE ops are structure, not weights.
    weights = {k: v for k, v in weights.items() if v.dtype.kind != "i"}
    wanted = {tf for tf, _ in names.values()}
    extra, missing = sorted(set(weights) - wanted), sorted(wanted - set(weights))
    sd_keys = set(net.state_dict())
    if extra or missing or set(names) != sd_keys:
        raise tflite.TFLiteError(
            f"{path}: weights do not match {type(net).__name__}: unused in the file {extra}, "
            f"missing from the file {missing}, unmapped keys {sorted(sd_keys ^ set(names))}")
    for k, n in channel_pads.items():
        p = pads.get(f"{k}/Paddings")
        if p is None or p.tolist() != [[0, 0], [0, 0], [0, 0], [0, n]]:
            raise tflite.TFLiteError(f"{path}: channel padding '{k}' is {None if p is None else p.tolist()}, "
                                     f"the network expects {n} zero channels appended")
    if set(pads) != {f"{k}/Paddings" for k in channel_pads}:
        raise tflite.TFLiteError(f"{path}: unexpected padding ops {sorted(pads)}")
    sd = {}
    for key, (tf_name, conv) in names.items():
        sd[key] = torch.from_numpy(np.array(conv(weights[tf_name]), dtype=np.float32, order="C"))
    net.load_state_dict(sd, strict=True)  # also checks every shape
    return net.eval()


# (cin, cout, stride) of the short-range BlazeFace's residual blocks, in order.
SHORT_RANGE_BLOCKS = (
    (24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2), (48, 56, 1),
    (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1), (88, 96, 2), (96, 96, 1), (96, 96, 1),
    (96, 96, 1), (96, 96, 1),
)


class BlazeFaceShortRange(nn.Module):
    """MediaPipe's short-range BlazeFace: 128×128 RGB in [-1, 1] -> 896 anchors' raw outputs.

    forward(x (B, 3, 128, 128)) -> (regressors (B, 896, 16), logits (B, 896)): per anchor
    [dx, dy, w, h, 6 × (kx, ky)] in 128-pixel units relative to the anchor centre, and the face
    logit. Anchors: 16×16 cells × 2 (stride 8), then 8×8 cells × 6 (stride 16), row-major.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 24, 5, 2)
        self.blocks = nn.ModuleList(ResBlock(i, o, s, prelu=False) for i, o, s in SHORT_RANGE_BLOCKS)
        self.cls8, self.reg8 = nn.Conv2d(88, 2, 1), nn.Conv2d(88, 32, 1)
        self.cls16, self.reg16 = nn.Conv2d(96, 6, 1), nn.Conv2d(96, 96, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.conv(pad_same(x, 5, 2)))
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i == 10:
                x8 = x
        b = x.shape[0]

        def flat(t: torch.Tensor, c: int) -> torch.Tensor:  # NHWC order, as the TFLite reshape
            return t.permute(0, 2, 3, 1).reshape(b, -1, c)

        reg = torch.cat([flat(self.reg8(x8), 16), flat(self.reg16(x), 16)], 1)
        cls = torch.cat([flat(self.cls8(x8), 1), flat(self.cls16(x), 1)], 1)[..., 0]
        return reg, cls

    @staticmethod
    def tflite_names() -> dict[str, tuple[str, Callable]]:
        names = conv_names("conv", "conv2d")
        for i in range(len(SHORT_RANGE_BLOCKS)):
            dw = "depthwise_conv2d" if i == 0 else f"depthwise_conv2d_{i}"
            names |= block_names(f"blocks.{i}", dw, f"conv2d_{i + 1}", None)
        for k in ("8", "16"):
            names |= conv_names(f"cls{k}", f"classificator_{k}") | conv_names(f"reg{k}", f"regressor_{k}")
        return names

    @classmethod
    def from_tflite(cls, path: str | os.PathLike) -> BlazeFaceShortRange:
        """The network with weights from ``face_detection_short_range.tflite`` (strict)."""
        pads, j = {}, 0
        for i, o, _ in SHORT_RANGE_BLOCKS:
            if o > i:
                pads["channel_padding" if j == 0 else f"channel_padding_{j}"] = o - i
                j += 1
        return load_tflite(cls(), path, cls.tflite_names(), pads)
