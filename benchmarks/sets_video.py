"""Image sets and video: does sharing identity / smoothing over time help? Two measured figures.

1. Identity stability (LFW identity sets, 10 photos per person): fit each photo independently and
   measure the spread of the per-photo identity shapes (mean vertex distance to the person's mean
   shape, mm, neutral expression, model space). Then fit the set as two disjoint halves with one
   shared identity each and measure the distance between the two half-set shapes (mm). A stable
   method gives a small half-to-half distance compared with the per-photo spread. (The set fit's
   identity is the average of the independent landmark fits' — see `fit/sets.py` — so without
   --photometric its half-to-half distance equals the independent-average column up to rounding;
   with --photometric the independent fits also refine identity from shading, the set does not.)
2. Video jitter on a static head: a still photo is turned into a T-frame clip by small random
   sub-pixel shifts (±1.5 px) and sensor noise (σ = 3/255). The head does not move except for the
   known shifts, so any remaining frame-to-frame motion of the fitted 68 landmarks (after removing
   the known shift) is jitter. Compared: independent per-frame fits vs `reconstruct_video`
   (shared identity + temporal smoothing).

    python benchmarks/sets_video.py --people 4 --frames 24
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
SHARED = Path(__file__).resolve().parents[2] / "shared"
if "FACERECON_ASSETS" not in os.environ and (SHARED / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(SHARED / "assets")

from facerecon.api import FaceReconstructor
from facerecon.io.image import load_image


def neutral_shapes(rec: FaceReconstructor, recs) -> torch.Tensor:
    m = rec.model
    ident = torch.cat([r.params.identity for r in recs])
    with torch.no_grad():
        return m.shape(ident, torch.zeros(len(recs), m.layout.n_expression))


def identity_stability(rec, people, photometric):
    rows = []
    for person in people:
        paths = sorted(person.glob("*.jpg"))[:10]
        imgs = [load_image(p) for p in paths]
        faces = [rec.detect(im) for im in imgs]
        keep = [(im, f[0]) for im, f in zip(imgs, faces) if f]
        if len(keep) < 4:
            continue
        ims, fs = zip(*keep)
        indep = rec.reconstruct_faces(list(ims), list(fs), photometric=photometric)
        S = neutral_shapes(rec, indep)
        spread = float((S - S.mean(0)).norm(dim=-1).mean())
        h = len(ims) // 2
        a = rec.reconstruct_faces(list(ims[:h]), list(fs[:h]), photometric=photometric, shared_identity=True)
        b = rec.reconstruct_faces(list(ims[h:]), list(fs[h:]), photometric=photometric, shared_identity=True)
        Sa, Sb = neutral_shapes(rec, a[:1]), neutral_shapes(rec, b[:1])
        half = float((Sa - Sb).norm(dim=-1).mean())
        # The same split for independent fits: mean shape of each half.
        half_indep = float((S[:h].mean(0) - S[h:].mean(0)).norm(dim=-1).mean())
        rows.append((person.name, len(ims), spread, half_indep, half))
    return rows


def video_jitter(rec, still_path, T, photometric, seed=0):
    img = load_image(still_path).pixels.astype(np.float32)
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-1.5, 1.5, (T, 2))
    H, W = img.shape[:2]
    frames = []
    _yy, _xx = np.mgrid[0:H, 0:W].astype(np.float32)
    from facerecon.geometry.transforms2d import warp_image
    for dx, dy in shifts:
        M = np.array([[1.0, 0, dx], [0, 1.0, dy]])
        f = warp_image(img.astype(np.uint8), M, (H, W)).astype(np.float32)
        f = np.clip(f + rng.normal(0, 3.0, f.shape), 0, 255).astype(np.uint8)
        frames.append(f)
    ims = [load_image(f, name=f"frame{i}") for i, f in enumerate(frames)]
    faces = [rec.detect(im)[0] for im in ims]

    def jitter(recs):
        lm = np.stack([r.lm68 for r in recs]) - shifts[:, None, :]  # remove the known motion
        return float(np.linalg.norm(np.diff(lm, axis=0), axis=-1).mean())

    det = np.stack([f.lm68 for f in faces]) - shifts[:, None, :]
    det_j = float(np.linalg.norm(np.diff(det, axis=0), axis=-1).mean())
    indep = rec.reconstruct_faces(ims, faces, photometric=photometric)
    video = rec.reconstruct_faces(ims, faces, photometric=photometric, shared_identity=True, temporal=1.0)
    return det_j, jitter(indep), jitter(video)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--photometric", action="store_true", help="include the photometric stage (slower)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rec = FaceReconstructor("ict")
    people = sorted(p for p in (SHARED / "data/identity-sets/lfw").iterdir() if p.is_dir())[: args.people]
    rows = identity_stability(rec, people, args.photometric)
    print(f"## Identity stability (LFW, photometric={args.photometric})\n")
    print("| person | photos | per-photo spread mm | half vs half, independent mm | half vs half, shared mm |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f} |")
    a = np.array([r[2:] for r in rows])
    print(f"| **mean** | | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | {a[:, 2].mean():.2f} |\n")
    still = min((SHARED / "data/identity-sets/fgnet-talking-face/franck").glob("*.jpg"))
    det_j, ind_j, vid_j = video_jitter(rec, still, args.frames, args.photometric)
    print(f"## Jitter on a static {args.frames}-frame clip from {still.name} (mean frame-to-frame landmark motion, px)\n")
    print("| landmarks | jitter px |\n|---|---|")
    print(f"| detector (input to the fit) | {det_j:.3f} |")
    print(f"| independent per-frame fits | {ind_j:.3f} |")
    print(f"| video fit (shared identity + temporal smoothing) | {vid_j:.3f} |")
    print(f"| ratio video / independent | {vid_j / ind_j:.2f} |")


if __name__ == "__main__":
    main()
