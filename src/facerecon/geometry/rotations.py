"""Rotations: Euler angles, axis-angle, nearest rotation, 3-D similarity (Umeyama) fits.

The torch functions are batched and dtype/device agnostic; `nearest_rotation` is numpy.

Convention (Deep3D's): Euler angles (pitch, yaw, roll) = rotations about the model's x, y, z axes,
in radians, composed as ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` and applied to column vectors:
``v_world = R @ v_model + t``. With the model's x to the subject's left, y up and z out of the face
(towards a camera looking down −z), positive yaw turns the face towards the image's right... see
docs/coordinates.md for the sign conventions checked by the tests.
"""

from __future__ import annotations

import numpy as np
import torch


def _axis_rot(c: torch.Tensor, s: torch.Tensor, axis: int) -> torch.Tensor:
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if axis == 0:
        rows = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == 1:
        rows = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        rows = [c, -s, zero, s, c, zero, zero, zero, one]
    return torch.stack(rows, dim=-1).reshape(*c.shape, 3, 3)


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) [pitch, yaw, roll] radians -> (..., 3, 3) R = Rz(roll) Ry(yaw) Rx(pitch)."""
    c, s = torch.cos(angles), torch.sin(angles)
    rx = _axis_rot(c[..., 0], s[..., 0], 0)
    ry = _axis_rot(c[..., 1], s[..., 1], 1)
    rz = _axis_rot(c[..., 2], s[..., 2], 2)
    return rz @ ry @ rx


def matrix_to_euler(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) [pitch, yaw, roll] with yaw in [-pi/2, pi/2].

    Inverse of `euler_to_matrix` away from gimbal lock (|yaw| = 90°), where roll is set to 0.
    """
    # R = Rz Ry Rx: R[2,0] = -sin(yaw), R[2,1] = cos(yaw) sin(pitch), R[2,2] = cos(yaw) cos(pitch),
    # R[1,0] = sin(roll) cos(yaw), R[0,0] = cos(roll) cos(yaw).
    sy = (-R[..., 2, 0]).clamp(-1.0, 1.0)
    yaw = torch.asin(sy)
    cy = torch.sqrt(R[..., 2, 1] ** 2 + R[..., 2, 2] ** 2)
    eps = 1e-6 if R.dtype == torch.float32 else 1e-12
    regular = cy > eps
    pitch = torch.where(regular, torch.atan2(R[..., 2, 1], R[..., 2, 2]), torch.atan2(-R[..., 1, 2], R[..., 1, 1]))
    roll = torch.where(regular, torch.atan2(R[..., 1, 0], R[..., 0, 0]), torch.zeros_like(yaw))
    return torch.stack([pitch, yaw, roll], dim=-1)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis * angle (radians) -> (..., 3, 3) via Rodrigues; smooth at angle 0."""
    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2.clamp_min(1e-30))
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos t)/t^2 with Taylor fallbacks so gradients stay finite at 0.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-30))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) axis * angle with angle in [0, pi]."""
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos = ((tr - 1) / 2).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = torch.sin(theta)
    small = theta < 1e-6
    aa = torch.where(small[..., None], w / 2, w * (theta / (2 * sin.clamp_min(1e-30)))[..., None])
    # Near pi, w vanishes: take the axis from the symmetric part R + I = 2 n n^T (+ (1+cos) ...).
    near_pi = theta > torch.pi - 1e-3
    if near_pi.any():
        S = (R + R.transpose(-1, -2)) / 2 - cos[..., None, None] * torch.eye(3, dtype=R.dtype, device=R.device)
        diag = torch.diagonal(S, dim1=-2, dim2=-1)
        k = diag.argmax(-1)
        col = torch.gather(S, -1, k[..., None, None].expand(*S.shape[:-1], 1)).squeeze(-1)
        n = col / col.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        # Fix the sign with w (points along n when theta < pi).
        sign = torch.where((n * w).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(R.dtype)
        aa = torch.where(near_pi[..., None], n * sign * theta[..., None], aa)
    return aa


def nearest_rotation(M) -> np.ndarray:
    """(3, 3) array-like -> (3, 3) float64, the closest proper rotation in the Frobenius norm:
    U·diag(1, 1, det(U Vᵀ))·Vᵀ from the SVD M = U S Vᵀ (the orthogonal Procrustes / Umeyama rotation
    step, numpy; `fit_similarity` is the batched torch fit). E.g. 3DDFA_V2's regressed [sR] is only
    roughly orthogonal, and a fitter wants a true rotation to start from."""
    U, _, Vt = np.linalg.svd(np.asarray(M, np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    return U @ D @ Vt


def mean_rotation(Rs, weights=None) -> np.ndarray:
    """(N, 3, 3) rotations (+ optional (N,) non-negative weights) -> (3, 3) float64 chordal L2 mean:
    the rotation nearest to their weighted average matrix (exact for rotations about one axis, the
    usual average of test-time-augmentation passes that differ by a few degrees)."""
    Rs = np.asarray(Rs, np.float64).reshape(-1, 3, 3)
    w = np.ones(len(Rs)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    return nearest_rotation(np.einsum("n,nij->ij", w / w.sum(), Rs))


def fit_similarity(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None):
    """Weighted least-squares similarity taking `src` onto `dst` in 3-D (Umeyama, no reflection).

    src, dst: (B, N, 3); weights: (B, N) non-negative with a positive sum, or None (equal).
    Returns scale (B,), R (B, 3, 3) proper rotation, t (B, 3) minimising Σ wᵢ |s R srcᵢ + t − dstᵢ|².
    """
    w = torch.ones_like(src[..., 0]) if weights is None else weights.to(src)
    w = (w / w.sum(-1, keepdim=True))[..., None]
    mu_s, mu_d = (w * src).sum(1, keepdim=True), (w * dst).sum(1, keepdim=True)
    s0, d0 = src - mu_s, dst - mu_d
    U, S, Vh = torch.linalg.svd((w * d0).transpose(1, 2) @ s0)  # weighted cross-covariance
    D = torch.ones_like(S)
    D[:, -1] = torch.sign(torch.linalg.det(U @ Vh))
    R = U @ torch.diag_embed(D) @ Vh
    scale = (S * D).sum(-1) / (w * s0 ** 2).sum((1, 2))
    t = mu_d[:, 0] - scale[:, None] * (R @ mu_s[:, 0, :, None])[..., 0]
    return scale, R, t
