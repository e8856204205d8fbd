"""Face parameters and the layout that maps them to and from flat coefficient vectors.

`FaceParams` is the boundary every fitter and regressor produces; `ParamLayout` is the ONLY place
that knows where each group sits in a flat vector (Deep3D's 257-vector for BFM:
identity 80 | expression 64 | albedo 80 | angles 3 | light 27 | translation 3).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

GROUPS = ("identity", "expression", "albedo", "rotation", "light", "translation")


@dataclass(frozen=True)
class FaceParams:
    """Parameters of a batch of B faces (tensors share dtype and device).

    identity:    (B, n_id) identity coefficients; prior N(0, 1) (unit = one population std).
    expression:  (B, n_exp) expression coefficients (ICT: ARKit weights in [0, 1]; BFM: N(0, 1)).
    albedo:      (B, n_alb) albedo-basis coefficients, N(0, 1); n_alb may be 0 (ICT).
    rotation:    (B, 3) Euler angles [pitch, yaw, roll] in radians; R = Rz(roll) Ry(yaw) Rx(pitch)
                 (see geometry/rotations.py and docs/coordinates.md).
    translation: (B, 3) translation in mm, applied after rotation: v_world = R v + t.
    light:       (B, 27) SH lighting, 9 coefficients per colour channel laid out R(9) G(9) B(9),
                 as Deep3D; the ambient offset (`init_lit`) is added by the shader, not stored here.
    albedo_offset: optional (B, V, 3) per-vertex albedo residual in [0, 1] units (not part of the
                 flat vector; lets fitting estimate per-vertex albedo for models without a basis).
    """

    identity: torch.Tensor
    expression: torch.Tensor
    albedo: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    light: torch.Tensor
    albedo_offset: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.rotation.shape[0])

    def replace(self, **kw) -> FaceParams:
        return replace(self, **kw)

    def map(self, fn) -> FaceParams:
        """Apply `fn` to every tensor (e.g. `.detach()`, `.to(device)`)."""
        return FaceParams(**{f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name)))
                             for f in fields(self)})

    def __getitem__(self, idx) -> FaceParams:
        """Select faces along the batch dimension (keeps the batch dim for int indices)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return self.map(lambda t: t[idx])

    @staticmethod
    def cat(items: list[FaceParams]) -> FaceParams:
        out = {}
        for f in fields(FaceParams):
            vals = [getattr(p, f.name) for p in items]
            out[f.name] = None if any(v is None for v in vals) else torch.cat(vals, 0)
        return FaceParams(**out)


@dataclass(frozen=True)
class ParamLayout:
    """Sizes of each parameter group and their order in a flat vector.

    translation_unit_mm: how many mm one unit of the flat vector's translation means
    (100 for Deep3D's vectors, whose world unit is the decimetre; 1 for facerecon's own).
    """

    n_identity: int
    n_expression: int
    n_albedo: int
    translation_unit_mm: float = 1.0
    order: tuple[str, ...] = GROUPS

    def size(self, group: str) -> int:
        return {"identity": self.n_identity, "expression": self.n_expression, "albedo": self.n_albedo,
                "rotation": 3, "light": 27, "translation": 3}[group]

    @property
    def dim(self) -> int:
        return sum(self.size(g) for g in self.order)

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for g in self.order:
            out[g] = slice(start, start + self.size(g))
            start += self.size(g)
        return out

    def split(self, vec: torch.Tensor) -> FaceParams:
        """(B, dim) or (dim,) -> FaceParams (batch of B, or 1)."""
        if vec.ndim == 1:
            vec = vec[None]
        if vec.shape[-1] != self.dim:
            raise ValueError(f"coefficient vector has {vec.shape[-1]} values; this layout expects {self.dim}")
        parts = {g: vec[:, s] for g, s in self.slices().items()}
        parts["translation"] = parts["translation"] * self.translation_unit_mm
        return FaceParams(**parts)

    def join(self, params: FaceParams) -> torch.Tensor:
        """FaceParams -> (B, dim). albedo_offset is not part of the vector."""
        parts = []
        for g in self.order:
            t = getattr(params, g)
            if t.shape[-1] != self.size(g):
                raise ValueError(f"params.{g} has {t.shape[-1]} values; layout expects {self.size(g)}")
            parts.append(t / self.translation_unit_mm if g == "translation" else t)
        return torch.cat(parts, dim=-1)

    def zeros(self, batch: int = 1, dtype=torch.float32, device=None) -> FaceParams:
        """The mean face, frontal, at the origin, with no light (the shader adds its ambient term)."""
        return self.split(torch.zeros(batch, self.dim, dtype=dtype, device=device))

    def to_dict(self) -> dict:
        """JSON-ready fields (checkpoints and ONNX sidecars store the layout this way)."""
        return {"n_identity": self.n_identity, "n_expression": self.n_expression, "n_albedo": self.n_albedo,
                "translation_unit_mm": self.translation_unit_mm, "order": list(self.order)}

    @staticmethod
    def from_dict(d: dict) -> ParamLayout:
        """Inverse of `to_dict`; a missing or empty order means the default group order."""
        return ParamLayout(**{**d, "order": tuple(d.get("order", ())) or GROUPS})

    @staticmethod
    def deep3d() -> ParamLayout:
        """Deep3D's 257-vector: 80 id / 64 exp / 80 tex / 3 angles / 27 gamma / 3 translation (dm)."""
        return ParamLayout(80, 64, 80, translation_unit_mm=100.0)
