"""PRDL's fitting weight on held-out photos that are not AFLW2000-3D dev: aflw-lm68's MERL-RAV *test* crops.

    python benchmarks/prdl_lm68.py --per-bin 20 --weights 0,0.3,1 [--parser W] [--out FILE]

For `--per-bin` faces of each |yaw| bin ([0,30], (30,60], >60; evenly spaced through the test split's
list, a fixed choice), method `fit` (landmark stages) is run from the crop's roi box (the whole 120²
3DDFA crop, as `eval aflw2000 --boxes gt` passes AFLW2000-3D's roi boxes) with `w_prdl` = each weight
(0 = no PRDL) against the face parser's maps. Score: per face the mean error over its VISIBLE manual
points (vis68 == 1) / sqrt(w·h) of their box, % (as `eval.validation.AflwLm68Validator`), also
without the 17 jaw points (manual labels put a profile's far jaw on the silhouette). Mean of the 3
bins. These faces were never used to train the parser, the regressor or the detector's thresholds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared"
if "FACERECON_ASSETS" not in os.environ and (shared / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared / "assets")

BINS = (("[0,30]", 0.0, 30.0), ("(30,60]", 30.0, 60.0), (">60", 60.0, 1e9))


def pick(yaw: np.ndarray, per_bin: int) -> np.ndarray:
    """Indices: `per_bin` evenly spaced faces of each |yaw| bin (in list order)."""
    out = []
    for _, lo, hi in BINS:
        idx = np.flatnonzero((np.abs(yaw) >= lo if lo == 0 else np.abs(yaw) > lo) & (np.abs(yaw) <= hi))
        out.append(idx[np.linspace(0, len(idx) - 1, min(per_bin, len(idx))).round().astype(int)])
    return np.concatenate(out)


def nme_visible(pred: np.ndarray, gt: np.ndarray, vis: np.ndarray, jaw: bool = True) -> float:
    """(68, 2) prediction, (68, 2) manual points, (68,) visibility -> NME % over visible points."""
    m = vis == 1
    if not jaw:
        m = m.copy()
        m[:17] = False
    box = gt[vis == 1].max(0) - gt[vis == 1].min(0)
    return float(np.linalg.norm(pred[m] - gt[m], axis=1).mean() / np.sqrt(box[0] * box[1]) * 100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(shared / "data" / "aflw-lm68"))
    ap.add_argument("--per-bin", type=int, default=20)
    ap.add_argument("--weights", default="0,0.3,1", help="comma list of w_prdl (0 = fit without PRDL)")
    ap.add_argument("--parser", default=None, help="parser weights (default: load_parser's search)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    import torch

    from facerecon.detect.parsing import load_parser
    from facerecon.eval.methods import get_method
    from facerecon.io.image import load_image
    from facerecon.log import set_progress

    torch.set_num_threads(args.threads)
    set_progress(False)
    root = Path(args.root)
    with np.load(root / "labels.npz") as z:
        test = np.flatnonzero(z["merl_split"] == "test")
        names, lm, vis, yaw = z["names"][test], z["lm68"][test], z["vis68"][test], z["yaw_deg"][test]
    sel = pick(yaw.astype(np.float64), args.per_bin)
    parser = load_parser(args.parser)
    weights = [float(w) for w in args.weights.split(",")]
    rows = []
    for w in weights:
        method = get_method("fit") if w == 0 else get_method("fit-prdl", w_prdl=w, parser=parser)
        err, err_nj, fail, t0 = [], [], 0, time.perf_counter()
        for i in sel:
            img = load_image(root / "images" / f"{names[i]}.jpg").pixels
            H, W = img.shape[:2]
            pred = method(img, np.array([0, 0, W, H], np.float32))
            if pred is None:
                fail += 1
                err.append(np.nan)
                err_nj.append(np.nan)
                continue
            err.append(nme_visible(pred, lm[i], vis[i]))
            err_nj.append(nme_visible(pred, lm[i], vis[i], jaw=False))
        err, err_nj, y = np.array(err), np.array(err_nj), np.abs(yaw[sel])
        per = [np.nanmean(err[(y > lo if lo else y >= 0) & (y <= hi)]) for _, lo, hi in BINS]
        per_nj = [np.nanmean(err_nj[(y > lo if lo else y >= 0) & (y <= hi)]) for _, lo, hi in BINS]
        rows.append((w, per, float(np.mean(per)), float(np.mean(per_nj)), fail, (time.perf_counter() - t0) / len(sel)))
        print(f"w_prdl {w}: bins {np.round(per, 3)} mean {rows[-1][2]:.3f} (no jaw {rows[-1][3]:.3f}), "
              f"{fail} failed, {rows[-1][5]:.1f} s/face", flush=True)
    table = (f"aflw-lm68 MERL-RAV test, {len(sel)} faces ({args.per_bin} per |yaw| bin), method fit, NME % "
             "(visible manual points)\n\n| w_prdl | [0,30] | (30,60] | >60 | mean | mean without jaw | failed |\n"
             "|---|---|---|---|---|---|---|\n"
             + "".join(f"| {w} | " + " | ".join(f"{v:.3f}" for v in per) + f" | **{m:.3f}** | {mn:.3f} | {f} |\n"
                       for w, per, m, mn, f, _ in rows))
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
