"""The fixed rotation between a model's face frame and BFM's.

AFLW2000-3D's ground-truth pose and 3DDFA_V2's regressed pose are rotations of BFM's face frame (x to
the subject's left, y up, z out of the face). A model's frame differs by a fixed rotation Q (model
frame -> BFM frame): a head rotation R of the model reads R·Qᵀ in BFM's frame, and a BFM-frame
rotation R_bfm is R_bfm·Q for the model.

ICT's Q is package data (`data/ict_bfm_frame.json`, ~4.2° of pitch) made by
`scripts/calibrate_bfm_frame.py` from the two models alone: the rotation of a similarity fit of ICT's
mean-face 68 landmarks to BFM's (3DDFA_V2's bases), both in the 3DDFA landmark convention. BFM09
(Deep3D's front face) is BFM's frame.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files

import numpy as np

ICT_FRAME_FILE = "data/ict_bfm_frame.json"


@functools.lru_cache(maxsize=1)
def _ict_frame() -> np.ndarray:
    d = json.loads(files("facerecon").joinpath(ICT_FRAME_FILE).read_text())
    return np.array(d["rotation"], np.float64).reshape(3, 3)


def bfm_frame(model_name: str) -> np.ndarray | None:
    """(3, 3) float64 Q, model frame -> BFM frame, for a model name ("ict-face", "bfm09-front", ...),
    or None for a model family without a known one."""
    if model_name.startswith("bfm"):
        return np.eye(3)
    if model_name.startswith("ict"):
        return _ict_frame().copy()
    return None


__all__ = ["bfm_frame"]
