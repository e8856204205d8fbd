"""The fitter's stages, one function each, over explicit state.

`FitProblem` is what a fit is fitted to (fixed); `FitVariables` holds the optimised tensors, which
every stage takes, updates (in place, by Adam) and returns. The objective's terms are the shared
ones of `facerecon.objective`, weighted by `FitConfig`.

    initial_variables  start values: zeros + the 68 landmarks' POS pose, or a given FaceParams
    pose_stage         best starting pose per image, then rotation + translation on the landmarks
    shape_stage        + identity and expression, with priors (and temporal smoothness)
    parts_stage        + 3DDFA_V3's PRDL against the targets' part maps, through the full mesh
    photo_stage        closed-form SH light, then geometry, light, albedo through the renderer
    albedo_stage       geometry frozen: per-vertex albedo residual + light
    fit_result         final landmark residual and FaceParams
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .. import objective as O
from ..models.layout import FaceParams
from ..objective.prdl import PartPoints, label_map_points, prdl_term
from ..render.shading import solve_sh_light
from .config import FitResult, FitTargets
from .pose_init import pos_init, procrustes_init

if TYPE_CHECKING:
    from .fitter import Fitter


@dataclass
class FitProblem:
    """The targets in the model's dtype (B faces) and how the batch is fitted.

    lm: (B, 68, 2); w: (B, 68) Deep3D's point weights × the targets' confidences;
    dense, dense_trust: (B, N, 2), (B, 1 or N) FaceMesh points and trust, or None;
    image: (B, S, S, 3) and mask (B, S, S) for the photometric stages, or None;
    lm68_3d: 3-D landmarks for a second starting pose, or None; has_init: started from FaceParams;
    shared: one identity (and albedo) for the batch; fit_identity: False keeps the identity fixed;
    rotation_prior: (B, 3, 3) prior head rotations when `FitConfig.w_rotation_prior` > 0, else None;
    parts: the target part maps as PRDL point sets (`objective.prdl.PartPoints`), or None (no
    PRDL: no maps, `w_prdl` 0, or a model without part annotations).
    """

    lm: torch.Tensor
    w: torch.Tensor
    dense: torch.Tensor | None = None
    dense_trust: torch.Tensor | None = None
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    lm68_3d: torch.Tensor | None = None
    has_init: bool = False
    shared: bool = False
    fit_identity: bool = True
    rotation_prior: torch.Tensor | None = None
    parts: PartPoints | None = None

    @property
    def batch(self) -> int:
        return int(self.lm.shape[0])

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """A shared identity (albedo, albedo residual) is stored once and expanded to the batch."""
        return x.expand(self.batch, *x.shape[1:]) if self.shared else x

    @staticmethod
    def build(fitter: Fitter, targets: FitTargets, fit_identity: bool = True) -> FitProblem:
        cfg, model = fitter.cfg, fitter.model
        dt, dev = model.mean_shape.dtype, model.mean_shape.device
        lm = targets.lm68.to(dt)
        B = lm.shape[0]
        w = fitter.lm_weights.expand(B, 68).clone()
        if targets.lm_weights is not None:
            w = w * targets.lm_weights.to(dt)
        dense = trust = None
        n_dense = 0 if fitter.dense_weights is None else fitter.dense_weights.shape[0]
        if targets.dense is not None and n_dense and cfg.w_dense > 0:
            dense = targets.dense.to(dt)
            if dense.shape[1:] != (n_dense, 2):
                raise ValueError(f"dense targets {tuple(dense.shape)} do not match the dense map ({n_dense} points)")
            trust = (torch.ones(B, 1, dtype=dt, device=dev) if targets.dense_weights is None
                     else targets.dense_weights.to(dt))
        parts = None
        if targets.parts is not None and cfg.w_prdl > 0 and fitter.part_mesh is not None:
            maps = torch.as_tensor(targets.parts)
            S = fitter.camera.height
            if tuple(maps.shape) != (B, S, fitter.camera.width):
                raise ValueError(f"part maps {tuple(maps.shape)} do not match the {B} crops of {S}² pixels")
            parts = label_map_points(maps.to(dev), max_points=cfg.prdl_max_points, dtype=dt)
        return FitProblem(
            lm=lm, w=w, dense=dense, dense_trust=trust, parts=parts,
            image=None if targets.image is None else targets.image.to(dt),
            mask=None if targets.mask is None else targets.mask.to(dt),
            lm68_3d=None if targets.lm68_3d is None else targets.lm68_3d.to(dt),
            has_init=targets.init is not None, shared=cfg.share_identity, fit_identity=fit_identity,
            rotation_prior=(targets.rotation_prior.to(dt) if targets.rotation_prior is not None
                            and cfg.w_rotation_prior > 0 else None))


@dataclass
class FitVariables:
    """The optimised tensors. identity (n, n_id'), albedo (n, n_alb) and albedo_offset (n, V, 3)
    have n = 1 for a shared identity, else B; expression (B, n_exp); rotation, translation (B, 3);
    light (B, 27). losses: final per-term values (floats) collected along the way."""

    identity: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    light: torch.Tensor
    albedo: torch.Tensor
    albedo_offset: torch.Tensor | None = None
    losses: dict = field(default_factory=dict)


# -- objective ---------------------------------------------------------------------------------
def point_loss(f: Fitter, pb: FitProblem, identity, expression, rotation, translation) -> torch.Tensor:
    """(B,) point term (68 landmarks + dense points) on the landmark decoder's points."""
    pts = f.decoder(pb.expand(identity), expression)
    return _point_term(f, pb, f.model.project_points(pts, rotation, translation, f.camera))


def _point_term(f: Fitter, pb: FitProblem, pred: torch.Tensor) -> torch.Tensor:
    return O.point_term(pred, pb.lm, pb.w, f.cfg.landmark_robust, pb.dense, f.dense_weights, pb.dense_trust,
                        f.cfg.w_dense)


def _rotation_prior(f: Fitter, pb: FitProblem, rotation: torch.Tensor):
    """The head-rotation prior summed over the batch; 0 without one."""
    if pb.rotation_prior is None:
        return 0.0
    return f.cfg.w_rotation_prior * O.rotation_prior(rotation, pb.rotation_prior).sum()


def _prior(f: Fitter, pb: FitProblem, identity, expression, albedo) -> torch.Tensor:
    """Deep3D's coefficient priors, one per image: a shared identity is expanded first, so every image
    brings its own prior, as independent fits do, and the set pools them. (One prior per set shrank
    less: half-set identities then differed by 0.91 mm on LFW vs 0.67 mm; benchmarks/sets_video.py.)"""
    cfg = f.cfg
    return O.coefficient_prior(pb.expand(identity), expression, pb.expand(albedo), cfg.w_id_prior,
                               cfg.w_exp_prior, cfg.w_alb_prior).sum()


def _temporal(f: Fitter, v: FitVariables):
    """Video: smoothness of pose and expression over the frames in batch order; 0 for single images
    or when disabled."""
    B = v.rotation.shape[0]
    if f.cfg.w_temporal <= 0 or B < 2:
        return 0.0
    return f.cfg.w_temporal * B * O.temporal_term(v.rotation, v.translation, v.expression)


def _prdl(f: Fitter, pb: FitProblem, vertices_world: torch.Tensor) -> torch.Tensor:
    """(B,) PRDL (px²) of the posed faces against the target part maps."""
    return prdl_term(f.part_mesh, vertices_world, f.camera, pb.parts, f.prdl_anchors, f.prdl_part_weights)


def _project_expression(f: Fitter, e: torch.Tensor) -> None:
    """ARKit-style expression weights stay in [0, 1] (projected after every step)."""
    if f.model.exp_prior == "unit_interval":
        with torch.no_grad():
            e.clamp_(0.0, 1.0)


def face_params(f: Fitter, pb: FitProblem, v: FitVariables) -> FaceParams:
    """The variables as FaceParams (B), shared tensors expanded, identity padded to the layout."""
    idv = pb.expand(v.identity)
    n = f.model.layout.n_identity
    if idv.shape[1] < n:
        idv = torch.cat([idv, idv.new_zeros(idv.shape[0], n - idv.shape[1])], 1)
    return FaceParams(identity=idv, expression=v.expression, albedo=pb.expand(v.albedo), rotation=v.rotation,
                      translation=v.translation, light=v.light,
                      albedo_offset=None if v.albedo_offset is None else pb.expand(v.albedo_offset))


# -- stages ------------------------------------------------------------------------------------
def initial_variables(f: Fitter, pb: FitProblem, init: FaceParams | None) -> FitVariables:
    """Zeros and the landmarks' POS pose, or `init` (its identity truncated to the fitted modes and,
    for a shared identity, averaged over the batch)."""
    model = f.model
    dt, dev = model.mean_shape.dtype, model.mean_shape.device
    B, nb_id = pb.batch, 1 if pb.shared else pb.batch
    if init is not None:
        init = init.map(lambda t: t.detach().to(dt))
        idv = init.identity[:, : f.n_id].clone()
        if pb.shared:
            idv = idv.mean(0, keepdim=True)
        return FitVariables(
            identity=idv, expression=init.expression.clone(), rotation=init.rotation.clone(),
            translation=init.translation.clone(), light=init.light.clone(),
            albedo=init.albedo.mean(0, keepdim=True).clone() if pb.shared else init.albedo.clone())
    rot, trans = pos_init(pb.lm, f.decoder.mean[:68], f.camera, pb.w)
    return FitVariables(
        identity=torch.zeros(nb_id, f.n_id, dtype=dt, device=dev),
        expression=torch.zeros(B, model.layout.n_expression, dtype=dt, device=dev), rotation=rot,
        translation=trans, light=torch.zeros(B, model.layout.size("light"), dtype=dt, device=dev),
        albedo=torch.zeros(nb_id, model.layout.n_albedo, dtype=dt, device=dev))


def pose_stage(f: Fitter, pb: FitProblem, v: FitVariables) -> FitVariables:
    """Stage 1: per image, the starting pose that explains the landmarks best, then rotation and
    translation on the landmarks (shape as it starts)."""
    cfg = f.cfg
    # A regressed pose can be far off (profiles), so it competes with the landmarks' POS pose
    # (AFLW2000-3D dev, regress+refine, >60° bin: 7.30 % NME keeping the regressed pose always);
    # 3-D landmarks add a Procrustes pose.
    candidates = [pos_init(pb.lm, f.decoder.mean[:68], f.camera, pb.w)] if pb.has_init else []
    if pb.lm68_3d is not None and cfg.pose_from_3d:
        candidates.append(procrustes_init(pb.lm68_3d, f.decoder.mean[:68], f.camera, pb.w))
    idv, exp, rot, trans = v.identity, v.expression, v.rotation, v.translation
    rot.requires_grad_(True)
    trans.requires_grad_(True)
    with torch.no_grad():
        for rot_p, trans_p in candidates:
            better = point_loss(f, pb, idv, exp, rot_p, trans_p) < point_loss(f, pb, idv, exp, rot, trans)
            rot[better], trans[better] = rot_p[better], trans_p[better]
    # With a rotation prior the loss below has it; candidates are still judged on the points alone.
    # Translation moves in mm, rotation in radians: scale the translation step.
    opt = torch.optim.Adam([{"params": [rot], "lr": cfg.lr_pose}, {"params": [trans], "lr": cfg.lr_pose * 50}])
    for _ in range(cfg.steps_pose):
        opt.zero_grad()
        (point_loss(f, pb, idv, exp, rot, trans).sum() + _rotation_prior(f, pb, rot)).backward()
        opt.step()
    return v


def shape_stage(f: Fitter, pb: FitProblem, v: FitVariables) -> FitVariables:
    """Stage 2: identity (unless fixed) and expression, and the pose, on the landmarks with priors."""
    cfg = f.cfg
    idv, exp, rot, trans = v.identity, v.expression, v.rotation, v.translation
    idv.requires_grad_(pb.fit_identity)
    exp.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [idv, exp] if pb.fit_identity else [exp], "lr": cfg.lr_shape},
                            {"params": [rot], "lr": cfg.lr_pose * 0.5},
                            {"params": [trans], "lr": cfg.lr_pose * 25}])
    no_albedo = idv.new_zeros(idv.shape[0], 0)
    for _ in range(cfg.steps_shape):
        opt.zero_grad()
        total = (cfg.w_landmark * point_loss(f, pb, idv, exp, rot, trans).sum()
                 + _prior(f, pb, idv, exp, no_albedo) + _rotation_prior(f, pb, rot))
        total = total + _temporal(f, v)
        total.backward()
        opt.step()
        _project_expression(f, exp)
    return v


def parts_stage(f: Fitter, pb: FitProblem, v: FitVariables) -> FitVariables:
    """Stage 2b (with part maps and `w_prdl` > 0): the shape stage's variables and objective plus
    w_prdl × PRDL through the full mesh (decoded and rasterized every step)."""
    cfg, model = f.cfg, f.model
    if pb.parts is None or cfg.steps_prdl <= 0:
        return v
    idv, exp, rot, trans = v.identity, v.expression, v.rotation, v.translation
    idv.requires_grad_(pb.fit_identity)
    exp.requires_grad_(True)
    lr = cfg.lr_prdl
    opt = torch.optim.Adam([{"params": [idv, exp] if pb.fit_identity else [exp], "lr": lr},
                            {"params": [rot], "lr": lr * 0.05}, {"params": [trans], "lr": lr * 2}])
    no_albedo = idv.new_zeros(idv.shape[0], 0)
    part = None
    for _ in range(cfg.steps_prdl):
        opt.zero_grad()
        verts = model.shape(pb.expand(idv), exp)
        world = model.pose(verts, rot, trans)
        pts = model.landmarks(verts)
        if pb.dense is not None:
            pts = torch.cat([pts, verts[:, f.decoder.extra_vertices]], 1)
        points = _point_term(f, pb, model.project_points(pts, rot, trans, f.camera))
        part = _prdl(f, pb, world)
        total = cfg.w_landmark * points.sum() + cfg.w_prdl * part.sum() + _prior(f, pb, idv, exp, no_albedo)
        total = total + _temporal(f, v) + _rotation_prior(f, pb, rot)
        total.backward()
        opt.step()
        _project_expression(f, exp)
    if part is not None:
        v.losses["prdl_px2"] = float(part.detach().mean())
    return v


@dataclass
class PhotoInputs:
    """The photometric stages' fixed inputs: the identity encoder's warp and the photos' embeddings
    (None without an encoder or w_identity)."""

    affine: torch.Tensor | None = None
    identity_target: torch.Tensor | None = None

    @staticmethod
    def build(f: Fitter, pb: FitProblem) -> PhotoInputs:
        if f.encoder is None or f.cfg.w_identity <= 0:
            return PhotoInputs()
        aff = O.identity_affine(pb.lm)
        return PhotoInputs(aff, O.identity_target(f.encoder, pb.image.permute(0, 3, 1, 2), aff))


def photo_objective(f: Fitter, pb: FitProblem, v: FitVariables, inputs: PhotoInputs):
    """The full hybrid objective through the renderer (full decode): (total, photo (B,), points (B,))."""
    cfg, model = f.cfg, f.model
    p = face_params(f, pb, v)
    geo = model(p)
    photo, out = O.photo_term(f.renderer, geo, p.light, pb.image, pb.mask)
    pts = model.landmarks(geo.vertices)
    if pb.dense is not None:
        pts = torch.cat([pts, geo.vertices[:, f.decoder.extra_vertices]], 1)
    points = _point_term(f, pb, model.project_points(pts, v.rotation, v.translation, f.camera))
    total = (cfg.w_photo * photo.sum() + cfg.w_landmark * points.sum() + _prior(f, pb, v.identity, v.expression, v.albedo)
             + cfg.w_light * O.light_prior(v.light).sum())
    if v.albedo_offset is not None:
        total = total + cfg.w_albedo_smooth * O.albedo_smoothness(v.albedo_offset, f.edges).sum()
    if pb.parts is not None:
        total = total + cfg.w_prdl * _prdl(f, pb, geo.vertices_world).sum()
    if inputs.identity_target is not None:
        total = total + cfg.w_identity * O.identity_term(f.encoder, out, pb.image.permute(0, 3, 1, 2), inputs.affine,
                                                         inputs.identity_target).sum()
    total = total + _temporal(f, v) + _rotation_prior(f, pb, v.rotation)
    return total, photo, points


def _optimise_photo(f: Fitter, pb: FitProblem, v: FitVariables, inputs: PhotoInputs, groups, steps: int) -> None:
    opt = torch.optim.Adam(groups)
    photo = points = None
    for _ in range(steps):
        opt.zero_grad()
        total, photo, points = photo_objective(f, pb, v, inputs)
        total.backward()
        opt.step()
        _project_expression(f, v.expression)
        if v.albedo_offset is not None:
            with torch.no_grad():
                v.albedo_offset.clamp_(-0.5, 0.5)
    if photo is not None:
        v.losses.update(photo=float(photo.detach().mean()), landmark_px2_photo=float(points.detach().mean()))


def initial_light(f: Fitter, pb: FitProblem, v: FitVariables) -> torch.Tensor:
    """(B, 27) closed-form SH light from the current geometry: each vertex's colour read at its
    projection (occlusion ignored), over the skin vertices facing the camera (and the mask)."""
    with torch.no_grad():
        geo = f.model(face_params(f, pb, v))
        screen = f.camera.project(geo.vertices_world)
        S = f.camera.width
        x = screen[..., 0].round().long().clamp(0, S - 1)
        y = screen[..., 1].round().long().clamp(0, S - 1)
        b = torch.arange(pb.batch, device=screen.device)[:, None]
        col = pb.image[b, y, x]  # (B, V, 3)
        vis = (geo.normals[..., 2] > 0.3).to(col) * f.skin.to(col)
        if pb.mask is not None:
            vis = vis * pb.mask[b, y, x]
        return solve_sh_light(col, geo.normals, geo.albedo, vis)


def photo_stage(f: Fitter, pb: FitProblem, v: FitVariables, inputs: PhotoInputs) -> FitVariables:
    """Stage 3: closed-form light, then identity (unless fixed), expression, albedo coefficients, light
    and pose through the renderer; no per-vertex albedo yet."""
    cfg = f.cfg
    v.light = initial_light(f, pb, v)
    v.light.requires_grad_(True)
    v.albedo.requires_grad_(True)
    # Shading informs the identity of a single photo. An image set keeps the average of its
    # photos' landmark fits: refined jointly from the shading, the shared identity was less
    # stable (LFW half-set distance 1.46 mm vs 0.88; benchmarks/sets_video.py --photometric).
    v.identity.requires_grad_(pb.fit_identity)
    # Left free from the start, a per-vertex albedo (Adam moves every vertex at the full rate) soaks
    # up the shading that should move the shape (synthetic benchmark: 2.7 mm with it, 1.7 mm
    # without; benchmarks/synthetic.py), hence the separate albedo stage. The learning rates are
    # per-parameter step sizes: identity/expression in units of their prior, rotation in radians,
    # translation in mm, SH coefficients.
    lr = cfg.lr_photo
    _optimise_photo(f, pb, v, inputs, [{"params": [v.identity, v.expression, v.albedo], "lr": lr},
                                       {"params": [v.light], "lr": lr * 2}, {"params": [v.rotation], "lr": lr * 0.05},
                                       {"params": [v.translation], "lr": lr * 2}], cfg.steps_photo)
    return v


def albedo_stage(f: Fitter, pb: FitProblem, v: FitVariables, inputs: PhotoInputs) -> FitVariables:
    """Stage 4: geometry frozen, a smooth per-vertex albedo residual and the light (models without an
    albedo basis only)."""
    cfg, model = f.cfg, f.model
    if not (cfg.estimate_albedo and model.layout.n_albedo == 0 and cfg.steps_albedo > 0):
        return v
    for t in (v.identity, v.expression, v.albedo, v.rotation, v.translation):
        t.requires_grad_(False)
    v.albedo_offset = torch.zeros(v.identity.shape[0], model.n_vertices, 3, dtype=pb.lm.dtype, device=pb.lm.device,
                                  requires_grad=True)
    _optimise_photo(f, pb, v, inputs, [{"params": [v.albedo_offset], "lr": cfg.lr_albedo},
                                       {"params": [v.light], "lr": cfg.lr_photo}], cfg.steps_albedo)
    return v


def fit_result(f: Fitter, pb: FitProblem, v: FitVariables) -> FitResult:
    """The final landmark residual (68 landmarks, decoder points) and the detached parameters."""
    with torch.no_grad():
        pred = f.model.project_points(f.decoder(pb.expand(v.identity), v.expression)[:, :68], v.rotation,
                                      v.translation, f.camera)
        v.losses["landmark_px2"] = float(O.point_term(pred, pb.lm, pb.w, f.cfg.landmark_robust).mean())
        params = face_params(f, pb, v).map(lambda t: t.detach())
    return FitResult(params, pred.detach(), v.losses)


__all__ = ["FitProblem", "FitVariables", "PhotoInputs", "albedo_stage", "fit_result", "initial_light",
           "initial_variables", "parts_stage", "photo_objective", "photo_stage", "point_loss", "pose_stage",
           "shape_stage"]
