"""How the head-pose priors' weights were chosen: on the data engine's synthesized views, whose poses
are exact, never on a benchmark (docs/evaluation.md, "Head pose").

For every view turned further the way its photo faces (where the texture is the photo's own; view 0,
whose label is the fit itself, is left out) the default pipeline runs on the view's image, and the
geodesic angle between each estimate and the view's true rotation (the model's frame, the camera's
axes) is averaged per |yaw| bin:

  - `fit` (landmark stages) at each `--fit-weights` value of `FitConfig.w_rotation_prior`, and the
    detection's own rotation (3DDFA_V2 + TTA, read through `models.frames.bfm_frame`);
  - `regress` at each `--regress-weights` value of its `pose_prior` (the chordal mean of the
    regressed rotation and the detection's; `methods.regress.fuse_rotation`).

    facerecon dataset build SOURCES -o E --views 4 --no-photometric --val-fraction 0 --seed 22
    python benchmarks/pose_priors.py E [--limit N] [--split val] [--fit-weights ""]

The documented figures: 60 aflw-lm68 MERL-train + 60 UTKFace photos (hash-ordered) as SOURCES.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def outward_views(root: Path, split: str | None = None) -> list[dict]:
    """The manifest's views (k > 0) turned at least as far as their photo, on the same side; only
    the `split` ("train" / "val") when given."""
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("status") == "ok" and (split is None or r.get("split") == split)]
    source_yaw = {r["photo_id"]: r["yaw"] for r in rows if r["view"] == 0}
    return [r for r in rows if r["view"] > 0 and r["photo_id"] in source_yaw
            and np.sign(r["yaw"]) == np.sign(source_yaw[r["photo_id"]])
            and abs(r["yaw"]) >= abs(source_yaw[r["photo_id"]]) - 5]


def report(label: str, err: list[float], yaw: list[float]) -> str:
    e, y = np.asarray(err), np.abs(yaw)
    bins = [e[(y > lo) & (y <= hi)] for lo, hi in ((-1, 30), (30, 60), (60, 181))]
    cells = " / ".join("—" if not len(b) else f"{b.mean():.2f}" for b in bins)
    return f"| {label} | {len(e)} | {e.mean():.2f} | {cells} |"


def main(argv=None) -> int:
    from facerecon.dataset import load_sample
    from facerecon.eval.methods import ReconstructionRunner
    from facerecon.eval.pose import geodesic_deg
    from facerecon.geometry.rotations import euler_to_matrix, mean_rotation
    from facerecon.io.image import load_image
    from facerecon.log import progress
    from facerecon.models.frames import bfm_frame

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="a `facerecon dataset build` folder")
    p.add_argument("--fit-weights", default="0,0.03,0.1,0.3,1")
    p.add_argument("--regress-weights", default="0,0.25,0.5,0.75,1")
    p.add_argument("--limit", type=int, default=None, help="the first N views only")
    p.add_argument("--split", default=None, choices=("train", "val"),
                   help="only this split's views (val: photos a regressor trained on the folder never saw)")
    args = p.parse_args(argv)
    root = Path(args.data)
    views = outward_views(root, args.split)[:args.limit]
    fit_w = [float(w) for w in args.fit_weights.split(",") if w]
    reg_w = [float(w) for w in args.regress_weights.split(",") if w]
    fits = {w: ReconstructionRunner("fit", photometric=False, w_rotation_prior=w) for w in fit_w}
    regress = ReconstructionRunner("regress", photometric=False, pose_prior=0.0)
    Q = bfm_frame(regress.reconstructor.model.name)
    err: dict[str, list[float]] = {}
    yaws: dict[str, list[float]] = {}

    def add(label, R, truth, yaw):
        err.setdefault(label, []).append(float(geodesic_deg(R, truth)))
        yaws.setdefault(label, []).append(yaw)

    for r in progress(views, desc="views"):
        truth = euler_to_matrix(torch.tensor(np.asarray(load_sample(root / r["sample"])["rotation"], np.float64)))
        truth = truth.numpy()
        img = load_image(root / r["image"]).pixels
        for w, run in fits.items():
            rec = run.run(img, None)
            if rec is not None:
                add(f"fit, w_rotation_prior {w:g}", rec.rotation_matrix, truth, r["yaw"])
                if w == fit_w[0] and rec.face.rotation is not None:
                    add("the detection's own (3DDFA_V2 + TTA)", rec.face.rotation @ Q, truth, r["yaw"])
        if reg_w:
            rec = regress.run(img, None)
            if rec is not None and rec.face.rotation is not None:
                own = rec.face.rotation @ Q
                for w in reg_w:
                    add(f"regress, pose_prior {w:g}", mean_rotation([rec.rotation_matrix, own], [1 - w, w]),
                        truth, r["yaw"])
    print(f"{len(views)} views of {root} (turned the way their photo faces; view 0 left out)\n")
    print("| estimate | views | mean geodesic error (deg) | [0,30] / (30,60] / >60 |")
    print("|---|---|---|---|")
    for label, e in err.items():
        print(report(label, e, yaws[label]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
