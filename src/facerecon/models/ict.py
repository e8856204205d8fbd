"""ICT-FaceKit (ICT Face Model Light) builder — facerecon's default model (MIT).

Source layout (``FaceXModel/``): ``generic_neutral_mesh.obj`` (26,719 vertices, mostly quads, cm),
``identity000..099.obj`` and 53 ARKit-named expression shapes, each a full mesh of the same topology;
a shape's offset is ``shape − neutral``. ICT's own scripts (``ict_face_model.py``) combine them
linearly, ``neutral + Σ w_id (identity_i − neutral) + Σ w_exp (expr_j − neutral)``, and sample a
random identity as ``w_id ~ N(0, 1)``: the identity modes are PCA components already scaled by their
standard deviation (their RMS displacement falls from 3.9 mm for mode 0 to 0.1 mm by mode 90). So a
unit identity coefficient is one population standard deviation and the prior is N(0, 1) with no
further scaling. Expression weights are ARKit blendshape weights in [0, 1] (1 = full expression).

We convert cm → mm and move the origin to the centroid of the face area (so rotations pivot
about the face), triangulate quads (a,b,c,d) → (a,b,c), (a,c,d), and cache the full head as one
.npz in the cache directory; variants are vertex subsets of it:
  face   vertices 0..9408  (ICT "full face area", 9,230 polygons → 18,322 triangles) — default for fitting
  narrow vertices 0..6705  (ICT "narrow face area")
  head   all 26,719 vertices (head, neck, mouth socket, eyes, teeth, lashes) — for export
ICT has no albedo basis: the model's albedo is a documented constant skin reflectance
(`DEFAULT_ALBEDO`, linear RGB in [0, 1]); fitting may estimate a per-vertex residual
(`FaceParams.albedo_offset`) under a smoothness prior, and a learned basis can be added later as
`albedo_basis` without changing any interface.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .. import assets
from ..errors import AssetError
from .morphable import ModelData

BUILD_VERSION = 1
N_VERTICES = 26719
VARIANTS = {"face": 9409, "narrow": 6706, "head": N_VERTICES}
# Multi-PIE / iBUG 68 landmark vertices, from ICT-FaceKit's README (0-based).
LANDMARKS68 = [
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147,
    4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081,
    0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
]
# Geometry parts (README "Face Model Topology"), inclusive vertex ranges.
PARTS = {
    "face": (0, 9408), "narrow_face": (0, 6705), "head_neck": (9409, 11247), "mouth_socket": (11248, 13293),
    "eye_socket_left": (13294, 13677), "eye_socket_right": (13678, 14061), "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450), "eyeball_left": (21451, 23020), "eyeball_right": (23021, 24590),
}
DEFAULT_ALBEDO = (0.70, 0.53, 0.45)
CM_TO_MM = 10.0


def _read_obj(path: Path, with_faces: bool = False):
    """Minimal fast OBJ reader: vertices (N,3) float32 [+ vt (T,2), polygons as (verts, uvs) lists]."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    v = np.array(b" ".join(ln[2:] for ln in lines if ln.startswith(b"v ")).split(), dtype=np.float32).reshape(-1, 3)
    if not with_faces:
        return v
    vt = np.array(b" ".join(ln[3:] for ln in lines if ln.startswith(b"vt ")).split(), dtype=np.float32)
    vt = vt.reshape(-1, 2) if vt.size % 2 == 0 else vt.reshape(-1, 3)[:, :2]
    tris, uvtris = [], []
    for ln in lines:
        if not ln.startswith(b"f "):
            continue
        corners = [c.split(b"/") for c in ln[2:].split()]
        vi = [int(c[0]) - 1 for c in corners]
        ti = [int(c[1]) - 1 if len(c) > 1 and c[1] else -1 for c in corners]
        for k in range(1, len(vi) - 1):  # fan: (a,b,c), (a,c,d)
            tris.append((vi[0], vi[k], vi[k + 1]))
            uvtris.append((ti[0], ti[k], ti[k + 1]))
    return v, vt, np.array(tris, np.int64), np.array(uvtris, np.int64)


def _unpacked_dir(folder: Path) -> Path:
    """Unpack FaceXModel.tar.xz into the cache once (atomic rename) and return its FaceXModel/."""
    dest = assets.cache_dir() / "ict-facekit"
    out = dest / "FaceXModel"
    if (out / "generic_neutral_mesh.obj").is_file() and (out / ".complete").is_file():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest))
    tar = folder / "FaceXModel.tar.xz"
    try:
        try:  # system tar + xz is ~5x faster than Python's lzma
            subprocess.run(["tar", "-xJf", str(tar), "-C", str(tmp)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            with tarfile.open(tar) as tf:
                tf.extractall(tmp, filter="data")
        (tmp / "FaceXModel" / ".complete").write_text("ok")
        if out.exists():
            import shutil
            shutil.rmtree(out)
        os.replace(tmp / "FaceXModel", out)
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_ict(src: Path) -> ModelData:
    """Build the full-head ModelData from an unpacked ``FaceXModel/`` folder."""
    src = Path(src)
    meta = json.loads((src / "vertex_indices.json").read_text())
    neutral, vt, tris, uvtris = _read_obj(src / "generic_neutral_mesh.obj", with_faces=True)
    if neutral.shape[0] != N_VERTICES:
        raise AssetError(f"{src}/generic_neutral_mesh.obj: expected {N_VERTICES} vertices, got {neutral.shape[0]}")
    if list(meta.get("idx_to_landmark_verts", LANDMARKS68)) != LANDMARKS68:
        raise AssetError(f"{src}/vertex_indices.json: landmark indices differ from the README's")
    ids = sorted(src.glob("identity[0-9][0-9][0-9].obj"))
    exp_names = list(meta["expressions"])
    id_basis = np.stack([_read_obj(p) - neutral for p in ids], axis=2)
    exp_basis = np.stack([_read_obj(src / f"{n}.obj") - neutral for n in exp_names], axis=2)
    centre = neutral[: VARIANTS["face"]].mean(0)
    regions = {k: np.arange(a, b + 1) for k, (a, b) in PARTS.items()}
    # Photometric skin region: narrow face area (forehead to chin, cheek to cheek) — the part a
    # 224 crop sees reliably; excludes ears/neck/scalp where hair and background intrude.
    regions["skin"] = regions["narrow_face"]
    V = N_VERTICES
    return ModelData(
        name="ict-head",
        mean_shape=((neutral - centre) * CM_TO_MM).astype(np.float32),
        id_basis=(id_basis * CM_TO_MM).astype(np.float32),
        exp_basis=(exp_basis * CM_TO_MM).astype(np.float32),
        albedo_mean=np.tile(np.array(DEFAULT_ALBEDO, np.float32), (V, 1)),
        albedo_basis=np.zeros((V, 3, 0), np.float32),
        faces=tris, landmarks68=np.array(LANDMARKS68, np.int64), uv=vt.astype(np.float32), uv_faces=uvtris,
        regions=regions, expression_names=exp_names, exp_prior="unit_interval",
    )


def bfm_convention_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """(68,) vertices and (68, 3) mm offsets placing ICT's landmarks where the BFM / 3DDFA /
    AFLW2000-3D convention puts them (package data made by scripts/calibrate_ict_landmarks.py;
    ICT's README points differ by 22 mm on the jaw and 7 mm on the brows)."""
    from importlib.resources import files

    d = json.loads(files("facerecon").joinpath("data/ict_landmarks_bfm.json").read_text())
    return np.array(d["vertices"], np.int64), np.array(d["offsets_mm"], np.float32)


def load_ict_data(variant: str = "face", asset_dir=None, landmarks: str = "bfm") -> ModelData:
    """The ICT ModelData for a variant ('face' | 'narrow' | 'head'), building the cache if needed.

    landmarks: 'bfm' (default) — the 68 landmarks in the BFM/3DDFA/AFLW2000-3D convention that
    facerecon's detectors and benchmarks use; 'ict' — the vertices listed in ICT's README.
    """
    if landmarks not in ("bfm", "ict"):
        raise ValueError(f"landmarks must be 'bfm' or 'ict', got '{landmarks}'")
    if variant not in VARIANTS:
        raise ValueError(f"unknown ICT variant '{variant}'; choose one of {list(VARIANTS)}")
    cache = assets.cache_dir() / "models" / f"ict_head_v{BUILD_VERSION}.npz"
    if not cache.is_file():
        folder = assets.resolve("ict-facekit", asset_dir)
        data = build_ict(_unpacked_dir(folder))
        data.save(cache)
    else:
        data = ModelData.load(cache)
    data.regions["landmarks_ict_readme"] = np.array(LANDMARKS68, np.int64)
    if landmarks == "bfm":
        data.landmarks68, data.landmark_offsets = bfm_convention_landmarks()
    if variant == "head":
        return data
    sub = data.subset(np.arange(VARIANTS[variant]), f"ict-{variant}")
    return sub
