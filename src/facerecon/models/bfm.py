"""BFM09 builder, Deep3D-compatible (the user supplies the bases; we never ship them).

Inputs (asset 'bfm09'): the Basel Face Model 2009 ``01_MorphableModel.mat`` and Guo et al.'s
``Exp_Pca.bin``, with Deep3D's index files (asset 'bfm-metadata'); or a ready-made Deep3D
``BFM_model_front.mat``. Output: Deep3D's front-face model — 35,709 vertices, 80 identity,
64 expression and 80 albedo components, 70,789 triangles, 68 keypoints, skin mask.

Deep3D's ``transferBFM09`` (its utils.py) does, with vertices interleaved xyz:
  identity = shapePC * shapeEV (first 80), expression = expPC * std_exp (first 64),
  albedo = texPC * texEV (first 80); geometry / 1e5 (BFM's µm → Deep3D's dm);
  identity/albedo rows: vertex ``trimIndex[idx]``; expression rows: vertex ``idx`` (the expression
  basis lives on the 53,215-vertex trimmed topology); expMU is not used; the mean shape is then
  re-centred on its centroid. We do the same but keep millimetres (/ 1e3), and albedo in [0, 1]
  (/ 255). Coefficients therefore mean exactly what they mean in Deep3D; only the translation's
  unit differs, which `ParamLayout.deep3d()` converts (1 Deep3D unit = 100 mm).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import scipy.io as sio

from .. import assets
from ..errors import AssetError
from .morphable import ModelData

N_BFM09 = 53490
N_TRIM = 53215
DIMS = (80, 64, 80)


def _mat(path: Path) -> dict:
    try:
        return sio.loadmat(str(path))
    except (OSError, ValueError, TypeError, NotImplementedError, sio.matlab.MatReadError) as e:
        raise AssetError(f"{path}: not a readable MATLAB file ({e})") from None


def read_exp_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Exp_Pca.bin -> (expMU (3·53215,), expPC (3·53215, exp_dim)).

    Layout: int32 exp_dim, float32 expMU[3·N], float32 expPC[exp_dim][3·N] (component-major)."""
    raw = Path(path).read_bytes()
    if len(raw) < 4:
        raise AssetError(f"{path}: too short for Exp_Pca.bin")
    exp_dim = int(np.frombuffer(raw[:4], np.int32)[0])
    n = 3 * N_TRIM
    need = 4 + 4 * n * (1 + exp_dim)
    if exp_dim <= 0 or len(raw) != need:
        raise AssetError(f"{path}: expected {need} bytes for {exp_dim} components of {N_TRIM} vertices, got {len(raw)}")
    body = np.frombuffer(raw[4:], np.float32)
    return body[:n].copy(), body[n:].reshape(exp_dim, n).T.copy()


def _metadata(meta_dir: Path) -> dict:
    front = _mat(meta_dir / "BFM_front_idx.mat")["idx"].astype(np.int64).ravel() - 1
    trim = _mat(meta_dir / "BFM_exp_idx.mat")["trimIndex"].astype(np.int64).ravel() - 1
    info = _mat(meta_dir / "facemodel_info.mat")
    std_exp = np.loadtxt(meta_dir / "std_exp.txt").astype(np.float64)
    return {"front": front, "trim": trim, "info": info, "std_exp": std_exp}


def _rows(vertex_idx: np.ndarray) -> np.ndarray:
    """Vertex indices -> row indices of an interleaved-xyz (3N, k) basis."""
    return (3 * vertex_idx[:, None] + np.arange(3)).ravel()


def build_bfm_front(morphable_mat: Path, exp_bin: Path, meta_dir: Path) -> ModelData:
    """Deep3D's front-face BFM from the raw BFM09 + expression files + Deep3D's index files."""
    m = _mat(morphable_mat)
    for k in ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl"):
        if k not in m:
            raise AssetError(f"{morphable_mat}: field '{k}' missing (is this BFM09's 01_MorphableModel.mat?)")
    if m["shapeMU"].size != 3 * N_BFM09:
        raise AssetError(f"{morphable_mat}: shapeMU has {m['shapeMU'].size} values, expected {3 * N_BFM09}")
    md = _metadata(meta_dir)
    _, exp_pc = read_exp_pca(exp_bin)
    std_exp = md["std_exp"]
    shape_rows = _rows(md["trim"][md["front"]])
    exp_rows = _rows(md["front"])

    def basis(pc, ev, n, rows):
        k = min(n, pc.shape[1], np.asarray(ev).size)
        return (pc[rows, :k] * np.asarray(ev, np.float64).ravel()[:k]).astype(np.float64)

    id_b = basis(m["shapePC"], m["shapeEV"], DIMS[0], shape_rows) / 1e3
    exp_b = basis(exp_pc, std_exp, DIMS[1], exp_rows) / 1e3
    tex_b = basis(m["texPC"], m["texEV"], DIMS[2], shape_rows) / 255.0
    mean = m["shapeMU"].ravel()[shape_rows].reshape(-1, 3).astype(np.float64) / 1e3
    mean -= mean.mean(0)
    tex = m["texMU"].ravel()[shape_rows].reshape(-1, 3).astype(np.float64) / 255.0
    return _assemble(mean, id_b, exp_b, tex, tex_b, md["info"])


def _assemble(mean, id_b, exp_b, tex, tex_b, info) -> ModelData:
    V = mean.shape[0]
    tri = info["tri"].astype(np.int64) - 1
    kp = info["keypoints"].astype(np.int64).ravel() - 1
    skin = np.nonzero(info["skinmask"].ravel() > 0.5)[0]
    regions = {"skin": skin, "face": np.arange(V)}
    if "frontmask2_idx" in info:
        regions["front"] = info["frontmask2_idx"].astype(np.int64).ravel() - 1
    r = lambda b: b.reshape(V, 3, -1).astype(np.float32)
    return ModelData(
        name="bfm09-front", mean_shape=mean.astype(np.float32), id_basis=r(id_b), exp_basis=r(exp_b),
        albedo_mean=tex.astype(np.float32), albedo_basis=r(tex_b), faces=tri, landmarks68=kp,
        regions=regions, expression_names=[f"exp{i:02d}" for i in range(exp_b.shape[1])],
        exp_prior="gaussian", translation_unit_mm=100.0,
    )


def load_bfm_model_front(path: Path) -> ModelData:
    """A ready-made Deep3D ``BFM_model_front.mat`` (dm, texture 0..255) -> ModelData in mm."""
    m = _mat(path)
    need = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")
    miss = [k for k in need if k not in m]
    if miss:
        raise AssetError(f"{path}: fields {miss} missing (not a Deep3D BFM_model_front.mat)")
    mean = m["meanshape"].reshape(-1, 3).astype(np.float64) * 100.0
    mean -= mean.mean(0)
    info = {"tri": m["tri"], "keypoints": m["keypoints"],
            "skinmask": m.get("skinmask", np.ones((1, mean.shape[0])))}
    if "frontmask2_idx" in m:
        info["frontmask2_idx"] = m["frontmask2_idx"]
    return _assemble(mean, m["idBase"] * 100.0, m["exBase"] * 100.0, m["meantex"].reshape(-1, 3) / 255.0,
                     m["texBase"] / 255.0, info)


def save_bfm_model_front(data: ModelData, path: Path) -> None:
    """Write Deep3D's BFM_model_front.mat (dm, 0..255, 1-based) from our ModelData, atomically."""
    V = data.mean_shape.shape[0]
    out = {
        "meanshape": (data.mean_shape.reshape(1, -1) / 100.0).astype(np.float32),
        "idBase": (data.id_basis.reshape(3 * V, -1) / 100.0).astype(np.float32),
        "exBase": (data.exp_basis.reshape(3 * V, -1) / 100.0).astype(np.float32),
        "meantex": (data.albedo_mean.reshape(1, -1) * 255.0).astype(np.float32),
        "texBase": (data.albedo_basis.reshape(3 * V, -1) * 255.0).astype(np.float32),
        "tri": (data.faces + 1).astype(np.float32),
        "keypoints": (data.landmarks68 + 1).astype(np.float32)[None],
    }
    if "skin" in data.regions:
        sk = np.zeros((1, V), np.float32)
        sk[0, data.regions["skin"]] = 1
        out["skinmask"] = sk
    path = Path(path)
    fd, tmp = tempfile.mkstemp(suffix=".mat", dir=path.parent)
    os.close(fd)
    try:
        sio.savemat(tmp, out, do_compression=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_bfm_data(asset_dir=None, meta_dir=None) -> ModelData:
    """BFM09 front model: the converted cache, else BFM_model_front.mat, else build from raw files."""
    folder = assets.resolve("bfm09", asset_dir)
    ready = folder / "BFM_model_front.mat"
    if ready.is_file() and not (folder / "01_MorphableModel.mat").is_file():
        return load_bfm_model_front(ready)
    raw, exp = folder / "01_MorphableModel.mat", folder / "Exp_Pca.bin"
    key = f"{raw.stat().st_size}_{int(raw.stat().st_mtime)}_{exp.stat().st_size}"
    cache = assets.cache_dir() / "models" / f"bfm09_front_{key}.npz"
    if cache.is_file():
        return ModelData.load(cache)
    data = build_bfm_front(raw, exp, Path(meta_dir) if meta_dir else assets.resolve("bfm-metadata"))
    data.save(cache)
    return data
