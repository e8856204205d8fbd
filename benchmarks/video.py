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


def rss_mb() -> float:
    """The process's resident memory now (not the peak), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(args):
    """`reconstruct_video_file`'s loop (stream → VideoOutputs), sampling the resident memory."""
    from facerecon.io.video import iter_frames
    from facerecon.log import progress
    from facerecon.methods.video import VideoOutputs

    rec = FaceReconstructor("ict", method=args.method)
    info = probe(args.video)
    out = Path(args.out or f"/tmp/facerecon_video_{args.method}")
    t0 = time.perf_counter()
    sink = VideoOutputs(out, Path(args.video).stem, info.fps, source=Path(args.video).name)
    n, samples = 0, []
    stream = rec.stream_video(iter_frames(args.video, max_frames=args.max_frames), args.photometric, 1.0,
                              args.window, args.overlap)
    with progress(total=args.max_frames or info.frames, unit="frame", show=not args.quiet) as bar:
        for frame, r in stream:
            sink.add(frame, r)
            n += 1
            bar.update(1)
            if n % args.sample == 0:
                samples.append((n, round(rss_mb(), 1), round(time.perf_counter() - t0, 1)))
                print("frames, resident MB, seconds:", *samples[-1], file=sys.stderr, flush=True)
    paths = sink.close()
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    seconds_of_video = n / info.fps
    size = {p.name: p.stat().st_size for p in paths}
    total = sum(size.values())
    glb = sum(v for k, v in size.items() if k.endswith(".glb"))
    res = {"video": Path(args.video).name, "method": args.method, "frames": n, "faces": len(sink.rows),
           "video_seconds": round(seconds_of_video, 2), "wall_s": round(wall, 1), "fps": round(n / wall, 3),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
           "cpu_s_per_frame": round((ru.ru_utime + ru.ru_stime) / n, 3),
           "peak_rss_mb": round(ru.ru_maxrss / 1024, 1), "rss_mb_by_frame(frames, MB, s)": samples,
           "bytes": size, "total_mb": round(total / 1e6, 2),
           "mb_per_minute_without_glb": round((total - glb) / 1e6 * 60 / seconds_of_video, 2),
           "glb_mb_fixed": round((glb - 0) / 1e6, 2),
           "window": args.window, "overlap": args.overlap, "threads": torch.get_num_threads(),
           "load": os.getloadavg()}
    print(json.dumps(res, indent=1))


class Memo:
    """A detector whose answers are remembered per (frame, box), so two runs over the same frames
    compare the reconstruction alone."""

    def __init__(self, det):
        self.det, self.cache = det, {}

    def _key(self, pixels, *rest):
        import hashlib

        return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest(), *rest

    def detect(self, pixels):
        k = self._key(pixels)
        if k not in self.cache:
            self.cache[k] = self.det.detect(pixels)
        return self.cache[k]

    def landmarks(self, pixels, box, score=1.0):
        k = self._key(pixels, tuple(np.round(np.asarray(box, np.float64), 3)))
        if k not in self.cache:
            self.cache[k] = self.det.landmarks(pixels, box, score=score)
        return self.cache[k]


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
    rec._detector = Memo(rec.detector)
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
    r.add_argument("--sample", type=int, default=25, help="sample the resident memory every N frames")
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
