"""VRN's cost on this CPU: parameters, network ms per face, voxelisation ms per sample, marching cubes
ms, for the paper's size (192², 200 slices, 256 features, 2 hourglasses) and our reduced one.

    python benchmarks/vrn_speed.py [--engine /work/scratch_parser/ds] [--threads 1] [--repeat 3]

Medians of `--repeat` runs after one warm-up; the machine may be shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def median_ms(repeat: int, fn, *args) -> float:
    fn(*args)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def main(argv=None) -> int:
    import torch

    from facerecon.api import set_threads
    from facerecon.vrn.data import EngineVolumes, model_faces
    from facerecon.vrn.mesh import marching_cubes
    from facerecon.vrn.nets import VRN, VRNConfig, count_parameters
    from facerecon.vrn.train import voxel_spec_for
    from facerecon.vrn.voxel import voxelize_sample

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", default=None, help="a data-engine folder for the voxelisation timing")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    set_threads(args.threads)
    print("| config | params | network ms/face | voxelise ms/sample | marching cubes ms | volume MB float32 |")
    print("|---|---|---|---|---|---|")
    for name, cfg in (("full", VRNConfig.full()), ("reduced", VRNConfig.reduced())):
        net = VRN(cfg).eval()
        x = torch.rand(1, 3, cfg.size, cfg.size)
        with torch.no_grad():
            t_net = median_ms(args.repeat, net.volume_logits, x)
            prob = torch.sigmoid(net.volume_logits(x))[0].numpy()
        spec = voxel_spec_for(cfg)
        t_vox = t_mc = float("nan")
        if args.engine:
            ds = EngineVolumes([args.engine], None, spec)
            s = ds.sample(0)
            f = model_faces(str(s["model"]))
            t_vox = median_ms(args.repeat, voxelize_sample, s["vertices_px"], f, spec)
            vol, _ = voxelize_sample(s["vertices_px"], f, spec)
            t_mc = median_ms(args.repeat, marching_cubes, vol.astype(np.float32))
        elif prob.min() < 0.5 < prob.max():
            t_mc = median_ms(args.repeat, marching_cubes, prob)
        print(f"| {name} {cfg.size}²×{cfg.slices}, {cfg.features} features, {cfg.stacks} stack(s) | "
              f"{count_parameters(net) / 1e6:.2f} M | {t_net:.0f} | {t_vox:.1f} | {t_mc:.0f} | "
              f"{4 * cfg.size ** 2 * cfg.slices / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
