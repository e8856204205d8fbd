"""The thread policy under a concurrent CPU load: one photo's reconstruction time alone and beside a
2-thread CPU load (a torch matmul loop on 2 threads: another facerecon-like process), without the
policy (torch/numba defaults, OpenMP's default spin-wait) and with it (`facerecon.threads`: n
threads, one inter-op thread, passive OpenMP wait), for n = cores and n = 1.

    FACERECON_ASSETS=... python benchmarks/threads.py --image PHOTO [--method fit|regress]
        [--no-photometric] [--repeat 5] [--configs default,policy:2,policy:1]

Each configuration runs in a fresh process (the OpenMP runtime reads its environment once, when
torch loads), warms up on the photo once, then times --repeat reconstructions: the median and the
minimum seconds, and the slowdown loaded / alone. A fair share of 2 cores beside a 2-thread load is
a 2x slowdown; the issue measured 4-8x without a policy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, os, statistics, sys, time
cfg, image, method, photometric, repeat = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
if cfg.startswith("policy:"):
    from facerecon import threads
    n = int(cfg.split(":")[1])
    threads.apply_env(n)            # before torch loads: OpenMP reads it once
    counts = threads.apply(n)
else:
    os.environ["FACERECON_THREAD_POLICY"] = "off"  # no implicit wait policy either: torch's defaults
    import torch, numba
    counts = {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
              "numba": numba.get_num_threads()}
from facerecon.api import FaceReconstructor, load_image
rec = FaceReconstructor(method=method)
img = load_image(image)
rec.reconstruct(img, photometric=photometric)
ts = []
for _ in range(repeat):
    t = time.perf_counter()
    rec.reconstruct(img, photometric=photometric)
    ts.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(ts), "min": min(ts), "counts": counts}))
"""

LOAD = r"""
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a)
"""


def measure(cfg: str, args, loaded: bool) -> dict:
    load = None
    if loaded:
        load = subprocess.Popen([sys.executable, "-c", LOAD])
        time.sleep(3)  # let it reach its steady state
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, cfg, args.image, args.method,
                              "0" if args.no_photometric else "1", str(args.repeat)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return json.loads(out.strip().splitlines()[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--method", default="fit")
    ap.add_argument("--no-photometric", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--configs", default="default,policy:2,policy:1")
    args = ap.parse_args(argv)
    print(f"benchmarks/threads.py {' '.join(sys.argv[1:])}\ncores: {len(os.sched_getaffinity(0))}")
    print("\n| config | threads (torch/interop/numba) | alone median s (min) | loaded median s (min) | "
          "slowdown (median) | load before |\n|---|---|---|---|---|---|")
    for cfg in [c for c in args.configs.split(",") if c]:
        up = uptime().split("load average:")[-1].strip()
        alone = measure(cfg, args, False)
        loaded = measure(cfg, args, True)
        c = alone["counts"]
        print(f"| {cfg} | {c['torch']}/{c['torch_interop']}/{c.get('numba', '-')} | {alone['median']:.3f} "
              f"({alone['min']:.3f}) | {loaded['median']:.3f} ({loaded['min']:.3f}) | "
              f"{loaded['median'] / alone['median']:.2f}x | {up} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
