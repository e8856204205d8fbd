"""Array outputs: .npz and Deep3D-style .mat (atomic writes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio

from .atomic import atomic_path


def _np(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    return out


def write_npz(path, arrays: dict, compressed: bool = True) -> None:
    with atomic_path(Path(path), suffix=".npz") as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **_np(arrays))


def write_mat(path, arrays: dict) -> None:
    """MATLAB v5 .mat as Deep3D writes (`scipy.io.savemat`): fields cropped_img, recon_img, coeff,
    face_shape, face_texture, face_color, lm_68p, lm_5p ... (whatever the caller passes)."""
    with atomic_path(Path(path), suffix=".mat") as tmp:
        sio.savemat(tmp, _np(arrays), do_compression=True)


def read_mat(path) -> dict:
    return {k: v for k, v in sio.loadmat(str(path)).items() if not k.startswith("__")}
