"""Semantic annotations of a model's mesh: 3DDFA_V3's eight facial parts, the 106- and 134-point
landmarks, and the jaw-contour lines of the pose-dependent ``ldm106_2d``.

Only the ICT face topology is annotated (`ict_annotations.json`, made by
scripts/make_ict_annotations.py from ICT's own mean face, topology and the 68 landmarks; the
definitions are in docs/parts.md and docs/landmarks.md). `annotations_for(model)` returns None for
other models, and the outputs that need annotations are then skipped.

Parts follow 3DDFA_V3's order; "right" is the SUBJECT's right (image left in an unmirrored
frontal photo), as V3's own masks and iBUG-68's eye points. Label maps use 0 for background and
``k + 1`` for part k.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..geometry.camera import PerspectiveCamera
from ..geometry.rotations import euler_to_matrix

#: 3DDFA_V3's eight parts, in its order (label k; label maps write k + 1).
PART_NAMES = ("right_eye", "left_eye", "right_brow", "left_brow", "nose", "upper_lip", "lower_lip", "skin")
SKIN = 7
#: Vertices that belong to none of the eight (neck, ears, sides of the head).
OTHER = 8


@dataclass(frozen=True)
class LandmarkSet:
    """Points defined on a mesh: ``p_n = Σ_k weights[n, k] · v[vertices[n, k]] + offsets[n]``.

    vertices: (N, K) int64; weights: (N, K) float64 (rows sum to 1, zero padding); offsets: (N, 3)
    model-space mm (non-zero only where a point copies one of the 68, which are vertex + offset).
    Offsets are model-space: apply to unposed vertices, then pose.
    """

    name: str
    vertices: np.ndarray
    weights: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.vertices)

    def __call__(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) or (V, 3) model-space vertices -> (B, N, 3) or (N, 3) points, same dtype/device."""
        v = vertices.unsqueeze(0) if vertices.dim() == 2 else vertices
        idx = torch.as_tensor(self.vertices, device=v.device)
        w = torch.as_tensor(self.weights, dtype=v.dtype, device=v.device)
        off = torch.as_tensor(self.offsets, dtype=v.dtype, device=v.device)
        pts = (v[:, idx] * w[None, ..., None]).sum(2) + off
        return pts[0] if vertices.dim() == 2 else pts


@dataclass(frozen=True)
class FaceAnnotations:
    """The annotations of one topology.

    vertex_parts: (V,) int64 in 0..8 (PART_NAMES index, or OTHER).
    eye_rims: {"right_eye", "left_eye"}: (R,) int64 ordered vertex loops of the eye openings (lid
        margins), closed by fan "caps" for the eye masks (`part_mesh`).
    lm106, lm134: the landmark sets; lm68: the model's 68 as a set.
    contour_lines: 33 int64 arrays, the candidate vertices of each jaw point of the 106 (empty for
        the fixed chin point 16); contour_centre: (1, ...) LandmarkSet of the point the contour's
        outward directions start from.
    """

    vertex_parts: np.ndarray
    eye_rims: dict
    lm68: LandmarkSet
    lm106: LandmarkSet
    lm134: LandmarkSet
    contour_lines: tuple
    contour_centre: LandmarkSet

    def triangle_parts(self, faces: np.ndarray) -> np.ndarray:
        """(F, 3) triangles -> (F,) int64 part per triangle: the label its three vertices share;
        mixed triangles are skin, or OTHER when two or more corners are OTHER."""
        lab = self.vertex_parts[np.asarray(faces, np.int64)]
        same = (lab[:, 0] == lab[:, 1]) & (lab[:, 1] == lab[:, 2])
        out = np.where(same, lab[:, 0], SKIN)
        out[~same & ((lab == OTHER).sum(1) >= 2)] = OTHER
        return out.astype(np.int64)

    def part_mesh(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mesh the part masks are drawn from: `faces` plus the eye caps (fans from a new vertex
        per eye, appended after the V mesh vertices: V = right eye centre, V + 1 = left), wound like
        their neighbours.

        Returns: faces (F + C, 3) int64 and their parts (F + C,) int64.
        """
        faces = np.asarray(faces, np.int64)
        V = len(self.vertex_parts)
        directed = {(int(a), int(b)) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
        caps, labels = [], []
        for j, name in enumerate(("right_eye", "left_eye")):
            rim = self.eye_rims[name]
            ring = np.stack([rim, np.roll(rim, -1)], 1)
            # A neighbour with directed edge a->b means the cap must run b->a.
            flip = (int(ring[0, 0]), int(ring[0, 1])) in directed
            for a, b in ring:
                caps.append((b, a, V + j) if flip else (a, b, V + j))
                labels.append(PART_NAMES.index(name))
        all_faces = np.concatenate([faces, np.array(caps, np.int64)])
        return all_faces, np.concatenate([self.triangle_parts(faces), np.array(labels, np.int64)])

    def cap_vertices(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) or (V, 3) vertices -> the same with the two eye-cap centres appended (V + 2)."""
        v = vertices.unsqueeze(0) if vertices.dim() == 2 else vertices
        cen = [v[:, torch.as_tensor(self.eye_rims[n], device=v.device)].mean(1, keepdim=True)
               for n in ("right_eye", "left_eye")]
        out = torch.cat([v] + cen, 1)
        return out[0] if vertices.dim() == 2 else out

    def contour_2d(self, vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                   camera: PerspectiveCamera) -> torch.Tensor:
        """3DDFA_V3's ``ldm106_2d`` contour picking for one face: the 106 points whose jaw points
        (0..32 but 16) are re-picked per pose on the silhouette.

        For each jaw point, among its line's vertices projected with the pose WITHOUT roll (as V3),
        the one farthest along the outward direction (from the projected contour centre towards the
        projected static point) is taken — V3's min-x / max-x rule generalised to lines that are
        not horizontal. The chosen vertices are then projected with the full pose.

        Args:
            vertices: (V, 3) model-space vertices (mm); rotation: (3,) (pitch, yaw, roll) radians;
                translation: (3,) mm; camera: where to project.

        Returns:
            (106, 2) pixel coordinates, the dtype of `vertices`.
        """
        v = vertices.detach()
        rot = rotation.detach().to(v)
        t = translation.detach().to(v)
        R = euler_to_matrix(rot)
        no_roll = rot.clone()
        no_roll[2] = 0
        R0 = euler_to_matrix(no_roll)

        def project(points, Rm):
            return camera.project(points @ Rm.T + t)[..., :2]

        static = self.lm106(v)
        out = project(static, R).clone()
        centre0 = project(self.contour_centre(v), R0)[0]
        static0 = project(static[:33], R0)
        for i, line in enumerate(self.contour_lines):
            if len(line) == 0:
                continue
            d = static0[i] - centre0
            d = d / d.norm().clamp_min(1e-9)
            cand = project(v[torch.as_tensor(line)], R0)
            best = int(line[int(torch.argmax(cand @ d))])
            out[i] = project(v[best:best + 1], R)[0]
        return out


def mirror_vertices(mean_shape) -> np.ndarray:
    """(V, 3) a left-right symmetric mean face (model x = the subject's left) -> (V,) int64: each
    vertex's mirror image, the vertex nearest to (-x, y, z). The UV symmetry map of the extracted
    texture is this map carried through the UV layout."""
    from scipy.spatial import cKDTree

    v = mean_shape.detach().cpu().double().numpy() if isinstance(mean_shape, torch.Tensor) else np.asarray(mean_shape)
    return cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))[1].astype(np.int64)


def _set(name: str, d: dict) -> LandmarkSet:
    return LandmarkSet(name, np.asarray(d["vertices"], np.int64), np.asarray(d["weights"], np.float64),
                       np.asarray(d["offsets_mm"], np.float64))


@lru_cache(maxsize=1)
def _ict_json() -> dict:
    from importlib.resources import files

    return json.loads(files("facerecon").joinpath("data/ict_annotations.json").read_text())


def ict_annotations(n_vertices: int, landmarks68: np.ndarray, landmark_offsets: np.ndarray | None) -> FaceAnnotations:
    """The ICT face annotations for a mesh whose first 9,409 vertices are ICT's face area (the 'face'
    and 'head' variants); vertices beyond are OTHER. `landmarks68`/`landmark_offsets` are the
    model's own 68 (the 106 copies them where the conventions share a point)."""
    d = _ict_json()
    parts = np.array([int(c) for c in d["vertex_parts"]], np.int64)
    if n_vertices < len(parts):
        raise ValueError(f"ICT annotations need the {len(parts)} face-area vertices; this mesh has {n_vertices}")
    parts = np.concatenate([parts, np.full(n_vertices - len(parts), OTHER, np.int64)])
    lm_off = np.zeros((68, 3)) if landmark_offsets is None else np.asarray(landmark_offsets, np.float64)
    lm68 = LandmarkSet("lm68", np.asarray(landmarks68, np.int64)[:, None], np.ones((68, 1)), lm_off)
    c = int(d["contour_centre_68"])
    centre = LandmarkSet("contour_centre", lm68.vertices[c:c + 1], lm68.weights[c:c + 1], lm68.offsets[c:c + 1])
    return FaceAnnotations(
        vertex_parts=parts,
        eye_rims={k: np.asarray(v, np.int64) for k, v in d["eye_rims"].items()},
        lm68=lm68, lm106=_set("lm106", d["landmarks106"]), lm134=_set("lm134", d["landmarks134"]),
        contour_lines=tuple(np.asarray(x, np.int64) for x in d["contour_lines"]), contour_centre=centre)


def annotations_for(model) -> FaceAnnotations | None:
    """The annotations of a MorphableModel's topology, or None when it has none (every model but
    ICT's 'face' and 'head' variants)."""
    name = getattr(model, "name", "")
    if name not in ("ict-face", "ict-head"):
        return None
    n = int(model.mean_shape.shape[0])
    lm = model.landmarks68.detach().cpu().numpy().astype(np.int64)
    off = getattr(model, "landmark_offsets", None)
    off = np.zeros((len(lm), 3)) if off is None else off.detach().cpu().double().numpy()
    return _cached_ict(n, lm.tobytes(), off.tobytes())


@lru_cache(maxsize=8)
def _cached_ict(n: int, lm: bytes, off: bytes) -> FaceAnnotations | None:
    try:
        return ict_annotations(n, np.frombuffer(lm, np.int64).copy(), np.frombuffer(off, np.float64).reshape(-1, 3).copy())
    except ValueError:
        return None


__all__ = ["OTHER", "PART_NAMES", "SKIN", "FaceAnnotations", "LandmarkSet", "annotations_for", "ict_annotations", "mirror_vertices"]
