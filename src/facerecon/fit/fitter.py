"""Analysis-by-synthesis fitting of a morphable model to images (Deep3D's hybrid losses).

Works in the 224² aligned crop with Deep3D's camera. Staged schedule, batched over faces
(`fit.stages`, one function per stage):
  1. pose      closed-form POS init from the 68 landmarks, then perspective refinement;
  2. shape     pose + identity + expression on landmarks with priors;
 2b. parts     with part maps (`FitTargets.parts`) and `w_prdl` > 0: + 3DDFA_V3's PRDL;
  3. photo     + lighting (closed-form init) and albedo coefficients, through the differentiable
               renderer, skin-masked robust photometric loss, optional identity-perceptual loss;
  4. albedo    geometry frozen: a smooth per-vertex albedo residual (models without an albedo basis).
Image sets share one identity (and albedo; `fit.sets`); video adds temporal smoothness on pose and
expression.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch

from ..geometry.camera import PerspectiveCamera
from ..geometry.mesh import edge_topology
from ..log import progress
from ..models.morphable import MorphableModel
from ..objective import deep3d_landmark_weights
from ..render.renderer import MeshRenderer
from . import sets, stages
from .config import FitConfig, FitResult, FitTargets
from .threads import num_threads

_DEFAULT_CONFIG = FitConfig()


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

    def __init__(self, model: MorphableModel, config: FitConfig = _DEFAULT_CONFIG,
                 camera: PerspectiveCamera | None = None, identity_encoder=None, dense_map=None):
        self.model = model
        self.cfg = config
        self.camera = camera or PerspectiveCamera.deep3d(config.render_size)
        self.encoder = identity_encoder
        self.dense_map = dense_map
        self.n_id = min(config.n_identity, model.layout.n_identity)
        dt, dev = model.mean_shape.dtype, model.mean_shape.device
        self.dense_weights = None  # (N,) 1/sigma² of the dense map's points
        if dense_map is not None:
            if int(dense_map.vertex.max()) >= model.n_vertices:
                raise ValueError(f"dense map indexes vertex {int(dense_map.vertex.max())}, "
                                 f"model has {model.n_vertices}")
            self.dense_weights = dense_map.weights(dt, dev)
        # The landmark stages decode only the 68 landmarks (+ dense points): bases sliced once.
        self.decoder = model.landmark_decoder(None if dense_map is None else dense_map.vertex)
        self.lm_weights = deep3d_landmark_weights(dt, dev, config.landmark_emphasis)
        self.skin = model.skin_weights()
        self._renderer = None
        self._edges = None
        self._part_mesh = None

    @property
    def part_mesh(self):
        """PRDL's labelled mesh (`objective.prdl.PartMesh`), or None for a model without part
        annotations (PRDL is then skipped with a warning)."""
        if self._part_mesh is None:
            from ..models.annotations import annotations_for
            from ..objective.prdl import PartMesh

            ann = annotations_for(self.model)
            if ann is None:
                logging.getLogger(__name__).warning("model %s has no part annotations: PRDL is skipped",
                                                    getattr(self.model, "name", "?"))
                self._part_mesh = False
            else:
                self._part_mesh = PartMesh(ann, self.model.faces)
        return self._part_mesh or None

    @property
    def prdl_anchors(self) -> torch.Tensor:
        """(A, 2) PRDL's anchor grid over the crop."""
        from ..objective.prdl import anchor_grid

        return anchor_grid((self.camera.height, self.camera.width), self.cfg.prdl_anchors,
                           self.model.mean_shape.dtype, self.model.mean_shape.device)

    @property
    def prdl_part_weights(self) -> torch.Tensor | None:
        w = self.cfg.prdl_part_weights
        return None if w is None else torch.tensor(w, dtype=self.model.mean_shape.dtype)

    @property
    def renderer(self) -> MeshRenderer:
        """The photometric stages' renderer (rgb + mask, antialiased), built on first use."""
        if self._renderer is None:
            self._renderer = MeshRenderer(self.camera, self.model.faces, outputs=("rgb", "mask"), antialias=True)
        return self._renderer

    @property
    def edges(self) -> torch.Tensor:
        """(E, 2) the mesh's unique edges, for the albedo residual's smoothness."""
        if self._edges is None:
            self._edges = edge_topology(self.model.faces).edge_vertices
        return self._edges

    def fit(self, targets: FitTargets) -> FitResult:
        cfg = self.cfg
        B = int(targets.lm68.shape[0])
        photo = targets.image is not None and cfg.steps_photo > 0
        parts = targets.parts is not None and cfg.w_prdl > 0
        # A batch (an image set, a video window) is a long fit: a per-stage bar, gone when done.
        bar = progress(total=cfg.steps_pose + cfg.steps_shape + cfg.steps_prdl * parts
                       + (cfg.steps_photo + cfg.steps_albedo) * photo,
                       show=B > 1, desc=f"fit ({B} faces)", unit="step", leave=False)
        with num_threads(1) as n_all, bar:
            torch.manual_seed(cfg.seed)
            times, t0 = {}, time.perf_counter()
            fixed_identity = sets.starts_from_independent_fits(cfg, targets)
            if fixed_identity:
                bar.set_postfix_str("independent fits")
                targets = sets.independent_start(self, targets)
                times["independent"] = time.perf_counter() - t0
            keep = fixed_identity or (cfg.keep_identity and targets.init is not None)
            problem = stages.FitProblem.build(self, targets, fit_identity=not keep)

            t = time.perf_counter()
            bar.set_postfix_str("pose")
            v = stages.initial_variables(self, problem, targets.init)
            v = stages.pose_stage(self, problem, v)
            times["pose"] = time.perf_counter() - t
            bar.update(cfg.steps_pose)
            t = time.perf_counter()
            bar.set_postfix_str("shape")
            v = stages.shape_stage(self, problem, v)
            times["shape"] = time.perf_counter() - t
            bar.update(cfg.steps_shape)
            if problem.parts is not None and cfg.steps_prdl > 0:
                t = time.perf_counter()
                bar.set_postfix_str("parts")
                with num_threads(n_all):  # decode + rasterize the full mesh every step
                    v = stages.parts_stage(self, problem, v)
                times["parts"] = time.perf_counter() - t
                bar.update(cfg.steps_prdl)
            if problem.image is not None and cfg.steps_photo > 0:
                t = time.perf_counter()
                bar.set_postfix_str("photometric")
                with num_threads(n_all):  # renders and images: worth the threads
                    inputs = stages.PhotoInputs.build(self, problem)
                    v = stages.photo_stage(self, problem, v, inputs)
                    bar.update(cfg.steps_photo)
                    bar.set_postfix_str("albedo")
                    v = stages.albedo_stage(self, problem, v, inputs)
                    bar.update(cfg.steps_albedo)
                times["photo"] = time.perf_counter() - t
            res = stages.fit_result(self, problem, v)
            times["total"] = time.perf_counter() - t0
            return replace(res, times=times)


__all__ = ["FitConfig", "FitResult", "FitTargets", "Fitter"]
