"""Analysis-by-synthesis fitting of a morphable model to images (Deep3D's hybrid losses).

Works in the 224² aligned crop with Deep3D's camera. Staged schedule, batched over faces:
  1. pose      closed-form POS init from the 68 landmarks, then perspective refinement;
  2. shape     pose + identity + expression on landmarks with priors;
  3. photo     + lighting (closed-form init) and albedo coefficients, through the differentiable
               renderer, skin-masked robust photometric loss, optional identity-perceptual loss;
  4. albedo    geometry frozen: a smooth per-vertex albedo residual (models without an albedo basis).
Image sets share one identity (and albedo); video adds temporal smoothness on pose and expression.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from ..geometry.camera import PerspectiveCamera
from ..models.layout import FaceParams
from ..models.morphable import MorphableModel
from ..render.renderer import MeshRenderer
from ..render.shading import DEEP3D_INIT_LIT, sh_basis
from . import losses as L
from .pose_init import pos_init, procrustes_init


@dataclass(frozen=True)
class FitConfig:
    """Schedule and loss weights. Landmark loss is the weighted mean squared error in crop pixels²."""

    n_identity: int = 100
    steps_pose: int = 40
    steps_shape: int = 120
    steps_photo: int = 80
    steps_albedo: int = 20
    lr_pose: float = 0.02
    lr_shape: float = 0.05
    lr_photo: float = 0.02
    lr_albedo: float = 0.01  # per-vertex albedo residual (stage 4)
    w_landmark: float = 1.0
    # Dense FaceMesh correspondences (when the detection has them and the model a DenseMap): weight
    # of their 1/sigma²-weighted mean squared error (px²) relative to the 68-landmark term's
    # (AFLW2000-3D dev, GT boxes, FaceMesh used below 45° of yaw: 0 -> 3.52, 0.3 -> 3.49,
    # 1 -> 3.46, 1.5 -> 3.49, 3 -> 3.65; then the yaw ramp of `dense.yaw_gate`).
    w_dense: float = 1.0
    # Deep3D's landmark pattern with a milder emphasis than its 20 (training keeps 20): at 20 the
    # nose and inner mouth outweigh the other 51 points ~7:1 and the jaw and eye corners are left
    # under-fitted (AFLW2000-3D dev NME 3.530 vs 3.521 at 1 and 3.522 at 3, same priors).
    landmark_emphasis: float = 3.0
    landmark_robust: float | None = 12.0  # px; soft cap on each landmark's error
    pose_from_3d: bool = False  # also start from `FitTargets.lm68_3d`'s Procrustes pose when given
    w_id_prior: float = 0.01
    w_exp_prior: float = 0.1
    w_alb_prior: float = 0.01
    w_photo: float = 200.0
    w_light: float = 1.0
    w_albedo_smooth: float = 50.0
    w_identity: float = 20.0  # identity-perceptual (only with an encoder)
    w_temporal: float = 0.0  # video: smoothness of pose and expression across frames
    share_identity: bool = False  # image set / video: one identity (and albedo) for the batch
    estimate_albedo: bool = True  # per-vertex residual when the model has no albedo basis
    render_size: int = 224
    seed: int = 0


@dataclass(frozen=True)
class FitTargets:
    """What a fit is fitted to (B faces, all in crop pixels of an S×S crop).

    lm68: (B, 68, 2) target landmarks; lm_weights: (B, 68) confidences (1 = trusted, 0 = ignore);
    image: (B, S, S, 3) float [0, 1] crop, or None for a landmark-only fit;
    mask: (B, S, S) float face/skin mask for the photometric loss (None: all pixels);
    init: optional FaceParams to start from (e.g. from a regressor).
    dense: (B, N, 2) FaceMesh points in crop pixels (N = the fitter's DenseMap size), or None;
    dense_weights: (B, N) or (B, 1) trust in them (0 = ignore, e.g. a profile or no FaceMesh).
    lm68_3d: (B, 68, 3) 3-D landmark estimates in crop pixels (x right, y down, z towards the
        viewer, any offset), e.g. 3DDFA_V2's: a second starting pose besides POS (`procrustes_init`).
    """

    lm68: torch.Tensor
    lm_weights: torch.Tensor | None = None
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    init: FaceParams | None = None
    dense: torch.Tensor | None = None
    dense_weights: torch.Tensor | None = None
    lm68_3d: torch.Tensor | None = None


@dataclass(frozen=True)
class FitResult:
    """params: fitted FaceParams (B); lm68: (B, 68, 2) model landmarks projected into the crop;
    losses: final per-term values (floats, batch means); times: seconds per stage."""

    params: FaceParams
    lm68: torch.Tensor
    losses: dict = field(default_factory=dict)
    times: dict = field(default_factory=dict)


@contextmanager
def _single_thread():
    """The landmark stages run thousands of tiny ops: on 2 cores, intra-op threading only adds
    synchronisation (and stalls badly when the cores are busy), so run them on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class Fitter:
    """Fit `model` to landmarks (and images) in Deep3D's crop frame.

    Args:
        model: the MorphableModel (its dtype/device are used throughout).
        config: FitConfig.
        camera: the crop camera (Deep3D's at `config.render_size` by default).
        identity_encoder: optional module (B,3,H,W [0,1]) -> (B, D) embeddings for the
            identity-perceptual loss (e.g. nets.mobilefacenet.IdentityEncoder).
        dense_map: optional fit.dense.DenseMap: the model vertices of `FitTargets.dense` points.
    """

    def __init__(self, model: MorphableModel, config: FitConfig = FitConfig(),
                 camera: PerspectiveCamera | None = None, identity_encoder=None, dense_map=None):
        self.model = model
        self.cfg = config
        self.camera = camera or PerspectiveCamera.deep3d(config.render_size)
        self.encoder = identity_encoder
        self.dense_map = dense_map
        self.n_id = min(config.n_identity, model.layout.n_identity)
        lm = model.landmarks68
        V = model.n_vertices
        dt, dev = model.mean_shape.dtype, model.mean_shape.device
        self._n_dense = 0
        if dense_map is not None:
            if int(dense_map.vertex.max()) >= V:
                raise ValueError(f"dense map indexes vertex {int(dense_map.vertex.max())}, model has {V}")
            dv = torch.as_tensor(dense_map.vertex, device=dev)
            self._dense_vertex = dv
            self._dense_w = dense_map.weights(dt, dev)
            self._n_dense = dense_map.n_points
            lm_off = torch.cat([model.landmark_offsets, model.landmark_offsets.new_zeros(len(dv), 3)])
            lm = torch.cat([lm, dv])
        else:
            lm_off = model.landmark_offsets
        # Landmark-only decoding: slice the bases to the 68 landmark (+ dense) vertices once.
        rows = (3 * lm[:, None] + torch.arange(3, device=lm.device)).reshape(-1)
        self._lm_mean = model.mean_shape[lm] + lm_off
        self._lm_id = model.id_basis[rows]
        self._lm_exp = model.exp_basis[rows]
        self._skin = model.skin_weights()
        self._edges = None
        self._renderer = None
        self._V = V
        self._lm_w = L.deep3d_landmark_weights(model.mean_shape.dtype, model.mean_shape.device,
                                               config.landmark_emphasis)

    # -- helpers ----------------------------------------------------------------------------
    def _lm3d(self, identity, expression):
        """(B, 68 + N_dense, 3) model-space landmarks, then the dense map's vertices."""
        B = identity.shape[0]
        off = identity @ self._lm_id[:, : identity.shape[1]].T + expression @ self._lm_exp.T
        return self._lm_mean + off.view(B, -1, 3)

    def _point_loss(self, pred, lm, w, dense, dense_w):
        """(B,) landmark loss in px² (weighted mean over the 68) + w_dense × the dense term.
        pred: (B, 68 [+ N], 2) projected points."""
        cfg = self.cfg
        loss = L.landmark_loss(pred[:, :68], lm, w, image_size=1.0, robust=cfg.landmark_robust) / 68.0
        if dense is not None and cfg.w_dense > 0:
            wd = (self._dense_w * dense_w).expand(pred.shape[0], -1)
            dl = L.landmark_loss(pred[:, 68:], dense, wd, image_size=1.0, robust=cfg.landmark_robust) / 68.0
            # landmark_loss is a weighted mean: rescale so that the trust (dense_w) scales the term
            # instead of cancelling out (a face with all points at trust 0 contributes 0).
            loss = loss + cfg.w_dense * dl * (wd.sum(-1) / self._dense_w.sum())
        return loss

    def project(self, pts: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) model space -> (B, N, 2) crop pixels under the pose."""
        return self.camera.project(self.model.pose(pts, rotation, translation))[..., :2]

    def _full_identity(self, idv):
        """Pad the fitted identity modes to the model's layout size."""
        n = self.model.layout.n_identity
        return torch.cat([idv, idv.new_zeros(idv.shape[0], n - idv.shape[1])], 1) if idv.shape[1] < n else idv

    def _prior(self, idv, exp, alb, expand):
        """Deep3D's coefficient priors (`losses.coefficient_prior`), one per image: a shared identity
        (image set, video) is expanded first, so every image brings its own prior, as independent
        fits do, and the set pools them. (One prior per set shrank less: half-set identities then
        differed by 0.91 mm on LFW vs 0.67 mm; benchmarks/sets_video.py.)"""
        cfg = self.cfg
        return L.coefficient_prior(expand(idv), exp, expand(alb), cfg.w_id_prior, cfg.w_exp_prior,
                                   cfg.w_alb_prior).sum()

    def _temporal(self, rot, trans, exp):
        """Video: smoothness of pose (rotation scaled to ~mm) and expression over the frames in
        batch order; 0 for single images or when disabled."""
        B = rot.shape[0]
        if self.cfg.w_temporal <= 0 or B < 2:
            return 0.0
        return self.cfg.w_temporal * B * (L.temporal_smoothness(torch.cat([rot * 100, trans], 1))
                                          + 10 * L.temporal_smoothness(exp))

    def _expr_project(self, e):
        if self.model.exp_prior == "unit_interval":
            with torch.no_grad():
                e.clamp_(0.0, 1.0)

    # -- main -------------------------------------------------------------------------------
    def fit(self, targets: FitTargets) -> FitResult:
        self._threads = torch.get_num_threads()
        with _single_thread():
            return self._fit(targets)

    def _fit(self, targets: FitTargets) -> FitResult:
        cfg, model = self.cfg, self.model
        torch.manual_seed(cfg.seed)
        dt, dev = model.mean_shape.dtype, model.mean_shape.device
        lm = targets.lm68.to(dt)
        B = lm.shape[0]
        w = self._lm_w.expand(B, 68).clone()
        if targets.lm_weights is not None:
            w = w * targets.lm_weights.to(dt)
        dense = dense_w = None
        if targets.dense is not None and self._n_dense and cfg.w_dense > 0:
            dense = targets.dense.to(dt)
            if dense.shape[1:] != (self._n_dense, 2):
                raise ValueError(f"dense targets {tuple(dense.shape)} do not match the dense map ({self._n_dense} points)")
            dense_w = (torch.ones(B, 1, dtype=dt, device=dev) if targets.dense_weights is None
                       else targets.dense_weights.to(dt))
        times, t0 = {}, time.perf_counter()
        nb_id = 1 if cfg.share_identity else B
        fixed_identity = False
        if cfg.share_identity and targets.init is None and B > 1:
            # Image set / video: fit every image on its own, average the identities, then fit the
            # per-image expression and pose to that one identity (kept fixed on the landmarks).
            # A jointly optimised shared identity came out less stable and less accurate than the
            # average (LFW half-set distance 0.85 vs 0.66 mm, benchmarks/sets_video.py; synthetic
            # 6-view sets, neutral-shape error 2.16 vs 2.05 mm), and drifted back there when
            # started from the average.
            solo = Fitter(model, replace(cfg, share_identity=False, w_temporal=0.0, steps_photo=0),
                          self.camera, dense_map=self.dense_map).fit(replace(targets, image=None))
            targets = replace(targets, init=solo.params)
            fixed_identity = True
            times["independent"] = time.perf_counter() - t0

        # Stage 1: pose.
        if targets.init is not None:
            init = targets.init.map(lambda t: t.detach().to(dt))
            rot, trans = init.rotation.clone(), init.translation.clone()
            idv = init.identity[:, : self.n_id].clone()
            if cfg.share_identity:
                idv = idv.mean(0, keepdim=True)
            exp = init.expression.clone()
        else:
            rot, trans = pos_init(lm, self._lm_mean[:68], self.camera, w)
            idv = torch.zeros(nb_id, self.n_id, dtype=dt, device=dev)
            exp = torch.zeros(B, model.layout.n_expression, dtype=dt, device=dev)
        candidates = [] if targets.init is None else [pos_init(lm, self._lm_mean[:68], self.camera, w)]
        if targets.lm68_3d is not None and cfg.pose_from_3d:
            candidates.append(procrustes_init(targets.lm68_3d.to(dt), self._lm_mean[:68], self.camera, w))
        rot.requires_grad_(True)
        trans.requires_grad_(True)
        # A shared identity (and albedo, albedo residual) is stored once and expanded to the batch.
        expand = (lambda x: x.expand(B, *x.shape[1:])) if cfg.share_identity else (lambda x: x)

        def lm_objective(idv_, exp_, rot_, trans_):
            pred = self.project(self._lm3d(expand(idv_), exp_), rot_, trans_)
            return self._point_loss(pred, lm, w, dense, dense_w), pred[:, :68]

        # Starting poses: a regressed one can be far off (profiles), so it competes with the
        # landmarks' POS pose (AFLW2000-3D dev, regress+refine, >60° bin: 7.30 % NME keeping the
        # regressed pose always); 3-D landmarks add a Procrustes pose. Per image, the one that
        # explains the landmarks best is kept.
        with torch.no_grad():
            for rot_p, trans_p in candidates:
                better = lm_objective(idv, exp, rot_p, trans_p)[0] < lm_objective(idv, exp, rot, trans)[0]
                rot[better], trans[better] = rot_p[better], trans_p[better]
        opt = torch.optim.Adam([rot, trans], lr=cfg.lr_pose)
        # Translation moves in mm, rotation in radians: scale the translation step.
        opt.param_groups[0]["params"] = [rot]
        opt.add_param_group({"params": [trans], "lr": cfg.lr_pose * 50})
        for _ in range(cfg.steps_pose):
            opt.zero_grad()
            loss, _ = lm_objective(idv, exp, rot, trans)
            loss.sum().backward()
            opt.step()
        times["pose"] = time.perf_counter() - t0

        # Stage 2: shape + expression (+ pose) on landmarks.
        t1 = time.perf_counter()
        idv.requires_grad_(not fixed_identity)
        exp.requires_grad_(True)
        opt = torch.optim.Adam([{"params": [exp] if fixed_identity else [idv, exp], "lr": cfg.lr_shape},
                                {"params": [rot], "lr": cfg.lr_pose * 0.5},
                                {"params": [trans], "lr": cfg.lr_pose * 25}])
        for _ in range(cfg.steps_shape):
            opt.zero_grad()
            loss, _ = lm_objective(idv, exp, rot, trans)
            total = cfg.w_landmark * loss.sum() + self._prior(idv, exp, idv.new_zeros(idv.shape[0], 0), expand)
            total = total + self._temporal(rot, trans, exp)
            total.backward()
            opt.step()
            self._expr_project(exp)
        times["shape"] = time.perf_counter() - t1

        light = torch.zeros(B, 27, dtype=dt, device=dev)
        alb = torch.zeros(nb_id, model.layout.n_albedo, dtype=dt, device=dev)
        if targets.init is not None:
            light = init.light.clone()
            alb = init.albedo.mean(0, keepdim=True).clone() if cfg.share_identity else init.albedo.clone()
        offset = None
        final = {}
        if targets.image is not None and cfg.steps_photo > 0:
            t2 = time.perf_counter()
            torch.set_num_threads(self._threads)
            light, alb, offset, final = self._photometric(targets, lm, w, dense, dense_w, idv, exp, rot, trans,
                                                          light, alb, expand, fit_identity=not fixed_identity)
            torch.set_num_threads(1)
            times["photo"] = time.perf_counter() - t2

        with torch.no_grad():
            pred = self.project(self._lm3d(expand(idv), exp)[:, :68], rot, trans)
            final["landmark_px2"] = float((L.landmark_loss(pred, lm, w, image_size=1.0,
                                                           robust=cfg.landmark_robust) / 68.0).mean())
            params = FaceParams(
                identity=self._full_identity(expand(idv)).detach(), expression=exp.detach(),
                albedo=expand(alb).detach(), rotation=rot.detach(), translation=trans.detach(),
                light=light.detach(),
                albedo_offset=None if offset is None else expand(offset).detach(),
            )
        times["total"] = time.perf_counter() - t0
        return FitResult(params, pred.detach(), final, times)

    # -- photometric stage --------------------------------------------------------------------
    def _get_renderer(self):
        if self._renderer is None:
            self._renderer = MeshRenderer(self.camera, self.model.faces, outputs=("rgb", "mask"),
                                          antialias=True)
        return self._renderer

    def _init_light(self, image, mask, albedo, normals_world, world):
        """Closed-form SH light (least squares per channel) from the current geometry."""
        with torch.no_grad():
            screen = self.camera.project(world)
            S = self.camera.width
            x = screen[..., 0].round().long().clamp(0, S - 1)
            y = screen[..., 1].round().long().clamp(0, S - 1)
            B = world.shape[0]
            b = torch.arange(B, device=world.device)[:, None]
            col = image[b, y, x]  # (B, V, 3) observed colour at each vertex (ignoring occlusion)
            vis = (normals_world[..., 2] > 0.3).to(col) * self._skin.to(col)
            if mask is not None:
                vis = vis * mask[b, y, x]
            Y = sh_basis(normals_world)  # (B, V, 9)
            out = []
            for c in range(3):
                A = Y * albedo[..., c:c + 1] * vis[..., None].sqrt()
                rhs = col[..., c] * vis.sqrt()
                AtA = A.transpose(1, 2) @ A + 1e-3 * torch.eye(9, dtype=A.dtype, device=A.device)
                g = torch.linalg.solve(AtA, (A.transpose(1, 2) @ rhs[..., None]))[..., 0]
                out.append(g)
            g = torch.stack(out, 1)  # (B, 3, 9) absolute coefficients
            g[..., 0] -= DEEP3D_INIT_LIT
            return g.reshape(B, 27)

    def _photometric(self, targets, lm, w, dense, dense_w, idv, exp, rot, trans, light, alb, expand,
                     fit_identity=True):
        cfg, model = self.cfg, self.model
        image = targets.image.to(lm.dtype)
        mask = targets.mask.to(lm.dtype) if targets.mask is not None else None
        renderer = self._get_renderer()
        offset = None
        with torch.no_grad():
            geo = model(self._params(idv, exp, alb, rot, trans, light, offset, expand))
            light = self._init_light(image, mask, geo.albedo, geo.normals, geo.vertices_world)
        light.requires_grad_(True)
        alb.requires_grad_(True)
        # Shading informs the identity of a single photo. An image set keeps the average of its
        # photos' landmark fits: refined jointly from the shading, the shared identity was less
        # stable (LFW half-set distance 1.46 mm vs 0.88; benchmarks/sets_video.py --photometric).
        idv.requires_grad_(fit_identity)
        emb_target = aff = None
        if self.encoder is not None and cfg.w_identity > 0:
            from ..nets.mobilefacenet import similarity_to_template

            # Both the photo and the render are warped to MobileFaceNet's 112×96 template by the
            # same 5-point similarity (from the target landmarks), so only the face content differs.
            aff = similarity_to_template(MorphableModel.lm5_from_lm68(lm)).to(lm)
            with torch.no_grad():
                emb_target = self.encoder(image.permute(0, 3, 1, 2), aff)

        def objective():
            p = self._params(idv, exp, alb, rot, trans, light, offset, expand)
            geo = model(p)
            out = renderer(geo.vertices_world, geo.albedo, p.light, normals=geo.normals)
            m = out.mask if mask is None else out.mask * mask
            photo = L.photometric_loss(out.rgb, image, m)
            pts = model.landmarks(geo.vertices)
            if dense is not None:
                pts = torch.cat([pts, geo.vertices[:, self._dense_vertex]], 1)
            lml = self._point_loss(self.project(pts, rot, trans), lm, w, dense, dense_w)
            total = (cfg.w_photo * photo.sum() + cfg.w_landmark * lml.sum() + self._prior(idv, exp, alb, expand)
                     + cfg.w_light * L.light_prior(light).sum())
            if offset is not None:
                total = total + cfg.w_albedo_smooth * L.albedo_smoothness(offset, self._edges).sum()
            if emb_target is not None:
                emb = self.encoder(out.rgb.permute(0, 3, 1, 2) * out.mask[:, None]
                                   + image.permute(0, 3, 1, 2) * (1 - out.mask[:, None]), aff)
                total = total + cfg.w_identity * L.identity_loss(emb, emb_target).sum()
            total = total + self._temporal(rot, trans, exp)
            return total, photo, lml

        def run(groups, steps):
            opt = torch.optim.Adam(groups)
            photo = lml = None
            for _ in range(steps):
                opt.zero_grad()
                total, photo, lml = objective()
                total.backward()
                opt.step()
                self._expr_project(exp)
                if offset is not None:
                    with torch.no_grad():
                        offset.clamp_(-0.5, 0.5)
            return photo, lml

        # Geometry and light first, without a per-vertex albedo: left free from the start, the
        # residual (Adam moves every vertex at the full rate) soaks up the shading that should
        # move the shape (synthetic benchmark: 2.7 mm with it, 1.7 mm without; benchmarks/synthetic.py).
        # The learning rates are per-parameter step sizes: identity/expression in units of their
        # prior, rotation in radians, translation in mm, SH coefficients.
        lr = cfg.lr_photo
        photo, lml = run([{"params": [idv, exp, alb], "lr": lr}, {"params": [light], "lr": lr * 2},
                          {"params": [rot], "lr": lr * 0.05}, {"params": [trans], "lr": lr * 2}], cfg.steps_photo)
        if cfg.estimate_albedo and model.layout.n_albedo == 0 and cfg.steps_albedo > 0:
            if self._edges is None:
                self._edges = mesh_edges(model.faces)
            for t in (idv, exp, alb, rot, trans):
                t.requires_grad_(False)
            offset = torch.zeros(idv.shape[0], self._V, 3, dtype=lm.dtype, device=lm.device, requires_grad=True)
            photo, lml = run([{"params": [offset], "lr": cfg.lr_albedo}, {"params": [light], "lr": lr}],
                              cfg.steps_albedo)
        final = {}
        if photo is not None:
            final = {"photo": float(photo.detach().mean()), "landmark_px2_photo": float(lml.detach().mean())}
        return light.detach(), alb.detach(), None if offset is None else offset.detach(), final

    def _params(self, idv, exp, alb, rot, trans, light, offset, expand):
        return FaceParams(identity=self._full_identity(expand(idv)), expression=exp, albedo=expand(alb),
                          rotation=rot, translation=trans, light=light,
                          albedo_offset=None if offset is None else expand(offset))


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """(E, 2) unique undirected vertex pairs of a triangle mesh (F, 3)."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    return torch.unique(torch.sort(e, dim=1).values, dim=0)


__all__ = ["FitConfig", "FitResult", "FitTargets", "Fitter"]
