"""Method "vrn": VRN's direct volumetric regression (Jackson et al., ICCV 2017), meshed by marching cubes.

crop -> network -> (D, S, S) occupancy -> marching cubes at the sigmoid's 0.5 (`vrn.mesh.ISO_LEVEL`)
-> mesh in grid px -> crop px + depth -> the crop camera's mm. The mesh is the volume's own (its
topology: "vrn-volume", no UV layout); vertex colours are sampled from the crop. Landmarks, pose
and translation do not exist in a volume: they come from registering the morphable model to the
surface (`vrn.register`), and the result says so (`Reconstruction.notes`). The registration's
scale is applied to the surface about the camera centre (its projection is unchanged).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..align import Crop
from ..detect.base import Face
from ..geometry.mesh import vertex_normals
from ..geometry.rotations import euler_to_matrix
from ..models import FaceGeometry
from ..render.views import shaded_colors
from .base import MethodContext, Request
from .result import Reconstruction, Topology, camera_for_original

NOTE = ("mesh: marching cubes of the VRN volume (iso 0.5); landmarks, pose and translation: the morphable "
        "model registered to that surface (rigid + non-rigid), not predicted by the network")


def sample_colors(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image, (N, 2) pixel positions -> (N, 3) float32 bilinear colours in [0, 1] (clamped at the border)."""
    h, w = image.shape[:2]
    x = np.clip(xy[:, 0], 0, w - 1)
    y = np.clip(xy[:, 1], 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float32) / 255.0
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


class VRNMethod:
    """VRN behind the method protocol.

    weights: a VRN weights file (default: `vrn.predict.load_vrn()`'s search) or a built
    `VolumePredictor`. register: fit the morphable model to the surface for landmarks and pose
    (False: landmarks are the detection's and the pose is zero; faster). steps: non-rigid steps.
    """

    name = "vrn"
    needs_landmarks = False
    detector = "fast"

    def __init__(self, context: MethodContext, weights=None, register: bool = True, steps: int = 40):
        self.context = context
        self._spec = weights
        self._predictor = None
        self.register = bool(register)
        self.steps = int(steps)

    @property
    def predictor(self):
        if self._predictor is None:
            from ..vrn.predict import load_vrn

            spec = self._spec
            self._predictor = spec if hasattr(spec, "predict_volumes") else load_vrn(spec, device=self.context.device)
        return self._predictor

    def reconstruct(self, crops: list[Crop], faces: list[Face], request: Request | None = None) -> list[Reconstruction]:
        pred = self.predictor
        out = []
        # One volume at a time (uint8): a batch never holds B float volumes.
        volumes = pred.predict_volumes(np.stack([c.image for c in crops]))
        for crop, face in zip(crops, faces):
            t0 = time.perf_counter()
            vol = next(volumes)
            out.append(self.one(crop, face, vol, pred, time.perf_counter() - t0))
        return out

    def one(self, crop: Crop, face: Face, volume_u8: np.ndarray, pred, t_net: float | None = None) -> Reconstruction:
        from ..vrn.mesh import front_facing, volume_to_mesh
        from ..vrn.register import register

        model, cam = self.context.model, self.context.camera
        times = {} if t_net is None else {"network": t_net}
        t0 = time.perf_counter()
        verts, tris = volume_to_mesh(volume_u8.astype(np.float32) / 255.0, pred.spec, pred.front_mm, cam)
        times["marching_cubes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dt = model.mean_shape.dtype
        if self.register:
            front = front_facing(verts, tris, cam.distance)
            reg = register(model, verts[front], cam, crop.lm68, steps=self.steps)
            C = np.array([0.0, 0.0, cam.distance])
            verts = C + (verts - C) * reg.surface_scale
            p = reg.params
            rot, trans = p.rotation.detach().cpu().double(), p.translation.detach().cpu().double()
            with torch.no_grad():
                mv = model.shape(p.identity, p.expression)
                lm_crop = model.project_landmarks(p, cam, mv)[0].double().numpy()
                posed_model = model.pose(mv, p.rotation, p.translation)[0].double().numpy()
            from scipy.spatial import cKDTree

            corr = cKDTree(posed_model).query(verts)[1].astype(np.int64)
            times["registration"] = time.perf_counter() - t0
            residual = reg.residual_mm
        else:
            rot = torch.zeros(1, 3, dtype=torch.float64)
            trans = torch.as_tensor(verts.mean(0))[None]
            lm_crop = np.asarray(crop.lm68, np.float64) if crop.lm68 is not None else np.zeros((68, 2))
            corr = np.zeros(len(verts), np.int64)
            residual = float("nan")
        R = euler_to_matrix(rot)[0].numpy()
        t = trans[0].numpy()
        world = torch.as_tensor(verts, dtype=dt)[None]
        unposed = torch.as_tensor((verts - t) @ R, dtype=dt)[None]  # R^T (v - t)
        normals = vertex_normals(world, torch.as_tensor(tris))
        colors = sample_colors(crop.image, cam.project(world[0].double()).numpy()[:, :2])
        # Stored as albedo under the ambient-only light, so the shaded colours are the photo's.
        ambient = shaded_colors(torch.ones(1, 1, 3, dtype=dt), torch.tensor([[[0.0, 0.0, 1.0]]], dtype=dt), None)[0]
        albedo = torch.as_tensor(np.clip(colors / np.maximum(ambient, 1e-6), 0, 1), dtype=dt)[None]
        geo = FaceGeometry(unposed, world, normals, albedo)
        topo = Topology("vrn-volume", torch.as_tensor(tris), torch.zeros(0, 2), torch.zeros(0, 3, dtype=torch.int64))
        pitch, yaw, roll = (math.degrees(float(a)) for a in rot[0])
        notes = {"vrn": NOTE, "registration_residual_mm": residual, "registered": self.register,
                 "volume": list(volume_u8.shape)}
        return Reconstruction(
            geometry=geo, topology=topo, lm68=crop.crop_to_original(lm_crop).astype(np.float32),
            lm68_crop=lm_crop.astype(np.float32), pose_deg={"yaw": yaw, "pitch": pitch, "roll": roll},
            translation_mm=t.astype(np.float32), camera_crop=cam, camera=camera_for_original(cam, crop), face=face,
            crop=crop, method=self.name, model_name=model.name, correspondence=corr, times=times,
            source=crop.source, notes=notes)


def make_vrn(context: MethodContext, **options) -> VRNMethod:
    return VRNMethod(context, **options)


__all__ = ["NOTE", "VRNMethod", "make_vrn", "sample_colors"]
