"""Closed-form pose initialisation from 2D–3D landmark pairs (POS: pose from orthography and scaling).

Solves the affine camera x ≈ s·R[:2] X + t in least squares, orthonormalises the rotation rows,
then converts scale to depth under the perspective camera. Robust for any yaw, including profiles,
because it needs no starting guess.
"""

from __future__ import annotations

import torch

from ..geometry.camera import PerspectiveCamera
from ..geometry.rotations import fit_similarity, matrix_to_euler


def pos_init(lm2d: torch.Tensor, lm3d: torch.Tensor, camera: PerspectiveCamera,
             weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial pose from landmarks.

    Args:
        lm2d: (B, N, 2) image points (pixels, y down).
        lm3d: (N, 3) or (B, N, 3) model-space points (mm, y up).
        camera: the camera the points were imaged by.
        weights: (B, N) or (N,) point weights (0 drops a point; a face whose weights are all 0
            falls back to equal weights: an initial pose is still better than none).

    Returns:
        rotation (B, 3) Euler [pitch, yaw, roll] radians, translation (B, 3) mm, such that
        camera.project(R X + t) ≈ lm2d.
    """
    X, w = _model_points_and_weights(lm2d, lm3d, weights)
    # Image → camera-oriented coordinates (y up) relative to the principal point.
    u = torch.stack([lm2d[..., 0] - camera.cx, camera.cy - lm2d[..., 1]], -1)
    A = torch.cat([X, torch.ones_like(X[..., :1])], -1)  # (B, N, 4)
    sw = w.sqrt()[..., None]
    sol = torch.linalg.lstsq(A * sw, u * sw).solution  # (B, 4, 2)
    r1, r2 = sol[:, :3, 0], sol[:, :3, 1]
    s = (r1.norm(dim=-1) + r2.norm(dim=-1)) / 2
    # Nearest rotation to the stacked rows (SVD), third row by cross product.
    M = torch.stack([r1, r2, torch.cross(r1, r2, dim=-1) / s[:, None]], 1)
    U, _, Vh = torch.linalg.svd(M)
    R = U @ Vh
    det = torch.linalg.det(R)
    U = torch.cat([U[..., :2], U[..., 2:] * det[:, None, None]], -1)
    R = U @ Vh
    return matrix_to_euler(R), _translation(sol[:, 3], s, camera)


def _model_points_and_weights(pts: torch.Tensor, lm3d: torch.Tensor, weights: torch.Tensor | None):
    """(B, N, 3) model points in `pts`' dtype and (B, N) weights; a face whose weights are all 0
    falls back to equal weights."""
    B, N = pts.shape[:2]
    dt = pts.dtype
    w = torch.ones(B, N, dtype=dt, device=pts.device) if weights is None else weights.to(dt).expand(B, N)
    return lm3d.expand(B, N, 3).to(dt), torch.where(w.sum(-1, keepdim=True) > 0, w, torch.ones_like(w))


def _translation(origin_px: torch.Tensor, s: torch.Tensor, camera: PerspectiveCamera) -> torch.Tensor:
    """(B, 3) mm from where the model origin lands, (B, 2) pixels from the principal point (y up),
    and the scale s (pixels per mm) = focal / depth of the origin."""
    depth = camera.focal / s.clamp_min(1e-6)
    xy = origin_px * (depth / camera.focal)[:, None]
    return torch.cat([xy, (camera.distance - depth)[:, None]], -1)


def procrustes_init(pts3d: torch.Tensor, lm3d: torch.Tensor, camera: PerspectiveCamera,
                    weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial pose from 3-D landmark estimates (e.g. 3DDFA_V2's), by a weighted similarity fit.

    Args:
        pts3d: (B, N, 3) points in image pixels: x right, y down, z towards the viewer (any offset,
            same scale as x and y), as 3DDFA_V2 reports them (`Face.extra['lm68_3d']`).
        lm3d: (N, 3) or (B, N, 3) model-space points (mm, y up, z towards the viewer).
        camera: the camera of the image the points are in.
        weights: (B, N) or (N,) point weights.

    Returns rotation (B, 3) Euler radians and translation (B, 3) mm, like `pos_init`. Unlike POS
    it knows the points' depth, so a profile's turn is not left to the 2-D layout alone.
    """
    X, w = _model_points_and_weights(pts3d, lm3d, weights)
    # Image (y down) -> camera-oriented (y up) around the principal point: right-handed like the model.
    Y = torch.stack([pts3d[..., 0] - camera.cx, camera.cy - pts3d[..., 1], pts3d[..., 2]], -1)
    s, R, t = fit_similarity(X, Y, w)
    return matrix_to_euler(R), _translation(t[:, :2], s, camera)
