"""The learned ICT albedo basis (weights/albedo_ict/albedo_ict.npz, built by `facerecon albedo build`).

`load_model("ict", albedo="learned")` replaces ICT's constant albedo with ``mean + basis · coeffs``
(coefficients N(0, 1), like BFM's), so its layout has n_albedo = K; the default `load_model("ict")`
is untouched (the shipped regressor's 186-d head depends on its layout).

File format (`save_albedo`): npz with mean (V, 3) float16; the basis (V, 3, K) as basis_q int8 with a
per-component basis_scale (K,) float32 (basis = basis_q · basis_scale: the file stays under 2 MiB, and
the rounding, ≤ 0.4 % of a component's largest value, is far below the albedo's noise); variance (K,)
float64 (the unit-norm components' variances; basis column k = component k × √variance_k), faces_used
int, model str (the engine model the vertices index, e.g. 'ict-face'), n_vertices int.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import AssetError
from ..io.atomic import atomic_path

DEFAULT_FILE = "albedo_ict/albedo_ict.npz"
ENV = "FACERECON_ALBEDO"


def default_albedo_paths() -> list[Path]:
    """Where the learned basis is looked for, in order: $FACERECON_ALBEDO, the repository's
    `weights/albedo_ict/`, $FACERECON_ASSETS/albedo_ict/, ~/.cache/facerecon/assets/albedo_ict/."""
    from ..assets import weights_paths

    return weights_paths(ENV, DEFAULT_FILE)


def find_albedo(path: str | os.PathLike | None = None) -> Path:
    """The basis file: `path` if given, else the first of `default_albedo_paths` that exists.
    Raises AssetError naming what was searched."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise AssetError(f"albedo basis not found: {p}")
        return p
    tried = default_albedo_paths()
    for p in tried:
        if p.is_file():
            return p
    raise AssetError("no learned albedo basis found; searched: " + ", ".join(map(str, tried))
                     + ". Build one (`facerecon albedo build`, docs/albedo.md) or set FACERECON_ALBEDO=FILE.")


def load_albedo(path: str | os.PathLike | None = None) -> dict:
    """The basis file's arrays as float32 (mean (V, 3), basis (V, 3, K), variance (K,)) + metadata."""
    p = find_albedo(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise AssetError(f"{p}: cannot read the albedo basis ({e})") from None
    if "basis_q" in out and "basis_scale" in out:
        out["basis"] = out.pop("basis_q").astype(np.float32) * out.pop("basis_scale").astype(np.float32)
    for k in ("mean", "basis", "variance"):
        if k not in out:
            raise AssetError(f"{p}: not an albedo basis file (no '{k}')")
    mean, basis = out["mean"].astype(np.float32), out["basis"].astype(np.float32)
    if mean.ndim != 2 or mean.shape[1] != 3 or basis.shape[:2] != mean.shape:
        raise AssetError(f"{p}: mean {mean.shape} / basis {basis.shape} are not (V, 3) / (V, 3, K)")
    out.update(mean=mean, basis=basis, variance=out["variance"].astype(np.float64), path=str(p))
    return out


def save_albedo(path: str | os.PathLike, built: dict) -> Path:
    """Write a built basis (`dataset.albedo.build_albedo_basis`'s dict) atomically (format: module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in built.items() if isinstance(v, np.ndarray)}
    arrays["mean"] = built["mean"].astype(np.float16)
    b = np.asarray(built["basis"], np.float64)
    scale = np.maximum(np.abs(b).max((0, 1)), 1e-12) / 127.0
    del arrays["basis"]
    arrays["basis_q"] = np.round(b / scale).astype(np.int8)
    arrays["basis_scale"] = scale.astype(np.float32)
    arrays["n_vertices"] = np.int64(built["mean"].shape[0])
    for k, v in built.items():
        if not isinstance(v, np.ndarray):
            arrays[k] = np.array(v)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def with_learned_albedo(data, albedo: dict):
    """A copy of ICT `ModelData` whose albedo is the learned basis.

    The basis indexes the first V vertices of the ICT head (variant 'face' when V = 9409): a model
    with fewer vertices (a vertex prefix, 'narrow') takes their rows; one with more ('head') keeps
    its constant albedo and a zero basis on the extra vertices (never seen in photos).
    """
    import dataclasses

    mean, basis = albedo["mean"], albedo["basis"]
    V, K = data.mean_shape.shape[0], basis.shape[2]
    n = min(V, mean.shape[0])
    am = np.array(data.albedo_mean, np.float32, copy=True)
    ab = np.zeros((V, 3, K), np.float32)
    am[:n] = mean[:n]
    ab[:n] = basis[:n]
    return dataclasses.replace(data, albedo_mean=am, albedo_basis=ab)


__all__ = ["DEFAULT_FILE", "default_albedo_paths", "find_albedo", "load_albedo", "save_albedo",
           "with_learned_albedo"]
