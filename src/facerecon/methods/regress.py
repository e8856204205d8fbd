"""Methods "regress" (the learned coefficient regressor alone: milliseconds per face) and
"regress+refine" (the regressor, then fitting started from its parameters)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from ..align import Crop
from ..detect.base import Face
from ..fit import FitConfig
from ..geometry.rotations import euler_to_matrix, matrix_to_euler, mean_rotation
from ..models.frames import bfm_frame
from .base import MethodContext, Request
from .fit import FitMethod
from .result import Reconstruction, from_params


def keep_identity(params, start):
    """`params` with the identity and albedo of `start`'s first face (a video's carried identity)."""
    B = params.batch_size
    src = start.map(lambda t: t.to(params.identity))
    return params.replace(identity=src.identity[:1].expand(B, -1).clone(), albedo=src.albedo[:1].expand(B, -1).clone())


def fuse_rotation(model, params, faces: list[Face], frame: np.ndarray | None, weight: float):
    """`params` with each head rotation replaced by the chordal mean of its own (weight 1 − `weight`)
    and its detection's (`Face.rotation`, BFM frame, read through `frame` = `models.frames.bfm_frame`;
    weight `weight`). The translation follows so that the mean face's landmark centroid stays where
    it was: the projected face does not move, only turns. Unchanged when a face has no rotation."""
    if weight <= 0 or frame is None or any(f.rotation is None for f in faces):
        return params
    R = euler_to_matrix(params.rotation.detach().double().cpu()).numpy()
    fused = np.stack([mean_rotation([R[b], np.asarray(f.rotation, np.float64) @ frame], [1.0 - weight, weight])
                      for b, f in enumerate(faces)])
    with torch.no_grad():
        c = model.landmarks(model.mean_shape[None])[0].double().mean(0).cpu().numpy()
    t = params.translation.detach().double().cpu().numpy() + (R - fused) @ c
    like = params.rotation
    return params.replace(rotation=matrix_to_euler(torch.from_numpy(fused)).to(like),
                          translation=torch.from_numpy(t).to(like))


class RegressMethod:
    """The regressor (Deep3D's R-Net, `facerecon.regress`) behind the method protocol.

    regressor: a weights path (default: the shipped weights) or a built regressor (anything with
    `predict(crops uint8 (B, 224, 224, 3)) -> FaceParams`, e.g. `regress.onnx.OnnxRegressor`).
    pose_prior: weight of the detection's own head rotation (3DDFA_V2's, which the pipeline computes
    anyway) in the result's rotation, against the regressed one (`fuse_rotation`; 0 keeps the
    regressed pose). Chosen on the data engine's synthesized views (exact poses, no benchmark data;
    benchmarks/pose_priors.py). With the leg-3 regressor (246 views): mean geodesic error 4.83°
    regressed alone, 3.95° 3DDFA_V2's alone, 0.25 -> 4.28, 0.5 -> 3.91, 0.75 -> 3.78 (then the
    default). With the leg-5 regressor, on the val splits of two engine folders it never trained on
    (181 + 135 views; weights 0 / 0.25 / 0.5 / 0.75 / 1): 2.96 / 2.66 / 2.77 / 3.21 / 3.87° and
    3.32 / 3.08 / 3.13 / 3.43 / 3.94°: 0.25 is best there. But those views are renders like the
    ones the regressor trained on, and on AFLW2000-3D dev (real photos, scored once) 0.25 gave 3.85
    NME against 0.75's 3.80, so 0.75 stays the default (a choice that touched dev).
    flip_tta: also regress the left-right flipped crops and average with their mirror image in
    parameter space (`regress.predict.FlipTTA`): NME 5.03 -> 4.96 on aflw-lm68's held-out MERL-RAV
    test faces (docs/training.md) for ~4.5 ms more per face, which this fast path's 30 ms budget
    does not have room for: off here by default, on in `regress+refine`.
    """

    name = "regress"
    needs_landmarks = False
    # One landmark pass is enough for a crop: test-time augmentation would be two thirds of the time.
    detector = "fast"

    def __init__(self, context: MethodContext, regressor=None, pose_prior: float = 0.75, flip_tta: bool = False):
        self.context = context
        self._spec = regressor
        self._regressor = None
        self._tta = None
        self.pose_prior = float(pose_prior)
        self.flip_tta = bool(flip_tta)

    @property
    def regressor(self):
        if self._regressor is None:
            from ..regress.predict import load_regressor

            spec = self._spec
            self._regressor = spec if hasattr(spec, "predict") else load_regressor(spec, device=self.context.device)
        return self._regressor

    def predict(self, crops: list[Crop], request: Request):
        """FaceParams (B) for the crops; an image set's identity is their average."""
        model = self.context.model
        reg = self.regressor
        if self.flip_tta:
            if self._tta is None:
                from ..regress.predict import FlipTTA

                self._tta = FlipTTA(reg, model, self.context.camera)
            reg = self._tta
        params = reg.predict(np.stack([c.image for c in crops]))
        params = params.map(lambda t: t.to(device=self.context.device, dtype=model.mean_shape.dtype))
        if request.keep_identity and request.start is not None:
            params = keep_identity(params, request.start)
        elif request.shared_identity:
            from ..regress.predict import aggregate_identity

            params = aggregate_identity(params)
        return params

    def reconstruct(self, crops: list[Crop], faces: list[Face], request: Request | None = None) -> list[Reconstruction]:
        request = request or Request()
        t0 = time.perf_counter()
        model = self.context.model
        params = fuse_rotation(model, self.predict(crops, request), faces, bfm_frame(model.name), self.pose_prior)
        t = {"regress": time.perf_counter() - t0}
        with torch.no_grad():
            lm = model.project_landmarks(params, self.context.camera)
        return from_params(model, self.context.camera, params, lm, crops, faces, self.name, t)


#: |yaw| above which `RegressRefineMethod`'s `landmark_weight_profile` applies (radians).
PROFILE_YAW = np.deg2rad(60.0)


class RegressRefineMethod(FitMethod):
    """The regressor's parameters as the fit's start: every regressed identity mode is kept and the
    shape stage is halved (the start is already close); the photometric stage follows the request.

    landmark_weight: share of the regressor's own projected 68 landmarks in the fit's landmark
    targets, against the detector's (0: the detector's alone, 1: the regressor's alone);
    landmark_weight_profile: the share for faces the regressor turns past PROFILE_YAW (None: the
    same). benchmarks/landmark_choice.py measures the choices on held-out aflw-lm68 faces: with the
    leg-5 regressor, 300 MERL-RAV test faces, inner-point NME of the landmark-only fits, w 0 / 0.5 / 1:
    3.60 / 3.55 / 3.61 (>60: 4.29 / 4.15 / 4.20; `fit` 3.61), so 0.5 is the default for every yaw.
    flip_tta: the regressor's flip test-time augmentation (`RegressMethod`), on by default here: the
    fit's seconds dwarf its ~5 ms."""

    name = "regress+refine"
    needs_landmarks = True
    detector = "default"

    def __init__(self, context: MethodContext, regressor=None, config: FitConfig | None = None,
                 identity_loss: bool = False, mask: bool = True, landmark_weight: float = 0.5,
                 landmark_weight_profile: float | None = None, flip_tta: bool = True, **overrides):
        super().__init__(context, config, identity_loss, mask, **overrides)
        self.regress = RegressMethod(context, regressor, flip_tta=flip_tta)
        self.landmark_weight = float(landmark_weight)
        self.landmark_weight_profile = self.landmark_weight if landmark_weight_profile is None else float(
            landmark_weight_profile)
        for w in (self.landmark_weight, self.landmark_weight_profile):
            if not 0.0 <= w <= 1.0:
                raise ValueError(f"landmark weights must lie in [0, 1], got {w}")

    def blend_landmarks(self, lm68: torch.Tensor, init) -> torch.Tensor:
        """(B, 68, 2) crop-pixel landmark targets -> their blend with the regressor's projected ones
        (`init`: its FaceParams), weighted per face by its regressed |yaw|."""
        if self.landmark_weight == 0.0 and self.landmark_weight_profile == 0.0:
            return lm68
        with torch.no_grad():
            own = self.context.model.project_landmarks(init, self.context.camera).to(lm68)
        profile = init.rotation[:, 1].abs() > PROFILE_YAW
        w = torch.where(profile, self.landmark_weight_profile, self.landmark_weight).to(lm68)[:, None, None]
        return (1.0 - w) * lm68 + w * own

    def reconstruct(self, crops: list[Crop], faces: list[Face], request: Request | None = None) -> list[Reconstruction]:
        request = request or Request()
        t0 = time.perf_counter()
        init = self.regress.predict(crops, request)
        t_reg = time.perf_counter() - t0
        targets = self.targets(crops, faces, request)
        targets = replace(targets, init=init, lm68=self.blend_landmarks(targets.lm68, init))
        cfg = self.config_for(request)
        cfg = replace(cfg, n_identity=self.context.model.layout.n_identity, steps_shape=cfg.steps_shape // 2)
        res = self.run(targets, cfg)
        times = {"regress": t_reg, **{f"fit_{k}": v for k, v in res.times.items()}}
        return from_params(self.context.model, self.context.camera, res.params, res.lm68, crops, faces, self.name,
                           times)


def make_regress(context: MethodContext, **options) -> RegressMethod:
    return RegressMethod(context, **options)


def make_regress_refine(context: MethodContext, **options) -> RegressRefineMethod:
    return RegressRefineMethod(context, **options)


__all__ = ["PROFILE_YAW", "RegressMethod", "RegressRefineMethod", "make_regress", "make_regress_refine"]
