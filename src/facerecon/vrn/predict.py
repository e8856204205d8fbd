"""Inference: weights -> `VolumePredictor`: aligned 224² crops -> one uint8 volume at a time.

Weights (`train.export_weights`): {'vrn': VRNConfig dict, 'model': state dict (float16 stored,
float32 loaded), 'meta': {'front_mm', 'spec', ...}}; a training checkpoint (last.pt / best.pt)
loads too. `load_vrn()` with no path searches $FACERECON_VRN, weights/vrn/vrn_reduced.pt of a
source checkout, $FACERECON_ASSETS/vrn/ and ~/.cache/facerecon/assets/vrn/, and raises an
AssetError listing them when none exists.

Memory: a 192×192×200 float32 volume is 29 MB; `predict_volumes` yields the volumes of a batch
one by one as uint8 probabilities (×255, 7 MB at full size), so a batch of B faces never holds B
float volumes at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..geometry.transforms2d import warp_image
from .data import crop_to_grid
from .nets import VRN, VRNConfig
from .train import voxel_spec_for
from .voxel import VoxelSpec

WEIGHTS_NAME = "vrn_reduced.pt"


def default_weights_paths() -> list[Path]:
    """Where `load_vrn()` looks, in order."""
    from ..assets import weights_paths

    return weights_paths("FACERECON_VRN", f"vrn/{WEIGHTS_NAME}")


class VolumePredictor:
    """A VRN network with its voxel grid.

    net: the VRN (eval mode); spec: its VoxelSpec; front_mm: the depth (mm, crop camera) at which
    slice `spec.margin` is placed (the training faces' median front depth); meta: the file's meta.
    """

    def __init__(self, net: VRN, spec: VoxelSpec, front_mm: float, meta: dict | None = None):
        self.net, self.spec, self.front_mm, self.meta = net.eval(), spec, float(front_mm), dict(meta or {})

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def inputs(self, crops: np.ndarray) -> torch.Tensor:
        """(B, 224, 224, 3) uint8 crops -> (B, 3, size, size) float [0, 1] network input."""
        M = crop_to_grid(self.spec)
        x = np.stack([warp_image(c, M, self.spec.size) for c in np.asarray(crops)]).astype(np.float32) / 255.0
        return torch.from_numpy(x.transpose(0, 3, 1, 2)).to(self.device)

    @torch.no_grad()
    def predict_volumes(self, crops: np.ndarray) -> Iterator[np.ndarray]:
        """Each crop's (D, size, size) uint8 occupancy probability × 255, one at a time."""
        for c in np.asarray(crops):
            logits = self.net.volume_logits(self.inputs(c[None]))[0]
            yield (torch.sigmoid(logits.float()) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def load_vrn(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> VolumePredictor:
    """A VolumePredictor from exported weights or a training checkpoint; path None: the shipped or
    configured weights (`default_weights_paths`). Raises AssetError when absent or not VRN weights."""
    from ..nets.checkpoint import find_weights, load_state, read_weights

    path = find_weights(path, default_weights_paths(), "VRN",
                        ". Train them (`facerecon vrn train`, docs/vrn.md) or set FACERECON_VRN=FILE.")
    ck = read_weights(path, "VRN", "vrn", checkpoints=True)
    cfg = VRNConfig(**ck["vrn"])
    net = load_state(VRN(cfg), ck, path, cfg)
    meta = dict(ck.get("meta", {}))
    spec = VoxelSpec(**meta["spec"]) if "spec" in meta else voxel_spec_for(cfg)
    front = float(meta.get("front_mm", 1000.0 - 100.0))
    return VolumePredictor(net.to(device), spec, front, {**meta, "path": str(path), "config": asdict(cfg)})


__all__ = ["WEIGHTS_NAME", "VolumePredictor", "default_weights_paths", "load_vrn"]
