"""Deep3D's loss terms, written once for fitting and for regressor training.

Every loss takes batched tensors and returns (B,) per-face values (callers weight and reduce), so the
same code serves a single fit, a batch of independent fits, and a training mini-batch. The
composites both drivers build from them (render, warp, dense points) are in `objective.hybrid`.
"""

from __future__ import annotations

import math

import torch

from ..geometry.rotations import euler_to_matrix
from ..render.shading import sh_channels

# Deep3D's landmark weights: 20 on the nose (iBUG 27-35) and the inner mouth (60-67), 1 elsewhere.
_LM_W = torch.ones(68)
_LM_W[27:36] = 20.0
_LM_W[60:68] = 20.0


def deep3d_landmark_weights(dtype=torch.float32, device=None, emphasis: float = 20.0) -> torch.Tensor:
    """(68,) Deep3D's per-landmark weights: `emphasis` (Deep3D: 20) on the nose and inner mouth, 1 elsewhere."""
    w = _LM_W.to(dtype=dtype, device=device).clone()
    w[w > 1] = emphasis
    return w


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                  image_size: float = 224.0, robust: float | None = None) -> torch.Tensor:
    """Weighted squared landmark distance, Deep3D's normalisation (by image size²).

    pred, target: (B, N, 2) pixels; weights: (N,) or (B, N) (Deep3D weights × per-point confidence;
    0 ignores a point). robust: if set (pixels), a Geman-McClure-like soft cap on each point's error
    (squared error e² → e²·r²/(e² + r²)), so a few wrong detector points cannot drag the fit.
    Returns (B,).
    """
    d2 = ((pred - target) ** 2).sum(-1)  # (B, N)
    if robust is not None:
        r2 = robust * robust
        d2 = d2 * r2 / (d2 + r2)
    w = torch.ones_like(d2) if weights is None else weights.to(d2).expand_as(d2)
    return (w * d2).sum(-1) / w.sum(-1).clamp_min(1e-8) / (image_size * image_size) * 68.0


def photometric_loss(rendered: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Deep3D's robust photo loss: mean over masked pixels of the L2 colour distance (not squared).

    rendered, image: (B, H, W, 3) in [0, 1]; mask: (B, H, W) weights in [0, 1] (render coverage ×
    skin/face mask). Returns (B,).
    """
    dist = torch.sqrt(((rendered - image) ** 2).sum(-1) + eps)
    return (dist * mask).flatten(1).sum(-1) / mask.flatten(1).sum(-1).clamp_min(1.0)


def identity_loss(emb_rendered: torch.Tensor, emb_image: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity of L2-normalised identity embeddings (B, D). Returns (B,)."""
    return 1.0 - (torch.nn.functional.normalize(emb_rendered, dim=-1)
                  * torch.nn.functional.normalize(emb_image, dim=-1)).sum(-1)


def coefficient_prior(identity: torch.Tensor, expression: torch.Tensor, albedo: torch.Tensor,
                      w_id: float = 1.0, w_exp: float = 0.8, w_alb: float = 1.7e-2) -> torch.Tensor:
    """Deep3D's regularisation w_id‖α‖² + w_exp‖β‖² + w_tex‖δ‖² (its weights 1, 0.8, 1.7e-2). Returns (B,)."""
    out = w_id * (identity ** 2).sum(-1) + w_exp * (expression ** 2).sum(-1)
    if albedo.shape[-1]:
        out = out + w_alb * (albedo ** 2).sum(-1)
    return out


def light_prior(light: torch.Tensor) -> torch.Tensor:
    """Deep3D's monochrome-light regulariser: the per-channel SH vectors should agree (white light).
    light (B, 27), see `render.shading`. Returns (B,)."""
    g = sh_channels(light)
    return ((g - g.mean(1, keepdim=True)) ** 2).sum((1, 2))


def albedo_smoothness(offset: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Smoothness of a per-vertex albedo residual over mesh edges plus a small magnitude term.

    offset: (B, V, 3); edges: (E, 2) vertex pairs. Returns (B,)."""
    d = offset[:, edges[:, 0]] - offset[:, edges[:, 1]]
    return (d ** 2).sum(-1).mean(-1) + 1e-2 * (offset ** 2).sum(-1).mean(-1)


def temporal_smoothness(x: torch.Tensor) -> torch.Tensor:
    """Second-difference smoothness along the batch axis (frames in order): x (T, D) -> scalar.
    Penalises acceleration, so steady motion is free and jitter is not."""
    if x.shape[0] < 3:
        if x.shape[0] == 2:
            return ((x[1] - x[0]) ** 2).sum() * 0.25
        return x.sum() * 0.0
    acc = x[2:] - 2 * x[1:-1] + x[:-2]
    return (acc ** 2).sum(-1).mean()


def rotation_prior(rotation: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distance of a pose from a prior rotation (e.g. the landmarker's own head pose).

    rotation: (B, 3) [pitch, yaw, roll] radians (`geometry.rotations.euler_to_matrix`);
    target: (B, 3, 3) rotation matrices. Returns (B,) (180/π)² · ‖R − R_t‖²_F / 2 =
    (180/π)² · 2(1 − cos θ): the squared angle θ between the two, in degrees², for small θ. The
    chordal form has no singularity at θ = 0 and is smooth in the Euler angles everywhere.
    """
    d = euler_to_matrix(rotation) - target.to(rotation)
    return (d ** 2).sum((-1, -2)) * (0.5 * (180.0 / math.pi) ** 2)
