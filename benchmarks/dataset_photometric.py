"""Does the photometric stage pay for the data engine? Synthetic faces with known truth (no real labels).

Random faces of the model are rendered as in `benchmarks/synthetic.py` (random identity, expression,
|yaw| ≤ --max-yaw, SH light, textured background) and fitted from the image's 68 landmarks (+1 px
noise) with the landmark stages only and with the photometric stages. Then, as the engine does, both
the truth and the fit are re-posed at target yaws (pitch/roll 0) and the profiled labels compared:
68-landmark NME (% of sqrt(w·h) of the true landmarks' box) and mean vertex distance (mm) in the
camera frame, per target yaw; and the time per fit.

    python benchmarks/dataset_photometric.py --n 8
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
shared = Path(__file__).resolve().parents[2] / "shared" / "assets"
if "FACERECON_ASSETS" not in os.environ and shared.is_dir():
    os.environ["FACERECON_ASSETS"] = str(shared)

from synthetic import make_batch

from facerecon.fit import FitConfig, FitTargets, Fitter
from facerecon.models import load_model
from facerecon.render import MeshRenderer


def posed_labels(model, p, yaw_deg: float, camera):
    """(B, 68, 2) landmarks (vertex + model-space offset, then posed) and (B, V, 3) vertices of the
    heads in `p` re-posed at [0, yaw, 0] with their own translation."""
    rot = torch.zeros_like(p.rotation)
    rot[:, 1] = math.radians(yaw_deg)
    with torch.no_grad():
        v = model.shape(p.identity, p.expression)
        lm = model.pose(model.landmarks(v), rot, p.translation)
        return camera.project(lm)[..., :2], model.pose(v, rot, p.translation)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-yaw", type=float, default=0.5, help="radians, source poses")
    ap.add_argument("--yaws", default="0,45,75,90")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    model = load_model("ict")
    renderer = MeshRenderer(__import__("facerecon.geometry.camera", fromlist=["x"]).PerspectiveCamera.deep3d(),
                            model.faces, outputs=("overlay",), antialias=True)
    cam = renderer.camera
    gen = torch.Generator().manual_seed(args.seed)
    yaws = [float(y) for y in args.yaws.split(",")]
    modes = {"landmarks": Fitter(model, FitConfig(steps_photo=0)), "photometric": Fitter(model, FitConfig())}
    acc = {m: {y: [[], []] for y in yaws} for m in modes}
    times = {m: [] for m in modes}
    for _ in range(max(args.n // args.batch, 1)):
        truth, _geo, img, _lm, lm_in = make_batch(model, renderer, args.batch, gen, args.max_yaw, 1.0)
        for name, f in modes.items():
            t0 = time.perf_counter()
            res = f.fit(FitTargets(lm68=lm_in, image=img if name == "photometric" else None))
            times[name].append((time.perf_counter() - t0) / args.batch)
            for y in yaws:
                lt, vt = posed_labels(model, truth, y, cam)
                lf, vf = posed_labels(model, res.params, y, cam)
                wh = lt.amax(1) - lt.amin(1)
                size = (wh[:, 0] * wh[:, 1]).sqrt()
                acc[name][y][0] += ((lf - lt).norm(dim=-1).mean(1) / size * 100).tolist()
                acc[name][y][1] += (vf - vt).norm(dim=-1).mean(1).tolist()
    print("| fit | " + " | ".join(f"yaw {y:.0f}°: NME % / vertex mm" for y in yaws) + " | s/face |")
    print("|---|" + "---|" * (len(yaws) + 1))
    for name in modes:
        cells = [f"{sum(a[0]) / len(a[0]):.2f} / {sum(a[1]) / len(a[1]):.2f}" for a in (acc[name][y] for y in yaws)]
        print(f"| {name} | " + " | ".join(cells) + f" | {sum(times[name]) / len(times[name]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
