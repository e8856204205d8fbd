"""Method "prnet": PRNet's UV position-map regression (Feng et al. 2018; `facerecon.prnet`).

crop → network → (R, R) position map → the ICT face mesh read back at every vertex's UV (dense
alignment: each vertex located in the photo, not limited to the model's shape space) → head pose
from a similarity fit of the model's mean face to the read-back vertices → 68 landmarks (their
vertices read back, plus the model's landmark offsets posed) → per-vertex colour read from the crop
through the map (PRNet's texture). No model parameters: `params` is None.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..align import Crop
from ..detect.base import Face
from ..geometry.mesh import vertex_normals
from ..geometry.rotations import matrix_to_euler
from ..models import FaceGeometry
from .base import MethodContext, Request
from .result import Reconstruction, Topology, camera_for_original


class PrnetMethod:
    """PRNet behind the method protocol.

    weights: a weights path (default: the shipped weights, `prnet.model.load_prnet`) or a built
    `prnet.model.PositionNet`. The mesh is the model's topology (ICT face), so every output that
    needs only a mesh (obj, ply, glb, landmarks, parts, textures) works; outputs that need model
    parameters (mat coefficients, neutral mesh, head) are skipped.
    """

    name = "prnet"
    needs_landmarks = False
    detector = "fast"

    def __init__(self, context: MethodContext, weights=None):
        self.context = context
        self._spec = weights
        self._net = None
        self._layout = None

    @property
    def net(self):
        if self._net is None:
            from ..prnet.model import PositionNet, load_prnet

            spec = self._spec
            self._net = spec if isinstance(spec, PositionNet) else load_prnet(spec, device=self.context.device)
        return self._net

    @property
    def layout(self):
        if self._layout is None:
            from ..prnet.uv import uv_layout

            self._layout = uv_layout(self.context.model, self.net.size)
        return self._layout

    def predict_maps(self, crops: list[Crop]) -> torch.Tensor:
        """(B, 3, R, R) float32 position maps (crop px, `prnet.uv` conventions) of the crops."""
        return self.net.predict_maps(np.stack([c.image for c in crops]))

    def reconstruct(self, crops: list[Crop], faces: list[Face], request: Request | None = None) -> list[Reconstruction]:
        from ..prnet.model import decode_maps
        from ..prnet.uv import sample_map

        t0 = time.perf_counter()
        maps = self.predict_maps(crops)
        t_net = time.perf_counter() - t0
        model, cam = self.context.model, self.context.camera
        dec = decode_maps(model, self.layout, maps, cam)
        imgs = torch.as_tensor(np.stack([c.image for c in crops])).permute(0, 3, 1, 2).double() / 255.0
        # Per-vertex colour: the crop read at each read-back vertex (PRNet's texture, at the vertices).
        colours = sample_map(imgs, dec.positions[..., :2]).clamp(0, 1)
        t = {"prnet": t_net, "decode": time.perf_counter() - t0 - t_net}
        dt = model.mean_shape.dtype
        topo = Topology.of_model(model)
        out = []
        for i, (crop, face) in enumerate(zip(crops, faces)):
            world = dec.vertices_world[i:i + 1].to(dt)
            geo = FaceGeometry(dec.vertices_model[i:i + 1].to(dt), world, vertex_normals(world, model.faces),
                               colours[i:i + 1].to(dt))
            pitch, yaw, roll = (math.degrees(float(a)) for a in matrix_to_euler(dec.rotation[i:i + 1])[0])
            lm = dec.lm68_crop[i].numpy()
            out.append(Reconstruction(
                geometry=geo, topology=topo, lm68=crop.crop_to_original(lm).astype(np.float32),
                lm68_crop=lm.astype(np.float32), pose_deg={"yaw": yaw, "pitch": pitch, "roll": roll},
                translation_mm=dec.translation[i].to(dt).numpy(), camera_crop=cam,
                camera=camera_for_original(cam, crop), face=face, crop=crop, method=self.name, model_name=model.name,
                times=dict(t), source=crop.source, model=model))
        return out


def make_prnet(context: MethodContext, **options) -> PrnetMethod:
    return PrnetMethod(context, **options)


__all__ = ["PrnetMethod", "make_prnet"]
