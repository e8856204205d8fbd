"""Video: throughput, memory, output size and jitter of `FaceReconstructor.reconstruct_video_file`.

1. `run`: one video file through the whole streaming path (decode → detect/track → windows →
   overlay MP4 + sequence + GLB + Live Link CSV) in this process: frames/s, peak RSS (the process's
   ru_maxrss: run each clip length in its own process to compare), bytes written and bytes per
   minute of video.

       python benchmarks/video.py run VIDEO --method regress [--max-frames N] [--out DIR]

2. `jitter`: a static head: a still photo turned into a T-frame clip by known sub-pixel shifts
   (±1.5 px) and sensor noise (σ = 3/255), as benchmarks/sets_video.py does. Any frame-to-frame
   motion of the fitted 68 landmarks after removing the known shift is jitter. Compared: the
   windowed video fit (W frames, overlap O) and the whole clip as one window, plus the motion at
   window borders alone.

       python benchmarks/video.py jitter --frames 48 --window 16 --overlap 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
SHARED = Path(__file__).resolve().parents[2] / "shared"
if "FACERECON_ASSETS" not in os.environ and (SHARED / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(SHARED / "assets")

from facerecon.api import FaceReconstructor
from facerecon.io.image import load_image
from facerecon.io.video import probe


def run(args):
    rec = FaceReconstructor("ict", method=args.method)
    info = probe(args.video)
    out = Path(args.out or f"/tmp/facerecon_video_{args.method}")
    t0 = time.perf_counter()
    s = rec.reconstruct_video_file(args.video, out, window=args.window, overlap=args.overlap,
                                   max_frames=args.max_frames, photometric=args.photometric, progress=not args.quiet)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    seconds_of_video = s.frames / info.fps
    size = {p.name: p.stat().st_size for p in s.paths}
    total = sum(size.values())
    res = {"video": Path(args.video).name, "method": args.method, "frames": s.frames, "faces": s.faces,
           "video_seconds": round(seconds_of_video, 2), "wall_s": round(wall, 1), "fps": round(s.frames / wall, 3),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
           "cpu_s_per_frame": round((ru.ru_utime + ru.ru_stime) / s.frames, 3),
           "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
           "bytes": size, "total_mb": round(total / 1e6, 2),
           "mb_per_minute": round(total / 1e6 * 60 / seconds_of_video, 2),
           "mb_per_minute_without_glb": round((total - sum(v for k, v in size.items() if k.endswith(".glb")))
                                              / 1e6 * 60 / seconds_of_video, 2),
           "window": args.window, "overlap": args.overlap, "threads": torch.get_num_threads(),
           "load": os.getloadavg()}
    print(json.dumps(res, indent=1))


def static_clip(still, T, seed=0):
    """(frames (T, H, W, 3) uint8, shifts (T, 2) px) of a still photo shifted and noised."""
    from facerecon.geometry.transforms2d import warp_image

    img = load_image(still).pixels
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-1.5, 1.5, (T, 2))
    H, W = img.shape[:2]
    frames = []
    for dx, dy in shifts:
        f = warp_image(img, np.array([[1.0, 0, dx], [0, 1.0, dy]]), (H, W)).astype(np.float32)
        frames.append(np.clip(f + rng.normal(0, 3.0, f.shape), 0, 255).astype(np.uint8))
    return frames, shifts


def jitter(args):
    rec = FaceReconstructor("ict", method=args.method)
    still = args.still or min((SHARED / "data/identity-sets/fgnet-talking-face/franck").glob("*.jpg"))
    frames, shifts = static_clip(still, args.frames)

    def motion(recs):
        lm = np.stack([r.lm68 for r in recs]) - shifts[:, None, :]
        return np.linalg.norm(np.diff(lm, axis=0), axis=-1).mean(1)  # (T-1,) per step

    rows = {}
    for name, w, o in (("windowed", args.window, args.overlap), ("whole clip", 0, 0)):
        t0 = time.perf_counter()
        recs = rec.reconstruct_video(frames, window=w, overlap=o)
        rows[name] = (motion(recs), time.perf_counter() - t0, recs)
    m_win = rows["windowed"][0]
    # Steps that cross a window border: window k (k >= 1) re-fits frames from (W-O)k on; the blend
    # ends where its new frames start, (W-O)k + O.
    step = args.window - args.overlap
    borders = [step * k + args.overlap - 1 for k in range(1, args.frames) if step * k + args.overlap < args.frames]
    ident = [float((r.params.identity - rows["windowed"][2][0].params.identity).abs().max()) for r in rows["windowed"][2]]
    print(f"## Jitter on a static {args.frames}-frame clip from {Path(still).name} (method {args.method}; "
          f"mean frame-to-frame landmark motion after removing the known shifts, px)\n")
    print("| fit | jitter px | seconds |\n|---|---|---|")
    for name, (m, sec, _) in rows.items():
        print(f"| {name} | {m.mean():.3f} | {sec:.0f} |")
    if borders:
        print(f"| windowed, at the {len(borders)} window borders only | {m_win[borders].mean():.3f} | |")
    print(f"\nratio windowed / whole clip: {m_win.mean() / rows['whole clip'][0].mean():.2f}; "
          f"identity change across windows: {max(ident):.2e}; load {os.getloadavg()}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("video")
    r.add_argument("--out")
    r.add_argument("--photometric", action="store_true")
    r.add_argument("--quiet", action="store_true")
    j = sub.add_parser("jitter")
    j.add_argument("--frames", type=int, default=48)
    j.add_argument("--still")
    for p in (r, j):
        p.add_argument("--method", default="fit")
        p.add_argument("--max-frames", type=int)
        p.add_argument("--window", type=int, default=32)
        p.add_argument("--overlap", type=int, default=8)
        p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args) if args.cmd == "run" else jitter(args)


if __name__ == "__main__":
    main()
