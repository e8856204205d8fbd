"""Our PyTorch FaceMesh against mediapipe 0.10's legacy `mp.solutions.face_mesh` on AFLW2000-3D dev.

For each image: FaceMesh on the crop around the protocol roi box (`mesh_in_box`, the fit's dense-point
path) and on the whole image (`mesh`), with both backends. Reported: how often each finds a face,
the mean and max pixel distance of the 468 points and of the mapped 68, |Δz|, and ms per face
(`mesh_in_box`, both backends timed in the same loop; noisy on a loaded machine).

    python benchmarks/facemesh.py [--limit N] [--threads 2]
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

import torch

from facerecon.detect.mediapipe import MediaPipeLandmarker
from facerecon.io.image import load_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(shared / "data" / "aflw2000-3d-dev"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads of the process")
    ap.add_argument("--net-threads", type=int, default=1,
                    help="threads our FaceMesh graph runs on (its default, 1; 0 = the process's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    files = sorted((root / "AFLW2000").glob("*.jpg"))[: args.limit]
    boxes = np.load(root / "protocol" / "AFLW2000-3D_crop.roi_box.npy")[: len(files), :4]
    ours, ref = MediaPipeLandmarker(), MediaPipeLandmarker(backend="mediapipe-legacy")
    ours._graph.threads = args.net_threads or None
    stats = {k: {"d": [], "dmax": [], "d68": [], "dz": [], "none": [0, 0], "disagree": 0} for k in ("crop", "whole")}
    t_ref = t_ours = 0.0
    for f, box in zip(files, boxes):
        px = load_image(f).pixels
        t0 = time.perf_counter()
        a = ref.mesh_in_box(px, box)
        t1 = time.perf_counter()
        b = ours.mesh_in_box(px, box)
        t_ref, t_ours = t_ref + t1 - t0, t_ours + time.perf_counter() - t1
        for kind, (a_, b_) in (("crop", (a, b)), ("whole", (ref.mesh(px), ours.mesh(px)))):
            s = stats[kind]
            s["none"][0] += a_ is None
            s["none"][1] += b_ is None
            if (a_ is None) != (b_ is None):
                s["disagree"] += 1
            if a_ is None or b_ is None:
                continue
            d = np.hypot(*(a_[:, :2] - b_[:, :2]).T)
            s["d"].append(d.mean())
            s["dmax"].append(d.max())
            s["d68"].append(np.hypot(*(ref.mapping(a_) - ours.mapping(b_)).T).max())
            s["dz"].append(np.abs(a_[:, 2] - b_[:, 2]).mean())
    n = len(files)
    print(f"{n} images; threads {args.threads} (our graph: {args.net_threads or args.threads})")
    for kind, s in stats.items():
        print(f"{kind:5s}: no face legacy {s['none'][0]}, torch {s['none'][1]}, disagree {s['disagree']}; "
              f"468 pts: mean {np.mean(s['d']):.4f} px, max {np.max(s['dmax']):.4f} px; "
              f"68 mapped: max {np.max(s['d68']):.4f} px; |dz| mean {np.mean(s['dz']):.4f} px ({len(s['d'])} faces)")
    print(f"ms per face (mesh_in_box): legacy {1000 * t_ref / n:.1f}, torch {1000 * t_ours / n:.1f}")
    ref.close()


if __name__ == "__main__":
    main()
