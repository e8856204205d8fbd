"""Dense 2-D correspondences for fitting: FaceMesh's 468 points on a morphable model's mesh.

A `DenseMap` says which model vertex each FaceMesh point corresponds to and how far, on held-out
faces, the point typically lies from that vertex's projection (`sigma`, in face sizes). The fitter
weights each point by 1/sigma² (normalised to a weighted mean), so FaceMesh's sliding contour points
count little and its stable inner points count most. Learned by scripts/learn_mediapipe_ict.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import torch

_FILES = {"ict": "ict_mediapipe468.json"}


@dataclass(frozen=True)
class DenseMap:
    """vertex: (N,) int64 model vertex per dense point; sigma: (N,) float residual spread (RMS per
    axis, in face sizes sqrt(w·h) of the 68 landmarks) of each point on held-out faces."""

    vertex: np.ndarray
    sigma: np.ndarray

    def __post_init__(self):
        if self.vertex.shape != self.sigma.shape or self.vertex.ndim != 1:
            raise ValueError(f"dense map: vertex {self.vertex.shape} and sigma {self.sigma.shape} must be (N,)")

    @property
    def n_points(self) -> int:
        return int(self.vertex.shape[0])

    def weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """(N,) 1/sigma², scaled to mean 1."""
        w = 1.0 / np.square(self.sigma.astype(np.float64))
        return torch.tensor(w / w.mean(), dtype=dtype, device=device)


def load_dense_map(model_name: str) -> DenseMap | None:
    """The shipped FaceMesh map for a model ('ict'), or None when there is none (e.g. BFM)."""
    name = _FILES.get(model_name.split("-")[0].lower())
    if name is None:
        return None
    d = json.loads(files("facerecon").joinpath("data", name).read_text())
    return DenseMap(np.asarray(d["vertex"], np.int64), np.asarray(d["sigma"], np.float64))


__all__ = ["DenseMap", "load_dense_map"]
