"""Label quality and timing of the face-profiling engine (`facerecon dataset build`).

On a reproducible, yaw-stratified sample of aflw-lm68 (MERL-RAV manual 68-point labels with
visibility; faces of the MERL-RAV *test* split, ranked by sha256("engine-labels|<name>") within each
|yaw| bin [0,30], (30,60], (60,90]), run the engine's fit exactly as a build does and score the
labels it would store for the photo (view 0: the fitted model's 68 landmarks) against the manual
ones: 2-D NME over the points MERL-RAV marks visible, normalised by sqrt(w·h) of the labelled
68-point box (the AFLW evaluator's rule). Also: photos lost (no face / fit error) and dropped by the
quality threshold, per bin, and the median time per fit and per synthesized view. These labels are
not used for any choice of the engine.

    python benchmarks/dataset_labels.py --per-bin 30 --views 2 --out /tmp/labels.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
shared = Path(__file__).resolve().parents[2] / "shared"
if "FACERECON_ASSETS" not in os.environ and (shared / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared / "assets")

BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def pick(labels, per_bin: int, split: str = "test", offset: int = 0) -> list[int]:
    yaw = np.abs(labels["yaw_deg"])
    out = []
    for lo, hi in BINS:
        sel = [i for i in range(len(yaw)) if (lo < yaw[i] <= hi or (lo == 0 and yaw[i] == 0))
               and str(labels["merl_split"][i]) == split]
        sel.sort(key=lambda i: hashlib.sha256(f"engine-labels|{labels['names'][i]}".encode()).hexdigest())
        out += sel[offset:offset + per_bin]
    return out


def nme(pred: np.ndarray, gt: np.ndarray, vis: np.ndarray) -> float:
    pos = vis >= 0
    wh = np.ptp(gt[pos], axis=0)
    size = float(np.sqrt(wh[0] * wh[1]))
    m = vis == 1
    return float(np.linalg.norm(pred[m] - gt[m], axis=1).mean() / size * 100.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(shared / "data" / "aflw-lm68"))
    ap.add_argument("--per-bin", type=int, default=30)
    ap.add_argument("--offset", type=int, default=0, help="skip the first N of each bin (to extend a run)")
    ap.add_argument("--views", type=int, default=2, help="synthesized views per photo to time (0: none)")
    ap.add_argument("--photometric", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", default=None, help="write per-photo results (JSON)")
    args = ap.parse_args(argv)

    import torch

    from facerecon.dataset import BuildConfig
    from facerecon.dataset.build import Engine, photo_rng, sample_rotations
    from facerecon.errors import FaceReconError

    torch.set_num_threads(1)
    root = Path(args.root)
    with np.load(root / "labels.npz") as z:
        labels = {k: z[k] for k in z.files}
    idx = pick(labels, args.per_bin, offset=args.offset)
    cfg = BuildConfig(views=args.views, photometric=args.photometric)
    eng = Engine(cfg)
    rows = []
    for n, i in enumerate(idx):
        name = str(labels["names"][i])
        yaw = float(labels["yaw_deg"][i])
        row = {"name": name, "yaw": yaw, "bin": next(b for b, (lo, hi) in enumerate(BINS) if abs(yaw) <= hi)}
        try:
            rec, src, t_fit = eng.fit(str(root / "images" / f"{name}.jpg"))
        except FaceReconError as e:
            row.update(status="lost", error=str(e))
            rows.append(row)
            continue
        q, perr = eng.quality(rec)
        row.update(status="ok" if q <= cfg.quality_limit else "dropped", quality=q, photo_error=perr, fit_s=t_fit,
                   nme=nme(rec.lm68, labels["lm68"][i], labels["vis68"][i]),
                   nme_detector=nme(rec.face.lm68, labels["lm68"][i], labels["vis68"][i]))
        if args.views:
            t0 = time.perf_counter()
            scene = eng.profiler.scene(src)
            t_scene = time.perf_counter() - t0
            times = []
            for rot in sample_rotations(src.rotation, cfg, photo_rng(0, name)):
                t0 = time.perf_counter()
                eng.profiler.render(src, scene, rot)
                times.append(time.perf_counter() - t0)
            row.update(scene_s=t_scene, view_s=float(np.mean(times)))
        rows.append(row)
        print(f"{n + 1}/{len(idx)} {name} yaw {yaw:+.0f} {row['status']} nme {row.get('nme', float('nan')):.2f} "
              f"quality {row.get('quality', float('nan')):.2f} fit_s {row.get('fit_s', float('nan')):.2f} "
              f"view_s {row.get('view_s', float('nan')):.2f}", file=sys.stderr, flush=True)

    def cell(sel):
        v = [r["nme"] for r in sel]
        return f"{np.mean(v):.2f} ({np.median(v):.2f}, n={len(v)})" if v else "-"

    print("| |yaw| bin | photos | lost | dropped | NME kept: mean (median, n) | NME all fitted | detector (3DDFA_V2+TTA) |")
    print("|---|---|---|---|---|---|---|---|")
    means = []
    for b, (lo, hi) in enumerate(BINS):
        rb = [r for r in rows if r["bin"] == b]
        kept = [r for r in rb if r["status"] == "ok"]
        fitted = [r for r in rb if r["status"] in ("ok", "dropped")]
        means.append(np.mean([r["nme"] for r in kept]) if kept else float("nan"))
        det = [r["nme_detector"] for r in fitted]
        print(f"| ({lo:.0f},{hi:.0f}] | {len(rb)} | {sum(r['status'] == 'lost' for r in rb)} | "
              f"{sum(r['status'] == 'dropped' for r in rb)} | {cell(kept)} | {cell(fitted)} | "
              f"{np.mean(det):.2f} |" if det else "| - |")
    print(f"mean of bins (kept): {np.nanmean(means):.2f}")
    fit_s = [r["fit_s"] for r in rows if "fit_s" in r]
    view_s = [r["view_s"] for r in rows if "view_s" in r]
    scene_s = [r["scene_s"] for r in rows if "scene_s" in r]
    if fit_s:
        print(f"median s/photo fit (detect+align+fit): {np.median(fit_s):.3f}; "
              f"s/view render: {np.median(view_s) if view_s else float('nan'):.3f}; "
              f"s/photo scene: {np.median(scene_s) if scene_s else float('nan'):.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
