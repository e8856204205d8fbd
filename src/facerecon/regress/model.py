"""Deep3D's R-Net: a CNN that regresses a morphable model's coefficient vector from an aligned crop.

`Regressor(backbone, model)` maps (B, 3, 224, 224) float images in [0, 1] (the Deep3D crop made by
`facerecon.align.align_face`, `PerspectiveCamera.deep3d()`) to the model's flat coefficient vector
(`model.layout.dim` values, the layout's order and units), and `params(x)` splits it into
`FaceParams`. The head is zero-initialised (`nets.heads.CoefficientHead`): an untrained network
gives the mean face, frontal, at the origin (all parameters 0).

Output transform, per group, applied to the head's raw output r (all exactly 0 at r = 0):
- translation: r × `TRANSLATION_SCALE_MM` mm (so a unit step of the head is 10 mm, not 1 mm:
  rotation in radians and translation then learn at comparable rates);
- expression, for models whose `exp_prior == "unit_interval"` (ICT's ARKit weights in [0, 1]):
  clamp(r, 0, 1). In training mode the clamp is straight-through (forward clamped, gradient as
  identity) so a weight pushed below 0 can come back; `expression_overflow` gives the distance
  of r outside [0, 1] for a penalty. Gaussian-prior models (BFM) use r unchanged;
- everything else: r unchanged.

Input normalisation is inside the network: ImageNet mean/std for the torchvision-style backbones
(`nets.heads.BACKBONES`); for ``"mobilenet_v1_3ddfa"`` (3DDFA_V2's MobileNetV1 ×0.5, optionally
initialised from its face-trained weights, asset ``3ddfa-v2``) the input is resized to 128² and
normalised as 3DDFA_V2 does (BGR, (x·255 − 127.5)/128).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.layout import FaceParams
from ..models.morphable import MorphableModel
from ..nets.heads import BACKBONES, CoefficientNet, build_backbone

TRANSLATION_SCALE_MM = 10.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REGRESSOR_BACKBONES = BACKBONES + ("mobilenet_v1_3ddfa",)
INPUT_SIZE = 224


class _TDDFABackbone(nn.Module):
    """3DDFA_V2's MobileNetV1 ×0.5 as a feature extractor: (B, 3, H, W) [0, 1] RGB -> (B, 512).

    Resizes to `size`² and applies 3DDFA_V2's own normalisation (its weights expect BGR,
    (x − 127.5)/128 on 0..255), so its face-trained features are reusable as-is."""

    feature_dim = 512

    def __init__(self, pretrained: bool = True, size: int = 128):
        super().__init__()
        from ..nets.mobilenet_v1 import MobileNetV1, load_3ddfa_mobilenet

        if pretrained:
            from .. import assets

            net = load_3ddfa_mobilenet(assets.path("3ddfa-v2", "mb05_120x120.pth"))
        else:
            net = MobileNetV1(0.5, num_lm=0)
        net.fc_param = nn.Identity()  # heads are not used: features only
        net.fc_lm = None
        self.net = net
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=False)
        x = (x.flip(1) * 255.0 - 127.5) / 128.0
        return self.net.features(x)


class Regressor(nn.Module):
    """backbone + zero-initialised head → `model.layout.dim` coefficients → FaceParams.

    Args:
        backbone: a name of `REGRESSOR_BACKBONES` ("mobilenet_v3_small", "resnet18", "resnet50",
            "mobilenet_v1_3ddfa", ...).
        model: the MorphableModel whose layout, expression prior and landmarks it predicts for.
            Only its layout and `exp_prior` are kept (the model is not a submodule, so a
            checkpoint holds just the network).
        pretrained: for "mobilenet_v1_3ddfa", start from 3DDFA_V2's face-trained weights
            (asset ``3ddfa-v2``); the other backbones start from scratch (no ImageNet weights
            are shipped and nothing is downloaded).

    forward(x): (B, 3, 224, 224) float in [0, 1] RGB -> (B, layout.dim) final flat vector
    (translation in the layout's units, expression clamped). `params(x)` -> FaceParams.
    """

    def __init__(self, backbone: str = "mobilenet_v3_small", model: MorphableModel | None = None, *,
                 layout=None, exp_prior: str | None = None, pretrained: bool = True):
        super().__init__()
        self.model_name = "ict"
        if model is not None:
            layout, exp_prior = model.layout, model.exp_prior
            self.model_name = "bfm" if str(model.name).lower().startswith("bfm") else "ict"
        if layout is None:
            raise ValueError("Regressor needs a MorphableModel (or layout= and exp_prior=)")
        self.layout = layout
        self.exp_prior = exp_prior or "gaussian"
        self.backbone_name = backbone
        if backbone == "mobilenet_v1_3ddfa":
            bb = _TDDFABackbone(pretrained=pretrained)
            self.net = CoefficientNet(bb, layout.dim, feature_dim=bb.feature_dim)
            self.register_buffer("mean", torch.zeros(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.ones(1, 3, 1, 1), persistent=False)
        else:
            bb, dim = build_backbone(backbone)
            self.net = CoefficientNet(bb, layout.dim, feature_dim=dim)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        sl = layout.slices()
        scale = torch.ones(layout.dim)
        scale[sl["translation"]] = TRANSLATION_SCALE_MM / layout.translation_unit_mm
        self.register_buffer("out_scale", scale, persistent=False)
        exp_mask = torch.zeros(layout.dim, dtype=torch.bool)
        if self.exp_prior == "unit_interval":
            exp_mask[sl["expression"]] = True
        self.register_buffer("exp_mask", exp_mask, persistent=False)

    # -- network -----------------------------------------------------------------------------
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] -> (B, dim) scaled head output before the expression range."""
        return self.net((x - self.mean) / self.std) * self.out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) float [0, 1] RGB -> (B, layout.dim) flat coefficient vector."""
        return self.constrain(self.raw(x))

    def constrain(self, raw: torch.Tensor) -> torch.Tensor:
        """Apply the expression range to a raw vector (straight-through while training)."""
        if not bool(self.exp_mask.any()):
            return raw
        clamped = raw.clamp(0.0, 1.0)
        if self.training:
            clamped = raw + (clamped - raw).detach()
        return torch.where(self.exp_mask, clamped, raw)

    def expression_overflow(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, dim) raw -> (B,) Σ squared distance of the expression outside [0, 1] (0 for Gaussian priors)."""
        if not bool(self.exp_mask.any()):
            return raw.new_zeros(raw.shape[0])
        e = raw[:, self.exp_mask]
        return ((e - e.clamp(0.0, 1.0)) ** 2).sum(-1)

    def params(self, x: torch.Tensor) -> FaceParams:
        """(B, 3, 224, 224) float [0, 1] -> FaceParams (batch B)."""
        return self.layout.split(self(x))

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, crops, batch_size: int = 32) -> FaceParams:
        """Aligned crops (B, 224, 224, 3) uint8 RGB (numpy or tensor; one crop (224, 224, 3) is
        accepted) -> FaceParams (batch B, float32 on the regressor's device). Runs in eval mode."""
        was = self.training
        self.eval()
        try:
            x = crops_to_tensor(crops, device=self.out_scale.device)
            outs = [self(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
            return self.layout.split(torch.cat(outs, 0))
        finally:
            self.train(was)

    # -- checkpoints -------------------------------------------------------------------------
    def config(self) -> dict:
        """What is needed to rebuild the module (stored in checkpoints beside the state dict)."""
        return {"backbone": self.backbone_name, "exp_prior": self.exp_prior, "model": self.model_name,
                "layout": self.layout.to_dict()}

    @staticmethod
    def from_config(cfg: dict) -> Regressor:
        from ..models.layout import ParamLayout

        reg = Regressor(cfg["backbone"], layout=ParamLayout.from_dict(cfg["layout"]), exp_prior=cfg["exp_prior"],
                        pretrained=False)
        reg.model_name = cfg.get("model", "ict")
        return reg


def crops_to_tensor(crops, device=None) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) RGB crops -> (B, 3, H, W) float32 in [0, 1].

    uint8 input is divided by 255; float input is taken to be in [0, 1] already."""
    t = torch.from_numpy(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else torch.as_tensor(crops)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"crops must be (B, H, W, 3), got {tuple(t.shape)}")
    is_u8 = t.dtype == torch.uint8
    t = t.to(device) if device is not None else t
    t = t.permute(0, 3, 1, 2).float()
    return (t / 255.0 if is_u8 else t).contiguous()


__all__ = ["REGRESSOR_BACKBONES", "TRANSLATION_SCALE_MM", "Regressor", "crops_to_tensor"]
