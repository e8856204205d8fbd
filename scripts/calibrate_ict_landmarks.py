"""Re-define the ICT model's 68 landmarks in the BFM / 3DDFA / AFLW2000-3D convention.

ICT-FaceKit's README lists 68 landmark vertices, but its jaw points sit up to 28 mm (and its brows
up to 10 mm) from where the BFM-based convention puts them — the convention of 3DDFA's landmarks
and of AFLW2000-3D's ground truth, which are what facerecon fits to and is scored against. Fitting
ICT's own points to BFM-convention targets forces identity and expression to absorb the difference.

This script aligns 3DDFA_V2's BFM mean-face landmarks (asset 3ddfa-v2, `u_base.txt`) to the ICT
mean face with a similarity fitted on the stable inner points (eye corners, nose, mouth corners),
then anchors each landmark to a vertex plus a constant model-space offset (mm) that places it
exactly on the aligned BFM point for the mean face. Jaw and brows (iBUG 0-26), where the README
points are far off, take the nearest vertex of the ICT narrow face area; nose, eyes and mouth
(27-67) keep the README vertex, so eyelid and lip points stay on the right lid / lip and move
with blinks and mouth opening (a nearest-vertex search could put upper and lower inner-lip
points on the same lip of the closed-mouth mean face). The
result is written to `src/facerecon/data/ict_landmarks_bfm.json` (no test data is used).

    python scripts/calibrate_ict_landmarks.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
if "FACERECON_ASSETS" not in os.environ and (ROOT.parent / "shared" / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(ROOT.parent / "shared" / "assets")

from scipy.spatial import cKDTree

from facerecon.detect.tddfa import load_bases
from facerecon.models.ict import LANDMARKS68, VARIANTS, load_ict_data

STABLE = [36, 39, 42, 45, 27, 28, 29, 30, 31, 33, 35, 48, 54]


def umeyama(src: np.ndarray, dst: np.ndarray):
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    U, S, Vt = np.linalg.svd(d0.T @ s0 / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    scale = (S * np.diag(D)).sum() / (s0 ** 2).sum(1).mean()
    return scale, R, md - scale * R @ ms


def main() -> None:
    data = load_ict_data("head")
    V = data.mean_shape.astype(np.float64)
    ict = V[LANDMARKS68]
    bfm = load_bases().u.astype(np.float64)
    s, R, t = umeyama(bfm[STABLE], ict[STABLE])
    target = (s * (R @ bfm.T)).T + t
    _, nn = cKDTree(V[: VARIANTS["narrow"]]).query(target)
    nn[27:] = np.asarray(LANDMARKS68)[27:]
    offsets = target - V[nn]
    out = ROOT / "src" / "facerecon" / "data" / "ict_landmarks_bfm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "about": "ICT landmarks in the BFM/3DDFA/AFLW2000-3D convention: vertex + model-space offset (mm); "
                 "made by scripts/calibrate_ict_landmarks.py",
        "vertices": [int(i) for i in nn],
        "offsets_mm": np.round(offsets, 3).tolist(),
        "similarity_scale": s,
        "readme_to_bfm_distance_mm": np.round(np.linalg.norm(target - ict, axis=1), 2).tolist(),
    }, indent=1))
    d = np.linalg.norm(target - ict, axis=1)
    print(f"wrote {out}; README landmarks vs BFM convention: jaw {d[:17].mean():.1f} mm, "
          f"brows {d[17:27].mean():.1f} mm, inner {d[27:].mean():.1f} mm; offsets mean {np.linalg.norm(offsets, axis=1).mean():.1f} mm")


if __name__ == "__main__":
    main()
