"""Do FaceMesh's dense correspondences help the fit on faces that chose nothing? (held-out check)

The dense map (scripts/learn_mediapipe_ict.py) and the fitter's dense weight were set on other data
(the map on MERL `train` crops of aflw-lm68; the weight and yaw gate on AFLW2000-3D dev). Here: MERL
`test` crops of aflw-lm68 (manual labels, AFLW2000-3D excluded), landmark-only fits with and
without the dense term, scored against the manual labels on the 51 inner points (brows, eyes,
nose, mouth: the jaw's convention differs, see docs/fitting.md) that are labelled (vis >= 0).
NME = mean point distance / sqrt(w·h) of the labelled points' box, %, by |yaw| bin.

  FACERECON_ASSETS=../shared/assets python benchmarks/dense_heldout.py --data ../shared/data/aflw-lm68 --n 300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facerecon.api import FaceReconstructor
from facerecon.detect.pipeline import DefaultPipeline
from facerecon.fit import FitConfig
from facerecon.io.image import Image as FImage

CROP_BOX = (120 / 1.58) * np.array([-0.5, -0.5 - 0.14, 0.5, 0.5 - 0.14]) + 60.0  # the crop's detector-like box
INNER = np.arange(17, 68)
BINS = ((0, 30), (30, 60), (60, 1e9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=300, help="faces per run (random MERL test faces)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lab = np.load(a.data / "labels.npz")
    test = np.flatnonzero(lab["merl_split"] == "test")
    idx = np.random.default_rng(0).permutation(test)[: a.n]
    pipe = DefaultPipeline(use_mediapipe=True)
    rec = {w: FaceReconstructor(detector=pipe, fit_config=FitConfig(w_dense=w)) for w in (0.0, 1.0)}
    rows = {"start (3DDFA_V2 + TTA)": [], "fit, no dense": [], "fit + dense": []}
    gt, yaws, n_dense = [], [], 0
    for i in idx:
        name = str(lab["names"][i])
        px = np.asarray(Image.open(a.data / "images" / f"{name}.jpg").convert("RGB"))
        face = pipe.landmarks(px, CROP_BOX)
        n_dense += face.dense is not None
        img = FImage(px, name)
        rows["start (3DDFA_V2 + TTA)"].append(face.lm68)
        rows["fit, no dense"].append(rec[0.0].reconstruct_faces([img], [face], photometric=False)[0].lm68)
        rows["fit + dense"].append(rec[1.0].reconstruct_faces([img], [face], photometric=False)[0].lm68)
        g = lab["lm68"][i].astype(np.float64)
        g[lab["vis68"][i] < 0] = np.nan
        gt.append(g)
        yaws.append(abs(float(lab["yaw_deg"][i])))
    gt, yaws = np.stack(gt), np.asarray(yaws)
    lo, hi = np.nanmin(gt, 1), np.nanmax(gt, 1)
    size = np.sqrt(np.prod(hi - lo, axis=1))
    counts = [int(((yaws > b0) & (yaws <= b1)).sum()) if b0 else int((yaws <= b1).sum()) for b0, b1 in BINS]
    print(f"{len(idx)} MERL-test faces of aflw-lm68, FaceMesh found on {n_dense}; inner-51 NME %, "
          f"faces per bin {counts}")
    print(f"| {'landmarks':24s} | [0,30] | (30,60] | >60 | mean of bins |")
    print("|---|---|---|---|---|")
    for k, v in rows.items():
        e = np.nanmean(np.linalg.norm(np.stack(v)[:, INNER] - gt[:, INNER], axis=2), axis=1) / size * 100
        r = [np.mean(e[(yaws > b0) & (yaws <= b1)] if b0 else e[yaws <= b1]) for b0, b1 in BINS]
        print(f"| {k:24s} | {r[0]:.2f} | {r[1]:.2f} | {r[2]:.2f} | {np.mean(r):.2f} |")


if __name__ == "__main__":
    main()
