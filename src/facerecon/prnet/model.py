"""The position-map regressor around `nets.PRNet`: crops in, maps and meshes out, weights files.

    net = load_prnet()                                  # shipped weights (AssetError when absent)
    maps = net.predict_maps(crops_uint8)                # (B, 224, 224, 3) -> (B, 3, R, R) crop px
    dec = decode_maps(model, layout, maps, camera)      # vertices / landmarks / pose

The network's sigmoid output o ∈ (0, 1) is the map p = o · NORM_SCALE − NORM_SHIFT (crop px, the
conventions of `prnet.uv`): [−112, 336] px, room for a neck or a profile's far side outside the crop.

Weights files are torch pickles {"prnet": net.config | {"size": R}, "model": state_dict (float16
allowed), "meta": {...}} that load with ``weights_only=True``; training checkpoints load too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.camera import PerspectiveCamera
from ..geometry.rotations import fit_similarity
from .nets import PRNet
from .uv import CROP_SIZE, UVLayout, read_vertices, world_from_positions

NORM_SCALE = 2.0 * CROP_SIZE
NORM_SHIFT = 0.5 * CROP_SIZE
#: The shipped weights: `weights/` of a source checkout, $FACERECON_ASSETS/prnet/, ~/.cache/...
DEFAULT_WEIGHTS = ("prnet_mobilenetv1_3ddfa.pt", "prnet_mobilenetv2.pt", "prnet_baseline.pt", "prnet_resnet18.pt")


def normalise_map(maps: torch.Tensor) -> torch.Tensor:
    """Crop-pixel positions -> the network's (0, 1) target scale."""
    return (maps + NORM_SHIFT) / NORM_SCALE


def denormalise_map(out: torch.Tensor) -> torch.Tensor:
    return out * NORM_SCALE - NORM_SHIFT


def crops_to_input(crops: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """(B, S, S, 3) uint8 crops -> (B, 3, size, size) float RGB in [0, 1] (bilinear, antialiased)."""
    x = torch.as_tensor(np.asarray(crops)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class PositionNet(nn.Module):
    """`PRNet` with its map resolution: 224² crops -> (B, 3, R, R) position maps in crop pixels.

    The output is sigmoid(decoder logits + `prior`), `prior` (3, R, R) the logit of the training
    set's mean normalised map (`set_prior`; zeros = PRNet's plain sigmoid). Starting from the mean
    face's map instead of a flat 0.5 saves the first few hundred steps of a short CPU run; it is a
    buffer, saved with the weights.
    """

    def __init__(self, encoder: str = "mobilenetv2", width: float = 1.0, size: int = 128, pretrained: bool = False,
                 head: int = 3):
        super().__init__()
        self.net = PRNet(encoder, width, sigmoid=False, pretrained=pretrained, head=head)
        last = self.net.decoder[-1]  # zero: the untrained network outputs the prior exactly
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.size = int(size)
        self.register_buffer("prior", torch.zeros(3, self.size, self.size))
        self.meta: dict = {}

    def set_prior(self, mean_map: torch.Tensor) -> None:
        """mean_map: (3, R, R) mean target map in crop px (`prnet.uv`), e.g. over the training set."""
        p = normalise_map(mean_map.to(self.prior)).clamp(1e-3, 1 - 1e-3)
        self.prior.copy_(torch.log(p) - torch.log1p(-p))

    @property
    def config(self) -> dict:
        return dict(self.net.config, size=self.size)

    @staticmethod
    def from_config(cfg: dict) -> PositionNet:
        return PositionNet(cfg["encoder"], cfg.get("width", 1.0), cfg.get("size", 128), head=cfg.get("head", 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) RGB in [0, 1] -> (B, 3, R, R) normalised map in (0, 1)."""
        return torch.sigmoid(self.net(x) + self.prior)

    @torch.no_grad()
    def predict_maps(self, crops) -> torch.Tensor:
        """(B, 224, 224, 3) uint8 crops -> (B, 3, R, R) float32 position maps (crop px)."""
        dev = next(self.parameters()).device
        return denormalise_map(self(crops_to_input(crops, self.size).to(dev))).float().cpu()


@dataclass(frozen=True)
class DecodedMaps:
    """Meshes read from position maps (batch B, V vertices, torch float64, CPU).

    positions: (B, V, 3) map positions (crop px; z as in `prnet.uv`); vertices_world: (B, V, 3) mm in
    the camera's world frame; scale (B,), rotation (B, 3, 3), translation (B, 3) mm: the similarity
    taking the model's mean shape onto `vertices_world` (the head pose); vertices_model: (B, V, 3) mm,
    `vertices_world` unrotated, Rᵀ (v − t), so that v_world = R v_model + t (its size is the map's: the
    scale is not divided out); lm68_world: (B, 68, 3) mm
    (read-back landmark vertices + their model-space offsets posed); lm68_crop: (B, 68, 2) crop px.
    """

    positions: torch.Tensor
    vertices_world: torch.Tensor
    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    vertices_model: torch.Tensor
    lm68_world: torch.Tensor
    lm68_crop: torch.Tensor


def decode_maps(model, layout: UVLayout, maps: torch.Tensor, cameras, pose_weights: torch.Tensor | None = None
                ) -> DecodedMaps:
    """Vertices, 68 landmarks and head pose from (B, 3, R, R) position maps (crop px).

    cameras: one PerspectiveCamera or a list of B (the crops' cameras). pose_weights: (V,) weights
    of the pose fit (default: the inner face, `model.region('narrow_face')` when it has one, else all;
    the neck and ears move with jaw and shoulders, not the head)."""
    maps = maps.detach().double().cpu()
    B = maps.shape[0]
    cams = [cameras] * B if isinstance(cameras, PerspectiveCamera) else list(cameras)
    pos = read_vertices(layout, maps)
    world = torch.stack([world_from_positions(pos[b:b + 1], cams[b])[0] for b in range(B)])
    mean = model.mean_shape.detach().double().cpu()
    if pose_weights is None:
        pose_weights = torch.zeros(mean.shape[0], dtype=torch.float64)
        names = getattr(model, "region_names", [])
        idx = model.region("narrow_face") if "narrow_face" in names else torch.arange(mean.shape[0])
        pose_weights[idx.cpu()] = 1.0
    s, R, t = fit_similarity(mean.expand(B, -1, -1), world, pose_weights.double().expand(B, -1))
    vm = torch.einsum("bij,bvj->bvi", R.transpose(1, 2), world - t[:, None])
    lm_idx = model.landmarks68.cpu()
    off = model.landmark_offsets.detach().double().cpu()
    lmw = world[:, lm_idx] + s[:, None, None] * torch.einsum("bij,nj->bni", R, off)
    lmc = torch.stack([cams[b].project(lmw[b])[:, :2] for b in range(B)])
    return DecodedMaps(pos, world, s, R, t, vm, lmw, lmc)


# -- weights files ---------------------------------------------------------------------------------

def default_weights_paths() -> list[Path]:
    """Where `load_prnet()` looks, in order: $FACERECON_PRNET, the repository's `weights/`,
    $FACERECON_ASSETS/prnet/, ~/.cache/facerecon/assets/prnet/ (each with `DEFAULT_WEIGHTS` in order)."""
    out = []
    env = os.environ.get("FACERECON_PRNET")
    if env:
        out.append(Path(env))
    dirs = [Path(__file__).resolve().parents[3] / "weights"]
    assets = os.environ.get("FACERECON_ASSETS")
    if assets:
        dirs.append(Path(assets) / "prnet")
    dirs.append(Path.home() / ".cache" / "facerecon" / "assets" / "prnet")
    out += [d / name for d in dirs for name in DEFAULT_WEIGHTS]
    return out


def save_weights(net: PositionNet, path, meta: dict | None = None, half: bool = True) -> Path:
    """Inference weights (float16 unless `half` False), written atomically."""
    from ..nets.checkpoint import write_weights

    return write_weights(path, "prnet", net.config, net, meta, half)


def load_prnet(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> PositionNet:
    """A PositionNet in eval mode from a weights file or a training checkpoint.

    path None: the shipped weights (`default_weights_paths`); raises AssetError listing the paths
    searched when none exists, or when the file is not PRNet weights."""
    from ..nets.checkpoint import find_weights, load_state, read_weights

    path = find_weights(path, default_weights_paths(), "PRNet",
                        ". Train them (`facerecon train --head prnet`, weights/prnet/MODEL_CARD.md) "
                        "or set FACERECON_PRNET=FILE.")
    ck = read_weights(path, "PRNet", "prnet")
    net = load_state(PositionNet.from_config(ck["prnet"]), ck, path, ck["prnet"])
    net.meta = dict(ck.get("meta", {}), path=str(path))
    return net.to(device).eval()


__all__ = ["DEFAULT_WEIGHTS", "NORM_SCALE", "NORM_SHIFT", "DecodedMaps", "PositionNet", "crops_to_input",
           "decode_maps", "default_weights_paths", "denormalise_map", "load_prnet", "normalise_map",
           "save_weights"]
