"""The mirror image of a face in parameter space: what a regressor should predict on a horizontally
flipped crop, and flip test-time augmentation built on it.

A mirror S = diag(-1, 1, 1) about the camera's optical axis maps a posed face v_world = R v + t to
S v_world = (S R S)(S v) + S t. With R = Rz(roll) Ry(yaw) Rx(pitch), S R S is the same product with
yaw and roll negated; S v is the model's mirrored shape, which in coefficients is

- expression: a permutation (ARKit `*_L` <-> `*_R`, `expression_mirror`) — exact for ICT;
- identity: the least-squares coefficients of the mirrored identity offset,
  a' = pinv(B)(P mean - mean) + pinv(B) P B a, with P the vertex mirror map (`mirror_vertices`)
  and the x sign flip; exact when the basis is closed under mirroring, else its projection
  (`ParamMirror.identity_residual` says how far).

The optical axis projects to the camera's principal point cx; a crop flipped in pixels maps x to
W - 1 - x, which equals the optical mirror 2 cx - x when cx = (W - 1) / 2 (the Deep3D camera). Other
principal points get the difference as a translation at the face's depth.
"""

from __future__ import annotations

import numpy as np
import torch

from .layout import FaceParams
from .morphable import MorphableModel


def expression_mirror(names) -> np.ndarray:
    """(n_exp,) int64 permutation: expression j of a mirrored face is expression perm[j] of the original
    (ARKit names: `*_L` <-> `*_R`, `*Left` <-> `*Right`; the others map to themselves)."""
    names = list(names)
    idx = {n: i for i, n in enumerate(names)}
    out = np.arange(len(names))
    for i, n in enumerate(names):
        for a, b in (("_L", "_R"), ("_R", "_L"), ("Left", "Right"), ("Right", "Left")):
            if n.endswith(a) and n[: -len(a)] + b in idx:
                out[i] = idx[n[: -len(a)] + b]
    return out


class ParamMirror:
    """Maps FaceParams to those of the horizontally mirrored face (see the module doc).

    model: the morphable model the parameters belong to. camera: the crop camera
    (`PerspectiveCamera`); only its principal point, width and focal length are used.
    Expression coefficients without a left/right name are treated as symmetric; a model without
    expression names (BFM) has its expression offsets mirrored by least squares like the identity.
    """

    def __init__(self, model: MorphableModel, camera):
        from .annotations import mirror_vertices

        mean = model.mean_shape.detach().double().cpu()
        self.vertex_map = torch.from_numpy(mirror_vertices(mean))
        sign = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)

        def mirror_rows(B: torch.Tensor) -> torch.Tensor:  # (3V, K) -> P B
            V = B.shape[0] // 3
            return (B.reshape(V, 3, -1)[self.vertex_map] * sign[None, :, None]).reshape(3 * V, -1)

        def fit(B: torch.Tensor, extra: torch.Tensor | None = None):
            """(M, c): coefficients a' = M a + c of the mirrored offset (c from the mean's asymmetry)."""
            PB = mirror_rows(B)
            sol = torch.linalg.lstsq(B, PB if extra is None else torch.cat([PB, extra[:, None]], 1)).solution
            M = sol[:, : B.shape[1]]
            c = sol[:, B.shape[1]] if extra is not None else torch.zeros(B.shape[1], dtype=B.dtype)
            rel = float((B @ M - PB).norm() / PB.norm().clamp_min(1e-12))
            return M, c, rel

        mean_off = (mean[self.vertex_map] * sign).reshape(-1) - mean.reshape(-1)
        B_id = model.id_basis.detach().double().cpu()
        self.id_M, self.id_c, self.identity_residual = fit(B_id, mean_off)
        names = list(getattr(model, "expression_names", []) or [])
        n_exp = model.exp_basis.shape[1]
        self.exp_perm = None
        if len(names) == n_exp:
            self.exp_perm = torch.from_numpy(expression_mirror(names))
            self.exp_M = self.exp_c = None
        else:
            self.exp_M, self.exp_c, _ = fit(model.exp_basis.detach().double().cpu())
        self.focal, self.cx, self.width = float(camera.focal), float(camera.cx), int(camera.width)
        self.distance = float(camera.distance)

    def __call__(self, p: FaceParams) -> FaceParams:
        """FaceParams (B) of faces -> FaceParams (B) of their mirror images (same dtype / device).
        Albedo, light and albedo_offset are returned unchanged (not mirrored)."""
        dt, dev = p.identity.dtype, p.identity.device
        ident = (p.identity.double().cpu() @ self.id_M.T + self.id_c).to(dev, dt)
        if self.exp_perm is not None:
            expr = p.expression[:, self.exp_perm.to(dev)]
        else:
            expr = (p.expression.double().cpu() @ self.exp_M.T + self.exp_c).to(dev, dt)
        rot = p.rotation * torch.tensor([1.0, -1.0, -1.0], dtype=dt, device=dev)
        t = p.translation * torch.tensor([-1.0, 1.0, 1.0], dtype=dt, device=dev)
        # The flipped crop's pixel mirror (x -> W-1-x) vs the optical one (x -> 2cx - x).
        shift_px = (self.width - 1) - 2.0 * self.cx
        if shift_px != 0.0:
            depth = self.distance - t[:, 2]
            t = t + torch.stack([shift_px * depth / self.focal, torch.zeros_like(depth), torch.zeros_like(depth)], 1)
        return p.replace(identity=ident, expression=expr, rotation=rot, translation=t)


def flip_average(p: FaceParams, p_flipped: FaceParams, mirror: ParamMirror) -> FaceParams:
    """Flip test-time augmentation: `p` predicted on crops, `p_flipped` on the same crops flipped
    left-right; returns the mean of `p` and the mirror image of `p_flipped` for identity, expression,
    rotation and translation (albedo, light and albedo_offset are `p`'s)."""
    q = mirror(p_flipped)
    avg = {k: (getattr(p, k) + getattr(q, k)) / 2 for k in ("identity", "expression", "rotation", "translation")}
    return p.replace(**avg)


__all__ = ["ParamMirror", "expression_mirror", "flip_average"]
