"""Registering the morphable model to a VRN surface: where a volume's landmarks and pose come from.

A volume has no correspondence, no landmarks and no head pose; the model gets them by fitting it
to the extracted surface:

1. rigid: a similarity from the model's inner 51 landmarks (brows, eyes, nose, mouth; the jaw's
   contour points are often hidden) to the crop's detected landmarks lifted onto the surface
   (front-most surface point at each landmark's pixel); without landmarks, the mean face facing
   the camera at the surface's centroid. Then similarity ICP (each surface point paired with its
   nearest model vertex, trimmed). The scale is moved onto the surface, scaled about the camera
   centre, which leaves its projection unchanged: a single image fixes the face's pixels but not
   its distance, and the model's mm are the better guess of its size.
2. non-rigid: identity and expression coefficients (with the pose) by Adam on the mean squared
   distance from surface points to their nearest model vertex (pairs refreshed every few steps),
   with the model's priors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.camera import PerspectiveCamera
from ..geometry.rotations import euler_to_matrix, matrix_to_euler
from ..models import FaceParams, MorphableModel
from .mesh import umeyama

#: iBUG-68 indices of the landmarks used for the rigid start (17..67: no jaw contour).
INNER68 = np.arange(17, 68)


@dataclass(frozen=True)
class Registration:
    """The model registered to a surface.

    params: FaceParams (batch 1) of the model in the camera's frame (mm, radians).
    surface_scale: the factor the surface was scaled by about the camera centre (1 / similarity scale).
    residual_mm: RMS distance of the surface points to the registered model's nearest vertices.
    """

    params: FaceParams
    surface_scale: float
    residual_mm: float


def lift_landmarks(lm2d: np.ndarray, points: np.ndarray, camera: PerspectiveCamera, radius_px: float = 1.5
                   ) -> np.ndarray:
    """(K, 2) pixels -> (K, 3) world points: the front-most of `points` (N, 3) projecting within
    `radius_px` of each landmark (else the one projecting nearest)."""
    from scipy.spatial import cKDTree

    scr = camera.project(torch.as_tensor(points, dtype=torch.float64)).numpy()
    tree = cKDTree(scr[:, :2])
    out = np.empty((len(lm2d), 3))
    for k, p in enumerate(np.asarray(lm2d, np.float64)):
        idx = tree.query_ball_point(p, radius_px)
        if not idx:
            idx = [int(tree.query(p)[1])]
        out[k] = points[idx[int(np.argmin(scr[idx, 2]))]]
    return out


def _pairs(model_pts: np.ndarray, surface: np.ndarray, trim: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Surface point i -> nearest model vertex j, keeping pairs within `trim` × the median distance."""
    from scipy.spatial import cKDTree

    d, j = cKDTree(model_pts).query(surface)
    keep = d <= trim * max(float(np.median(d)), 1e-9)
    return np.flatnonzero(keep), j[keep]


def register_rigid(model: MorphableModel, surface: np.ndarray, camera: PerspectiveCamera,
                   lm68: np.ndarray | None = None, iters: int = 15) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) with surface ≈ s R mean_shape + t (see the module doc, step 1)."""
    mean = model.mean_shape.detach().double().cpu().numpy()
    if lm68 is not None:
        lm3d = (model.landmarks(model.mean_shape[None])[0]).detach().double().cpu().numpy()
        lifted = lift_landmarks(np.asarray(lm68)[INNER68], surface, camera)
        s, R, t = umeyama(lm3d[INNER68], lifted)
    else:
        s, R = 1.0, np.eye(3)
        t = surface.mean(0) - mean.mean(0)
    for _ in range(iters):
        i, j = _pairs(s * mean @ R.T + t, surface)
        s, R, t = umeyama(mean[j], surface[i])
    return s, R, t


def register(model: MorphableModel, surface: np.ndarray, camera: PerspectiveCamera, lm68: np.ndarray | None = None,
             steps: int = 40, lr: float = 0.05, w_identity: float = 1e-3, w_expression: float = 1e-3,
             max_points: int = 4000, refresh: int = 5) -> Registration:
    """Rigid then non-rigid registration of `model` to surface points (N, 3) mm in `camera`'s frame.

    lm68: (68, 2) the crop's detected landmarks in `camera`'s pixels, or None. Returns the model's
    parameters for the surface scaled by `Registration.surface_scale` about the camera centre."""
    surface = np.asarray(surface, np.float64)
    if len(surface) > max_points:
        surface = surface[np.random.default_rng(0).choice(len(surface), max_points, replace=False)]
    s, R, t = register_rigid(model, surface, camera, lm68)
    C = np.array([0.0, 0.0, camera.distance])
    k = 1.0 / s
    surf = C + (surface - C) * k
    t = C + (t - C) * k
    dt = torch.float32
    S = torch.as_tensor(surf, dtype=dt)
    p0 = model.zeros(1)
    ident = torch.zeros_like(p0.identity, dtype=dt, requires_grad=True)
    expr = torch.zeros_like(p0.expression, dtype=dt, requires_grad=True)
    rot = matrix_to_euler(torch.as_tensor(R)[None]).to(dt).requires_grad_(True)
    trans = torch.as_tensor(t, dtype=dt)[None].clone().requires_grad_(True)
    # Adam's steps are in parameter units: radians move 10× less and mm 10× more than coefficients.
    opt = torch.optim.Adam([{"params": [ident, expr], "lr": lr}, {"params": [rot], "lr": lr * 0.1},
                            {"params": [trans], "lr": lr * 10.0}])
    unit = model.exp_prior == "unit_interval"
    res = float("nan")
    for step in range(steps + 1):
        e = expr.clamp(0, 1) if unit else expr
        R_t = euler_to_matrix(rot).transpose(1, 2)
        if step % refresh == 0:
            with torch.no_grad():
                full = model.shape(ident.to(model.mean_shape), e.to(model.mean_shape)).to(dt) @ R_t + trans[:, None]
            i_idx, j_idx = _pairs(full[0].numpy().astype(np.float64), surf)
            # Between refreshes only the paired vertices are decoded (their basis rows).
            sel, inv = np.unique(j_idx, return_inverse=True)
            rows = torch.as_tensor((sel[:, None] * 3 + np.arange(3)).ravel())
            B_id, B_exp = model.id_basis[rows].to(dt), model.exp_basis[rows].to(dt)
            mu, inv, target = model.mean_shape[torch.as_tensor(sel)].to(dt), torch.as_tensor(inv), S[torch.as_tensor(i_idx)]
        v = mu + (ident @ B_id.T + e @ B_exp.T).view(-1, 3)
        d2 = (((v @ R_t[0] + trans)[inv] - target) ** 2).sum(-1)
        res = float(d2.detach().mean().sqrt())
        if step == steps:
            break
        loss = d2.mean() + w_identity * (ident ** 2).sum() + w_expression * (e ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        e = expr.clamp(0, 1) if unit else expr
        md = model.mean_shape
        params = p0.replace(identity=ident.detach().to(md), expression=e.detach().to(md),
                            rotation=rot.detach().to(md), translation=trans.detach().to(md))
    return Registration(params, k, res)


__all__ = ["INNER68", "Registration", "lift_landmarks", "register", "register_rigid"]
