"""Surface error of reconstruction methods on held-out data-engine views, VRN's protocol (docs/vrn.md).

For each selected view of the engine's 'val' split (photos no VRN training saw), the method runs
on the view's crop image as AFLW2000-3D's "GT boxes" protocol runs it (`eval.methods.ReconstructionRunner`:
3DDFA_V2 landmarks on the 3DDFA roi box of the view's true 68 landmarks, alignment, method), and
the error is the mean distance (mm) from the true mesh's vertices to the reconstructed surface
after similarity ICP of that surface onto the true mesh (`vrn.mesh.surface_error`):

  - "visible": the true vertices the view shows (front-most at their pixel; `voxel.visible_vertices`);
    a volume regressed from one image has nothing to say about the far side;
  - "all": every vertex of the model's face mask.

Per |yaw| bin (0-30, 30-60, 60-90). The views are chosen deterministically, so separate runs
(`--methods regress fit`, later `--methods vrn`) score the same views. With "regress", the model's
mean face in regress's pose is scored too: after similarity ICP any face-like surface scores a few
mm, and this says how few. `--oracle 96x100 192x200` adds the target volume itself (the true mesh
voxelised at that grid, meshed at 0.5): the floor each grid's resolution sets.
Timing per face (network, marching cubes, registration; the method's own `times`) and the peak
resident memory of the process are printed; under a shared CPU they are noisy.

    python benchmarks/vrn_surface.py /work/scratch_parser/ds --weights weights/vrn/vrn_reduced.pt \\
        --methods vrn regress --n 36 [--fit-n 10] [--oracle 96x100 192x200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

BINS = ((0, 30), (30, 60), (60, 91))


def select_views(root: Path, n: int) -> list[dict]:
    """Up to n/3 'val' views per |yaw| bin, evenly spaced in manifest order (deterministic)."""
    from facerecon.vrn.data import read_rows

    rows = [r for r in read_rows(root) if r.get("split") == "val"]
    out = []
    for lo, hi in BINS:
        b = [r for r in rows if lo <= abs(r["yaw"]) < hi]
        k = min(len(b), -(-n // len(BINS)))
        out += [b[int(i)] for i in np.linspace(0, len(b) - 1, k).round().astype(int)] if k else []
    return out


def table(name: str, errs: list[float], yaws: list[float], fails: int) -> str:
    e, y = np.asarray(errs, float), np.abs(np.asarray(yaws, float))
    cells = []
    for lo, hi in BINS:
        m = (y >= lo) & (y < hi)
        cells.append(f"{e[m].mean():.2f} ({m.sum()})" if m.any() else "—")
    mean = f"{e.mean():.2f}" if len(e) else "—"
    return f"| {name} | {len(e)} | {fails} | {mean} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    from facerecon.api import set_threads
    from facerecon.detect.crop import roi_box_from_bbox
    from facerecon.errors import FaceReconError
    from facerecon.eval.methods import ReconstructionRunner
    from facerecon.log import progress
    from facerecon.vrn.data import load_sample, model_faces, sample_camera
    from facerecon.vrn.mesh import surface_error, volume_to_mesh
    from facerecon.vrn.voxel import VoxelSpec, visible_vertices, voxelize_sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="a `facerecon dataset build` folder (its 'val' split is used)")
    p.add_argument("--weights", default=None, help="VRN weights (default: load_vrn()'s search)")
    p.add_argument("--methods", nargs="+", default=["vrn", "regress"])
    p.add_argument("--n", type=int, default=36, help="views (a third per |yaw| bin)")
    p.add_argument("--fit-n", type=int, default=10, help="views for 'fit' (slow): the first of each bin in turn")
    p.add_argument("--oracle", nargs="*", default=[], metavar="SIZExSLICES",
                   help="also the target volume meshed at these grids, e.g. 96x100 192x200 (the grid's floor)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the per-view rows here")
    args = p.parse_args(argv)
    set_threads(args.threads)
    root = Path(args.data)
    views = select_views(root, args.n)
    rows = []
    results = {}
    for method in args.methods + [f"oracle {g}" for g in args.oracle]:
        todo = views
        if method == "fit":  # interleave the bins so the first fit-n cover all of them
            per = [[v for v in views if lo <= abs(v["yaw"]) < hi] for lo, hi in BINS]
            todo = [v for grp in zip(*per) for v in grp][: args.fit_n]
        runner = None
        if not method.startswith("oracle"):
            opts = {"weights": args.weights} if method == "vrn" and args.weights else {}
            runner = ReconstructionRunner(method, photometric=False, **opts)
        errs, errs_all, yaws, fails, times, base = [], [], [], 0, [], []
        for r in progress(todo, desc=method):
            s = load_sample(root / r["sample"])
            faces = model_faces(str(s["model"]))
            vis = visible_vertices(s["vertices_px"], faces)
            try:
                if method.startswith("oracle"):
                    size, slices = (int(x) for x in method.split()[1].split("x"))
                    spec = VoxelSpec(size, slices)
                    vol, front = voxelize_sample(s["vertices_px"], faces, spec)
                    v, f = volume_to_mesh(vol.astype(np.float32), spec, front, sample_camera(s))
                    t = {}
                else:
                    lm = np.asarray(s["lm68"], np.float64)
                    box = roi_box_from_bbox([*lm.min(0), *lm.max(0)])
                    t0 = time.perf_counter()
                    rec = runner.run(str(root / r["image"]), box)
                    if rec is None:
                        raise FaceReconError("no landmarks")
                    t = {**rec.times, "total": time.perf_counter() - t0}
                    v, f = rec.vertices, rec.triangles
                e = surface_error(v, f, s["vertices_world"], vis)
                e_all = surface_error(v, f, s["vertices_world"])
            except FaceReconError as ex:
                fails += 1
                rows.append({"method": method, "sample": r["sample"], "yaw": r["yaw"], "error": str(ex)})
                continue
            if method == "regress" and rec.params is not None and rec.model is not None:
                # Baseline: the model's mean face in regress's pose: what shape adds beyond pose.
                import torch

                m, pr = rec.model, rec.params
                with torch.no_grad():
                    mv = m.pose(m.mean_shape[None], pr.rotation.to(m.mean_shape), pr.translation.to(m.mean_shape))
                mv = mv[0].double().numpy()
                base.append((surface_error(mv, f, s["vertices_world"], vis), surface_error(mv, f, s["vertices_world"]),
                             r["yaw"]))
            errs.append(e)
            errs_all.append(e_all)
            yaws.append(r["yaw"])
            times.append(t)
            rows.append({"method": method, "sample": r["sample"], "yaw": r["yaw"], "visible_mm": e, "all_mm": e_all,
                         "times": t})
        results[method] = (errs, errs_all, yaws, fails, times)
        if base:
            b = np.asarray(base)
            results["mean face, regress's pose"] = (list(b[:, 0]), list(b[:, 1]), list(b[:, 2]), 0, [])
    print(f"\n{len(views)} val views of {root} (fit: {args.fit_n})")
    print("| method | views | failed | visible mm | |yaw| 0-30 | 30-60 | 60-90 |")
    print("|---|---|---|---|---|---|---|")
    for m, (errs, _, yaws, fails, _) in results.items():
        print(table(m, errs, yaws, fails))
    print("\n| method | views | failed | all-vertex mm | |yaw| 0-30 | 30-60 | 60-90 |")
    print("|---|---|---|---|---|---|---|")
    for m, (_, errs_all, yaws, fails, _) in results.items():
        print(table(m, errs_all, yaws, fails))
    print()
    for m, (*_, times) in results.items():
        keys = sorted({k for t in times for k in t})
        if keys and len(times) > 1:  # the first face pays imports and compilation
            print(f"{m} ms per face (median of {len(times) - 1}, first excluded): "
                  + ", ".join(f"{k} {1e3 * np.median([t.get(k, np.nan) for t in times[1:]]):.0f}" for k in keys))
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
