"""RetinaFace with a MobileNetV1x0.25 backbone (the structure of biubug6's Pytorch_Retinaface).

Module and parameter names follow that implementation so its `mobilenet0.25_Final.pth` state dict
loads strictly (300 keys, no prefix). Input: (B, 3, H, W) float32 **BGR** minus (104, 117, 123),
no scaling. Outputs per anchor: box regressions, 2-class scores (softmaxed in eval mode) and
5-landmark regressions, anchors ordered as `prior_boxes` generates them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_strict

# cfg_mnet of the source: anchors per level, strides, SSD variances.
MIN_SIZES = ((10, 20), (32, 64), (128, 256))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
MEAN_BGR = (104.0, 117.0, 123.0)


def _conv_bn(inp: int, oup: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(leaky, inplace=True)
    )


def _conv_bn_no_relu(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, 1, 1, bias=False), nn.BatchNorm2d(oup))


def _conv_bn1x1(inp: int, oup: int, leaky: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(leaky, inplace=True)
    )


def _conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.0) -> nn.Sequential:
    # Indices 0,1,(2),3,4,(5) carry the state-dict names: depthwise conv+bn, pointwise conv+bn.
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(leaky, inplace=True),
    )


class MobileNetV1x025(nn.Module):
    """Backbone: (B,3,H,W) -> strides 8/16/32 feature maps with 64/128/256 channels."""

    def __init__(self, slope: float = 0.0) -> None:
        super().__init__()
        a = slope
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2, leaky=a),
            _conv_dw(8, 16, 1, a),
            _conv_dw(16, 32, 2, a),
            _conv_dw(32, 32, 1, a),
            _conv_dw(32, 64, 2, a),
            _conv_dw(64, 64, 1, a),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2, a), *[_conv_dw(128, 128, 1, a) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2, a), _conv_dw(256, 256, 1, a))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return [c1, c2, c3]


class FPN(nn.Module):
    """Top-down feature pyramid: three maps -> three maps of `out_ch` channels (nearest upsampling)."""

    def __init__(self, in_chs: tuple[int, int, int] = (64, 128, 256), out_ch: int = 64, slope: float = 0.0) -> None:
        super().__init__()
        leaky = slope
        self.output1 = _conv_bn1x1(in_chs[0], out_ch, leaky)
        self.output2 = _conv_bn1x1(in_chs[1], out_ch, leaky)
        self.output3 = _conv_bn1x1(in_chs[2], out_ch, leaky)
        self.merge1 = _conv_bn(out_ch, out_ch, leaky=leaky)
        self.merge2 = _conv_bn(out_ch, out_ch, leaky=leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 (stacked 3x3) branches concatenated."""

    def __init__(self, in_ch: int, out_ch: int, slope: float = 0.0) -> None:
        super().__init__()
        leaky = slope
        self.conv3X3 = _conv_bn_no_relu(in_ch, out_ch // 2)
        self.conv5X5_1 = _conv_bn(in_ch, out_ch // 4, leaky=leaky)
        self.conv5X5_2 = _conv_bn_no_relu(out_ch // 4, out_ch // 4)
        self.conv7X7_2 = _conv_bn(out_ch // 4, out_ch // 4, leaky=leaky)
        self.conv7x7_3 = _conv_bn_no_relu(out_ch // 4, out_ch // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.conv3X3(x)
        c5_1 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([c3, c5, c7], dim=1))


class _Head(nn.Module):
    """1x1 conv predicting `per_anchor` values for each of `anchors` anchors; (B,C,h,w) -> (B,h*w*A,per)."""

    def __init__(self, in_ch: int, anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(in_ch, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """RetinaFace-MobileNet0.25.

    forward(x: (B,3,H,W) BGR-minus-mean) -> (loc (B,N,4), scores (B,N,2), landmarks (B,N,10)),
    N = number of `prior_boxes(H, W)`; scores are softmax probabilities in eval mode and logits
    in train mode.

    slope: negative slope of every activation. The shipped checkpoint (Face-Detector-1MB-with-landmark)
    was trained with plain ReLU (0.0); Pytorch_Retinaface's own mobilenet0.25 uses LeakyReLU 0.1.
    """

    def __init__(self, in_channel: int = 32, out_channel: int = 64, anchors: int = 2, slope: float = 0.0) -> None:
        super().__init__()
        self.body = MobileNetV1x025(slope)
        in_chs = (in_channel * 2, in_channel * 4, in_channel * 8)
        self.fpn = FPN(in_chs, out_channel, slope)
        self.ssh1 = SSH(out_channel, out_channel, slope)
        self.ssh2 = SSH(out_channel, out_channel, slope)
        self.ssh3 = SSH(out_channel, out_channel, slope)
        self.ClassHead = nn.ModuleList([_Head(out_channel, anchors, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(out_channel, anchors, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(out_channel, anchors, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.fpn(self.body(x))
        feats = [self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        cls = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        ldm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        if not self.training:
            cls = F.softmax(cls, dim=-1)
        return loc, cls, ldm


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors for an input of (height, width): (N, 4) float32 [cx, cy, w, h] normalised by (W, H, W, H).

    Order: level (stride 8, 16, 32), then row, column, then anchor size — the order of the heads'
    outputs. N = sum over strides s of ceil(H/s) * ceil(W/s) * 2.
    """
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height, (np.arange(fw) + 0.5) * step / width,
                             indexing="ij")
        per = [np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cx, s / height)], -1) for s in sizes]
        out.append(np.stack(per, axis=2).reshape(-1, 4))  # (fh, fw, anchors, 4): anchor fastest
    return np.concatenate(out).astype(np.float32)


def match_anchors(boxes: torch.Tensor, lm5: torch.Tensor, priors: torch.Tensor, iou_pos: float = 0.35):
    """SSD/RetinaFace training targets of one image.

    boxes (G, 4) [x0, y0, x1, y1] and lm5 (G, 5, 2), both normalised by the input (W, H, W, H) like
    `priors` (N, 4) [cx, cy, w, h] (`prior_boxes`). An anchor is positive when its IoU with a box
    reaches `iou_pos` (0.35, the source's threshold); each box's best anchor is positive whatever its
    IoU. Returns (pos (N,) bool, which (N,) long: the box each anchor regresses to, loc (N, 4) and
    lm (N, 10) encoded with `VARIANCES` — the inverse of `detect.nms.decode_boxes` /
    `decode_landmarks`).
    """
    corners = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    lt = torch.max(boxes[:, None, :2], corners[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], corners[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_b = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    area_p = (corners[:, 2:] - corners[:, :2]).prod(-1)
    iou = inter / (area_b[:, None] + area_p[None] - inter)  # (G, N)
    best_iou, which = iou.max(0)
    best_prior = iou.argmax(1)
    which[best_prior] = torch.arange(len(boxes))
    best_iou[best_prior] = 2.0
    pos = best_iou >= iou_pos
    b = boxes[which]
    centre, size = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]).clamp(min=1e-6)
    v0, v1 = VARIANCES
    loc = torch.cat([(centre - priors[:, :2]) / (v0 * priors[:, 2:]), torch.log(size / priors[:, 2:]) / v1], 1)
    lm = (lm5[which] - priors[:, None, :2]) / (v0 * priors[:, None, 2:])
    return pos, which, loc, lm.reshape(-1, 10)


def multibox_loss(loc: torch.Tensor, cls: torch.Tensor, lm: torch.Tensor, targets: list,
                  neg_ratio: int = 7, loc_weight: float = 2.0) -> tuple[torch.Tensor, dict]:
    """RetinaFace's training loss for a batch: smooth-L1 box and landmark regression on positive
    anchors, cross-entropy on the positives and the `neg_ratio` x as many hardest negatives (online
    hard example mining), all divided by the number of positives.

    loc (B, N, 4), cls (B, N, 2) logits (the net in train mode), lm (B, N, 10); targets: per image
    (pos, which, loc_t, lm_t, lm_w) with `match_anchors`'s outputs and lm_w (G,) the weight of each
    box's landmarks (0: unlabelled). Returns (loss, {"loc", "cls", "lm": floats}).
    """
    l_loc = l_cls = l_lm = loc.new_zeros(())
    n_pos = 0
    for k, (pos, which, loc_t, lm_t, lm_w) in enumerate(targets):
        n = int(pos.sum())
        n_pos += n
        l_loc = l_loc + F.smooth_l1_loss(loc[k][pos], loc_t[pos], reduction="sum")
        w = lm_w[which][pos][:, None]
        l_lm = l_lm + (F.smooth_l1_loss(lm[k][pos], lm_t[pos], reduction="none") * w).sum()
        ce = F.cross_entropy(cls[k], pos.long(), reduction="none")
        neg = ce.detach().masked_fill(pos, -1.0)
        hard = neg.topk(min(neg_ratio * max(n, 1), int((~pos).sum()))).indices
        l_cls = l_cls + ce[pos].sum() + ce[hard].sum()
    n_pos = max(n_pos, 1)
    parts = {k: float(v.detach()) / n_pos for k, v in (("loc", l_loc), ("cls", l_cls), ("lm", l_lm))}
    return (loc_weight * l_loc + l_cls + l_lm) / n_pos, parts


def load_retinaface(weights: str | Path | None = None) -> RetinaFace:
    """Build the network and load `mobilenet0.25_Final.pth` strictly (every key must match); eval mode."""
    if weights is None:
        from ..assets import path

        weights = path("retinaface", "mobilenet0.25_Final.pth")
    return load_strict(RetinaFace(), weights)  # some copies carry a DataParallel prefix
