"""Which landmarks should the fit follow: 3DDFA_V2 + TTA's, the regressor's own, or a blend? (issue 14, D4)

Held-out faces only: aflw-lm68's MERL `test` crops (manual labels; AFLW2000-3D excluded), drawn at random,
the same number per |yaw| bin. For each face the detection pipeline landmarks the crop's detector-like box
(as benchmarks/dense_heldout.py does), then:

- the landmark sources alone: the detector's 68 points, the regressor's projected 68 points
  (`regress`, its pose prior included), and their blends (1 − w)·detector + w·regressor;
- the fits: `fit` (detector landmarks, started from the mean face) and `regress+refine` (started from
  the regressor's parameters) with `landmark_weight` = w for every w of --weights (w = 0: detector
  landmarks). Landmark-only fits unless --photometric.

Scored against the manual labels that have a position (vis >= 0): NME = mean point distance /
sqrt(w·h) of those points' box, %, on the 51 inner points (brows, eyes, nose, mouth; a labelled profile's
jaw lies on the silhouette, ours on the 3-D surface) and on all 68. Per |yaw| bin and the mean of bins.

  FACERECON_ASSETS=../shared/assets python benchmarks/landmark_choice.py --data ../shared/data/aflw-lm68 \\
      --per-bin 40 [--weights 0,0.5,1] [--regressor weights.pt] [--photometric] [--split train] [--option refine_roi=True]
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facerecon.api import FaceReconstructor
from facerecon.detect.pipeline import DefaultPipeline
from facerecon.io.image import Image as FImage

CROP_BOX = (120 / 1.58) * np.array([-0.5, -0.5 - 0.14, 0.5, 0.5 - 0.14]) + 60.0  # the crop's detector-like box
INNER = np.arange(17, 68)
BINS = ((0, 30), (30, 60), (60, 1e9))
BIN_NAMES = ("[0,30]", "(30,60]", ">60")


def sample(lab, per_bin: int, seed: int, split: str = "test") -> np.ndarray:
    """MERL `split` indices, `per_bin` at random from each |yaw| bin."""
    test = np.flatnonzero(lab["merl_split"] == split)
    yaw = np.abs(lab["yaw_deg"][test])
    rng = np.random.default_rng(seed)
    out = []
    for lo, hi in BINS:
        pool = test[(yaw > lo) & (yaw <= hi)] if lo else test[yaw <= hi]
        out.append(rng.permutation(pool)[:per_bin])
    return np.concatenate(out)


def nme(pred: np.ndarray, gt: np.ndarray, points: np.ndarray) -> float:
    """pred, gt (68, 2); gt NaN where unlabelled. Mean distance over `points` with a label / sqrt(w·h)
    of the labelled points' box, %."""
    ok = np.isfinite(gt).all(1)
    box = np.nanmax(gt[ok], 0) - np.nanmin(gt[ok], 0)
    sel = np.intersect1d(points, np.flatnonzero(ok))
    return float(np.linalg.norm(pred[sel] - gt[sel], axis=1).mean() / np.sqrt(box[0] * box[1]) * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the aflw-lm68 folder")
    ap.add_argument("--per-bin", type=int, default=40, help="MERL test faces per |yaw| bin")
    ap.add_argument("--weights", default="0,0.5,1", help="regressor landmark shares w to try")
    ap.add_argument("--regressor", default=None, help="regressor weights (default: the shipped ones)")
    ap.add_argument("--photometric", action="store_true", help="full fits (default: landmark-only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--split", default="test", choices=("test", "train"),
                    help="MERL split (train: for choosing settings; the regressor saw some train faces)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a detection-pipeline option (DefaultPipeline keyword), e.g. refine_roi=True")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    weights = [float(w) for w in a.weights.split(",")]
    lab = np.load(a.data / "labels.npz")
    idx = sample(lab, a.per_bin, a.seed, a.split)
    options = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in a.option)}
    pipe = DefaultPipeline(**options)
    reg = FaceReconstructor(detector=pipe, method="regress", regressor=a.regressor)
    fits = {"fit": FaceReconstructor(detector=pipe, method="fit")}
    for w in weights:
        fits[f"regress+refine w={w:g}"] = FaceReconstructor(detector=pipe, method="regress+refine",
                                                            regressor=a.regressor, landmark_weight=w)
    rows: dict[str, list[np.ndarray]] = {}
    gt, yaws, secs = [], [], {k: 0.0 for k in fits}
    t_start = time.perf_counter()
    for n, i in enumerate(idx):
        name = str(lab["names"][i])
        px = np.asarray(Image.open(a.data / "images" / f"{name}.jpg").convert("RGB"))
        img = FImage(px, name)
        face = pipe.landmarks(px, CROP_BOX)
        det = np.asarray(face.lm68, np.float64)
        own = np.asarray(reg.reconstruct_faces([img], [face], photometric=False)[0].lm68, np.float64)
        for w in weights:
            rows.setdefault(f"landmarks, w={w:g}" + (" (detector)" if w == 0 else " (regressor)" if w == 1 else ""),
                            []).append((1 - w) * det + w * own)
        for k, rec in fits.items():
            t = time.perf_counter()
            rows.setdefault(k, []).append(np.asarray(
                rec.reconstruct_faces([img], [face], photometric=a.photometric)[0].lm68, np.float64))
            secs[k] += time.perf_counter() - t
        g = lab["lm68"][i].astype(np.float64)
        g[lab["vis68"][i] < 0] = np.nan
        gt.append(g)
        yaws.append(abs(float(lab["yaw_deg"][i])))
        if (n + 1) % 10 == 0:
            print(f"  {n + 1}/{len(idx)} faces, {time.perf_counter() - t_start:.0f} s", flush=True)
    yaws = np.asarray(yaws)
    in_bin = [(yaws > lo) & (yaws <= hi) if lo else yaws <= hi for lo, hi in BINS]
    print(f"\n{len(idx)} MERL {a.split} faces of aflw-lm68 ({a.per_bin} per |yaw| bin, seed {a.seed}); regressor "
          f"{a.regressor or 'shipped'}; {'photometric' if a.photometric else 'landmark-only'} fits; "
          f"pipeline options {options or 'none'}; NME %\n")
    for label, points in (("51 inner points", INNER), ("all 68 labelled points", np.arange(68))):
        print(f"| {label} | " + " | ".join(BIN_NAMES) + " | mean of bins |\n|---|---|---|---|---|")
        for k, preds in rows.items():
            e = np.array([nme(p, g, points) for p, g in zip(preds, gt)])
            b = [e[m].mean() for m in in_bin]
            print(f"| {k} | " + " | ".join(f"{v:.2f}" for v in b) + f" | {np.mean(b):.2f} |")
        print()
    print("seconds per fit: " + ", ".join(f"{k} {v / len(idx):.2f}" for k, v in secs.items()))


if __name__ == "__main__":
    main()
