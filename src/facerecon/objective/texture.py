"""Loss terms of the GCN texture refiner (Lin et al., CVPR 2020; docs/albedo.md).

All take per-vertex albedo (B, V, 3) in [0, 1] and return (B,) per-sample losses (the caller weights
and averages them):

- `symmetry_loss`: mean |a - a[mirror]| (0 for a texture that equals its mirror image).
- `skin_variance_loss`: per-channel variance of the albedo over skin vertices, averaged over channels
  (0 for a constant albedo): the paper's term against shading and shadows baked into the texture.
- `basis_l1_loss`: mean |a - a_basis| (the albedo basis' texture of the photo), optionally weighted
  per vertex; `basis_weight_schedule` is its weight over training (start high, decay).
- `masked_l1`: mean |render - photo| over a pixel mask (the rendered photometric term).
"""

from __future__ import annotations

import math

import torch


def symmetry_loss(albedo: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """albedo (B, V, 3), mirror (V,) int64 mirror vertex of each vertex -> (B,) mean abs difference."""
    return (albedo - albedo[:, mirror.to(albedo.device)]).abs().mean((1, 2))


def skin_variance_loss(albedo: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """albedo (B, V, 3), skin (S,) int64 vertex indices -> (B,) variance over skin, channel mean."""
    a = albedo[:, skin.to(albedo.device)]
    return a.var(1, unbiased=False).mean(-1)


def basis_l1_loss(albedo: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """albedo, target (B, V, 3); weight (V,) or (B, V) >= 0 or None -> (B,) (weighted) mean |a - t|."""
    d = (albedo - target).abs().mean(-1)
    if weight is None:
        return d.mean(1)
    w = weight.to(d).expand_as(d)
    return (d * w).sum(1) / w.sum(1).clamp_min(1e-9)


def masked_l1(render: torch.Tensor, photo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """render, photo (B, H, W, 3); mask (B, H, W) bool/float -> (B,) mean abs difference per channel over
    the mask (0 for an empty mask)."""
    m = mask.to(render.dtype)
    return ((render - photo).abs().mean(-1) * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1.0)


def basis_weight_schedule(step: int, total: int, start: float = 1.0, end: float = 0.05) -> float:
    """Weight of `basis_l1_loss` at `step` of `total`: geometric decay from `start` to `end` (the paper's
    schedule: the basis texture anchors the start of training, the photo terms take over later)."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return float(start * math.exp(t * math.log(end / start)))


__all__ = ["basis_l1_loss", "basis_weight_schedule", "masked_l1", "skin_variance_loss", "symmetry_loss"]
