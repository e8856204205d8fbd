"""The morphable model: constants as buffers, batched decoding of FaceParams into geometry.

Builders (`ict.py`, `bfm.py`) produce a `ModelData` (numpy, cacheable as .npz); `MorphableModel`
turns it into an `nn.Module` whose buffers follow `.to(device, dtype)`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..geometry.camera import PerspectiveCamera
from ..geometry.landmarks import lm5_from_lm68_corners
from ..geometry.mesh import vertex_normals
from ..geometry.rotations import euler_to_matrix
from .layout import FaceParams, ParamLayout


@dataclass
class ModelData:
    """Everything a morphable model holds, as numpy arrays (units: mm, colours in [0, 1]).

    mean_shape (V, 3) float32 mm; id_basis (V, 3, n_id) mm per unit coefficient;
    exp_basis (V, 3, n_exp); albedo_mean (V, 3) in [0, 1]; albedo_basis (V, 3, n_alb) (n_alb may be 0);
    faces (F, 3) int64, counter-clockwise seen from outside; uv (T, 2) in [0, 1] (v up, as OBJ) with
    uv_faces (F, 3) into it, or empty arrays; landmarks68 (68,) vertex indices in iBUG order;
    regions: name -> vertex indices (e.g. 'skin' for photometric losses);
    expression_names: one per expression column; name: model id; exp_prior: 'gaussian' (N(0,1))
    or 'unit_interval' (weights in [0, 1], ARKit).
    """

    name: str
    mean_shape: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    albedo_mean: np.ndarray
    albedo_basis: np.ndarray
    faces: np.ndarray
    landmarks68: np.ndarray
    uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    uv_faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    regions: dict = field(default_factory=dict)
    expression_names: list = field(default_factory=list)
    landmark_offsets: np.ndarray | None = None  # (68, 3) mm added to the landmark vertices (model space)
    exp_prior: str = "gaussian"
    translation_unit_mm: float = 1.0

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so an interrupted build never leaves a bad cache."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        if self.landmark_offsets is None:
            arrays.pop("landmark_offsets", None)
        for k, v in self.regions.items():
            arrays[f"region__{k}"] = np.asarray(v, np.int64)
        arrays["expression_names"] = np.array(self.expression_names, dtype=str)
        arrays["meta"] = np.array([self.name, self.exp_prior, repr(self.translation_unit_mm)], dtype=str)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @staticmethod
    def load(path: Path) -> ModelData:
        with np.load(path) as z:
            name, exp_prior, unit = (str(s) for s in z["meta"])
            kw = {f.name: z[f.name] for f in fields(ModelData)
                  if f.name in z.files and f.name not in ("expression_names",)}
            regions = {k[len("region__"):]: z[k] for k in z.files if k.startswith("region__")}
            names = [str(s) for s in z["expression_names"]]
        return ModelData(name=name, exp_prior=exp_prior, translation_unit_mm=float(unit),
                         regions=regions, expression_names=names,
                         **{k: v for k, v in kw.items() if k not in ("name", "exp_prior", "translation_unit_mm")})

    def subset(self, vertex_ids: np.ndarray, name: str) -> ModelData:
        """Restrict to a vertex subset; keeps only faces whose 3 vertices are all kept."""
        vertex_ids = np.asarray(vertex_ids, np.int64)
        remap = -np.ones(len(self.mean_shape), np.int64)
        remap[vertex_ids] = np.arange(len(vertex_ids))
        keep = (remap[self.faces] >= 0).all(1)
        lm = remap[self.landmarks68]
        if (lm < 0).any():
            raise ValueError(f"{name}: the subset drops landmark vertices {self.landmarks68[lm < 0]}")
        regions = {k: remap[v][remap[v] >= 0] for k, v in self.regions.items()}
        return ModelData(
            name=name, mean_shape=self.mean_shape[vertex_ids], id_basis=self.id_basis[vertex_ids],
            exp_basis=self.exp_basis[vertex_ids], albedo_mean=self.albedo_mean[vertex_ids],
            albedo_basis=self.albedo_basis[vertex_ids], faces=remap[self.faces[keep]], landmarks68=lm,
            uv=self.uv, uv_faces=self.uv_faces[keep] if len(self.uv_faces) else self.uv_faces,
            regions=regions, expression_names=list(self.expression_names), exp_prior=self.exp_prior,
            translation_unit_mm=self.translation_unit_mm, landmark_offsets=self.landmark_offsets,
        )


@dataclass(frozen=True)
class FaceGeometry:
    """Decoded faces (B faces, V vertices).

    vertices: (B, V, 3) model space, mm (identity + expression, no pose).
    vertices_world: (B, V, 3) posed: R @ v + t, mm.
    normals: (B, V, 3) unit normals of the posed surface (world axes).
    albedo: (B, V, 3) in [0, 1] (per-vertex reflectance, before lighting).
    """

    vertices: torch.Tensor
    vertices_world: torch.Tensor
    normals: torch.Tensor
    albedo: torch.Tensor


class MorphableModel(nn.Module):
    """A linear 3D morphable model (identity + expression shape, albedo), batched.

    Buffers: mean_shape (V,3), id_basis (3V, n_id), exp_basis (3V, n_exp), albedo_mean (V,3),
    albedo_basis (3V, n_alb), faces (F,3) long, landmarks68 (68,) long, uv (T,2), uv_faces (F,3),
    vertex_uv (V,2). `model.to(torch.float64)` converts all float buffers.
    """

    def __init__(self, data: ModelData, n_identity: int | None = None, n_expression: int | None = None,
                 n_albedo: int | None = None):
        super().__init__()
        self.name = data.name
        n_id = data.id_basis.shape[2] if n_identity is None else min(n_identity, data.id_basis.shape[2])
        n_exp = data.exp_basis.shape[2] if n_expression is None else min(n_expression, data.exp_basis.shape[2])
        n_alb = data.albedo_basis.shape[2] if n_albedo is None else min(n_albedo, data.albedo_basis.shape[2])
        V = data.mean_shape.shape[0]

        def flat(b, n):  # (V, 3, n) -> (3V, n), row 3*v + axis
            return torch.from_numpy(np.ascontiguousarray(b[:, :, :n].reshape(V * 3, n), dtype=np.float32))

        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        i64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        self.register_buffer("mean_shape", f32(data.mean_shape))
        self.register_buffer("id_basis", flat(data.id_basis, n_id))
        self.register_buffer("exp_basis", flat(data.exp_basis, n_exp))
        self.register_buffer("albedo_mean", f32(data.albedo_mean))
        self.register_buffer("albedo_basis", flat(data.albedo_basis, n_alb))
        self.register_buffer("faces", i64(data.faces))
        self.register_buffer("landmarks68", i64(data.landmarks68))
        lo = np.zeros((len(data.landmarks68), 3)) if data.landmark_offsets is None else data.landmark_offsets
        self.register_buffer("landmark_offsets", f32(lo))
        self.register_buffer("uv", f32(data.uv))
        self.register_buffer("uv_faces", i64(data.uv_faces))
        vuv = np.zeros((V, 2), np.float32)
        if len(data.uv_faces):
            # One UV per vertex (the last corner written wins at seams): enough for sampling
            # per-vertex colours; textured export uses uv/uv_faces.
            vuv[data.faces.reshape(-1)] = data.uv[data.uv_faces.reshape(-1)]
        self.register_buffer("vertex_uv", f32(vuv))
        self.region_names = sorted(data.regions)
        for k in self.region_names:
            self.register_buffer(f"region_{k}", i64(data.regions[k]))
        self.expression_names = list(data.expression_names)[:n_exp]
        self.exp_prior = data.exp_prior
        self.layout = ParamLayout(n_id, n_exp, n_alb, translation_unit_mm=data.translation_unit_mm)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def region(self, name: str) -> torch.Tensor:
        """Vertex indices of a named region (e.g. 'skin', 'face', 'narrow_face')."""
        if name not in self.region_names:
            raise KeyError(f"model '{self.name}' has no region '{name}'; it has {self.region_names}")
        return getattr(self, f"region_{name}")

    def skin_weights(self) -> torch.Tensor:
        """(V,) 1 on the photometric-loss skin region, 0 elsewhere."""
        w = torch.zeros(self.n_vertices, dtype=self.mean_shape.dtype, device=self.mean_shape.device)
        idx = self.region("skin") if "skin" in self.region_names else torch.arange(self.n_vertices, device=w.device)
        return w.index_fill(0, idx, 1.0)

    # -- decoding ----------------------------------------------------------------------------
    def shape(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """(B, n_id), (B, n_exp) -> (B, V, 3) model-space vertices in mm."""
        B = identity.shape[0]
        offs = identity @ self.id_basis.T + expression @ self.exp_basis.T  # (B, 3V)
        return self.mean_shape + offs.view(B, -1, 3)

    def albedo(self, coeffs: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_alb) [+ (B, V, 3) residual] -> (B, V, 3) albedo, clamped to [0, 1]."""
        B = coeffs.shape[0]
        a = self.albedo_mean.expand(B, -1, -1)
        if self.albedo_basis.shape[1] > 0:
            a = a + (coeffs @ self.albedo_basis.T).view(B, -1, 3)
        if offset is not None:
            a = a + offset
        return a.clamp(0.0, 1.0)

    def pose(self, vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) model space -> world: R v + t. rotation (B, 3) Euler radians, translation (B, 3) mm."""
        R = euler_to_matrix(rotation)
        return vertices @ R.transpose(1, 2) + translation[:, None, :]

    def forward(self, params: FaceParams) -> FaceGeometry:
        verts = self.shape(params.identity, params.expression)
        world = self.pose(verts, params.rotation, params.translation)
        normals = vertex_normals(world, self.faces)
        return FaceGeometry(verts, world, normals, self.albedo(params.albedo, params.albedo_offset))

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) model-space vertices -> (B, 68, 3) landmarks (iBUG order), vertex + offset.
        Pose the result like vertices (the offsets are model-space)."""
        return vertices[:, self.landmarks68] + self.landmark_offsets

    @staticmethod
    def lm5_from_lm68(lm68: torch.Tensor) -> torch.Tensor:
        """(..., 68, D) -> (..., 5, D) Deep3D's 5 points (`geometry.landmarks.lm5_from_lm68_corners`)."""
        return lm5_from_lm68_corners(lm68)

    def mean_lm5(self) -> torch.Tensor:
        """(5, 3) mm: the mean face's 5 alignment points in model space."""
        return self.lm5_from_lm68(self.mean_shape[self.landmarks68] + self.landmark_offsets)

    def zeros(self, batch: int = 1) -> FaceParams:
        return self.layout.zeros(batch, dtype=self.mean_shape.dtype, device=self.mean_shape.device)

    def random_params(self, batch: int = 1, generator: torch.Generator | None = None, id_scale: float = 1.0,
                      exp_scale: float = 0.3) -> FaceParams:
        """Random plausible faces at the origin, frontal: identity ~ N(0, id_scale²); expression ~
        |N(0, exp_scale²)| clipped to [0, 1] for ARKit-style models, N(0, exp_scale²) otherwise."""
        p = self.zeros(batch)
        dt, dev = self.mean_shape.dtype, self.mean_shape.device
        rnd = lambda n: torch.randn(batch, n, generator=generator, dtype=dt).to(dev)
        exp = rnd(self.layout.n_expression) * exp_scale
        if self.exp_prior == "unit_interval":
            exp = exp.abs().clamp(0, 1)
        return p.replace(identity=rnd(self.layout.n_identity) * id_scale, expression=exp,
                         albedo=rnd(self.layout.n_albedo) * id_scale)

    def expression_vector(self, weights: dict[str, float], batch: int = 1) -> torch.Tensor:
        """{'jawOpen': 1.0, ...} -> (batch, n_exp); unknown names raise KeyError listing the valid ones."""
        e = torch.zeros(batch, self.layout.n_expression, dtype=self.mean_shape.dtype, device=self.mean_shape.device)
        for k, v in weights.items():
            if k not in self.expression_names:
                raise KeyError(f"'{k}' is not an expression of model '{self.name}'; valid: {self.expression_names}")
            e[:, self.expression_names.index(k)] = v
        return e

    # -- landmarks in the image ----------------------------------------------------------------
    def project_points(self, points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                       camera: PerspectiveCamera) -> torch.Tensor:
        """(B, N, 3) model-space points -> (B, N, 2) pixels of `camera` under the pose (`pose`)."""
        return camera.project(self.pose(points, rotation, translation))[..., :2]

    def project_landmarks(self, params: FaceParams, camera: PerspectiveCamera,
                          vertices: torch.Tensor | None = None) -> torch.Tensor:
        """FaceParams (B) -> (B, 68, 2) the 68 landmarks (vertex + model-space offset) in `camera`'s
        pixels. vertices: the (B, V, 3) model-space shape of `params` when already decoded (full
        decode otherwise; see `landmark_decoder` for the landmarks alone). Params are cast to the
        model's dtype and device."""
        cast = lambda t: t.to(self.mean_shape)
        if vertices is None:
            vertices = self.shape(cast(params.identity), cast(params.expression))
        return self.project_points(self.landmarks(vertices), cast(params.rotation), cast(params.translation),
                                   camera)

    def landmark_decoder(self, extra_vertices=None) -> LandmarkDecoder:
        """A decoder of the 68 landmarks (+ `extra_vertices`, e.g. a dense map's) alone, with the bases
        sliced to them once: cheap per call, for optimisation loops over landmarks (a different
        summation than `shape`'s full decode, so results differ from it in the last bits)."""
        return LandmarkDecoder(self, extra_vertices)


class LandmarkDecoder:
    """Model-space points of the 68 landmarks, then of the extra vertices, from the coefficients.

    mean: (68 + N, 3) mean-face points (landmark offsets included); id_basis / exp_basis:
    (3 (68 + N), n) the bases' rows of those points; extra_vertices: (N,) vertex ids (or None).
    Follows the model's dtype and device at construction time (build a new one after `model.to`).
    """

    def __init__(self, model: MorphableModel, extra_vertices=None):
        lm = model.landmarks68
        off = model.landmark_offsets
        self.extra_vertices = None
        if extra_vertices is not None:
            ev = torch.as_tensor(extra_vertices, device=lm.device)
            self.extra_vertices = ev
            off = torch.cat([off, off.new_zeros(len(ev), 3)])
            lm = torch.cat([lm, ev])
        rows = (3 * lm[:, None] + torch.arange(3, device=lm.device)).reshape(-1)
        self.mean = model.mean_shape[lm] + off
        self.id_basis = model.id_basis[rows]
        self.exp_basis = model.exp_basis[rows]

    @property
    def n_points(self) -> int:
        return int(self.mean.shape[0])

    def __call__(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """(B, n_id' <= n_id), (B, n_exp) -> (B, 68 + N, 3) mm; a truncated identity uses the
        leading modes."""
        B = identity.shape[0]
        off = identity @ self.id_basis[:, : identity.shape[1]].T + expression @ self.exp_basis.T
        return self.mean + off.view(B, -1, 3)
