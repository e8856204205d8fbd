"""`facerecon batch` at scale: faces/s per method, engine and worker count; peak memory at two input
counts; a SIGKILL at ~50 % then a resume, counting outputs written once, lost and duplicated.

    FACERECON_ASSETS=... python benchmarks/batch.py --photos 1000 --work /tmp/bench_batch
        [--source DIR] [--methods regress,fit] [--engines local,ray] [--workers 1,2]
        [--rss 100,1000] [--kill-photos 1000] [--skip throughput,rss,kill,cluster] [--repeat 1]
        [--cluster-photos 40]

--engines takes local, ray (plain Ray actors, the default of --engine ray: a Ray started by the
command), ray-data (the same through Ray Data) and ray-cluster (plain actors on a Ray node started
once before the timed runs, joined with --address: how a cluster that serves many batches runs).

The photos are symbolic links (in --work) to the shared UTKFace faces (default
$FACERECON_DATA/utkface/images, else ../shared/data/utkface/images), replicated under new names when
more are asked for than exist. "fit" is the landmark-only fit (--no-photometric). Every run is the
real command (`python -m facerecon.cli.main batch ...`) in a subprocess; memory is the peak resident
set of its whole process tree (driver, workers, Ray's processes) and of the driver alone, sampled
every 0.2 s from /proc. faces/s is reported over the whole run (start-up included) and between the
first and the last finished photo (the results table's `finished` times: start-up excluded). Prints markdown tables, the load (`uptime`) before each section and each
command it ran. The throughput runs go engine after engine for each method and worker count (ratios
to the local engine under the same load), with the CPU seconds of the whole process tree per face
(a measure the machine's other load disturbs less) and Ray's start-up split into ray.init and
actors ready. "cluster" runs `--engine ray --address` on a two-node Ray cluster on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_source() -> Path:
    base = Path(os.environ.get("FACERECON_DATA", ROOT.parent / "shared" / "data"))
    return base / "utkface" / "images"


def make_photos(source: Path, n: int, dest: Path) -> Path:
    """`dest` holding n symlinks to `source`'s photos (replicated under new names past their count)."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no photos in {source}")
    if dest.is_dir() and len(list(dest.iterdir())) == n:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for p in dest.iterdir():
        p.unlink()
    for i in range(n):
        src = files[i % len(files)]
        (dest / f"p{i:06d}_{src.name}").symlink_to(src)
    return dest


def uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def _tree_rss(root: int, cpu: dict[int, float] | None = None) -> tuple[int, int]:
    """(RSS of `root`, RSS of root and all its descendants), bytes. cpu: updated with each
    process's CPU seconds (user + system) so far, by pid."""
    kids: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    secs: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            fields = stat.rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            secs[int(d)] = (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        if cpu is not None and p in secs:
            cpu[p] = max(cpu.get(p, 0.0), secs[p])
        todo += kids.get(p, [])
    return rss.get(root, 0), total


class RssPoller(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_driver = self.peak_tree = 0
        self.cpu: dict[int, float] = {}  # CPU seconds of every process of the tree seen, by pid
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            d, t = _tree_rss(self.pid, self.cpu)
            self.peak_driver, self.peak_tree = max(self.peak_driver, d), max(self.peak_tree, t)
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join()


def batch_cmd(photos, out, method, engine="local", workers=1, extra=()) -> list[str]:
    cmd = [sys.executable, "-m", "facerecon.cli.main", "-q", "batch", str(photos), "-o", str(out),
           "--method", method, "--engine", engine, "--workers", str(workers)]
    if method == "fit":
        cmd.append("--no-photometric")
    return cmd + list(extra)


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    print(f"    $ {' '.join(f'{k}={v}' for k, v in (env or {}).items())}{' ' if env else ''}{shlex.join(cmd)}",
          flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, env={**os.environ, **(env or {})})
    poll = RssPoller(proc.pid)
    poll.start()
    rc = proc.wait()
    poll.stop()
    return {"rc": rc, "wall_s": time.perf_counter() - t, "rss_driver_mb": poll.peak_driver / 2**20,
            "rss_tree_mb": poll.peak_tree / 2**20, "cpu_s": sum(poll.cpu.values())}


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def steady_rate(out: Path) -> float:
    """Faces per second between the first and the last finished input (start-up excluded), from the
    results table's `finished` times: the same measure for every engine."""
    import pyarrow.parquet as pq

    t = sorted(pq.read_table(out / "results.parquet", columns=["finished"]).column("finished").to_pylist())
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else float("nan")


# Engines of the throughput section: "ray-data" is `--engine ray` through Ray Data (FACERECON_RAY_API=data);
# "ray-cluster" joins a Ray node started once, before the timed runs (`ray start --head`, as a cluster
# serving many batches is run), with `--address`: its ray.init is a connection, not a node's start-up.
ENGINES = {"local": ("local", None), "ray": ("ray", None), "ray-data": ("ray", {"FACERECON_RAY_API": "data"}),
           "ray-cluster": ("ray", None)}


class RayHead:
    """A one-node Ray cluster on this machine for the "ray-cluster" engine (`ray start --head` with
    this machine's cores; `ray stop` on exit). Its address is what `--address` takes."""

    def __enter__(self):
        ray_bin = str(Path(sys.executable).with_name("ray"))
        self.stop = [ray_bin, "stop", "--force"]
        cmd = [ray_bin, "start", "--head", f"--num-cpus={os.cpu_count()}", "--include-dashboard=false",
               "--disable-usage-stats", "--port=0"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        import ray

        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
        self.address = ray.get_runtime_context().gcs_address
        ray.shutdown()
        print(f"    $ {shlex.join(cmd)}  -> {self.address}", flush=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(self.stop, check=False, capture_output=True)


def _load1() -> float:
    return os.getloadavg()[0]


def throughput(args, photos: Path) -> None:
    print(f"\n## faces/s ({args.photos} photos)  load: {uptime()}\n", flush=True)
    runs: dict[tuple, list[dict]] = {}
    with contextlib.ExitStack() as stack:
        head = stack.enter_context(RayHead()) if "ray-cluster" in args.engines else None
        _throughput_runs(args, photos, runs, head)
    _throughput_table(args, runs)


def _throughput_runs(args, photos: Path, runs: dict, head) -> None:
    # Engines back to back for each method and worker count (and --repeat rounds of them), so that
    # their ratios see the same load.
    for method in args.methods:
        for w in args.workers:
            for rep in range(args.repeat):
                for engine in args.engines:
                    eng, env = ENGINES[engine]
                    out = args.work / f"out_{method}_{engine}_{w}"
                    extra = ["--no-resume"]
                    if engine == "ray-cluster":  # the local engine's split of the cores, given explicitly
                        extra += ["--address", head.address, "--threads-per-worker", str(max(1, os.cpu_count() // w))]
                    load = _load1()
                    m = run_measured(batch_cmd(photos, out, method, eng, w, extra), env)
                    if not (out / "summary.json").exists() or m["rc"] not in (0, 3):
                        print(f"    -> FAILED (exit {m['rc']})", flush=True)
                        continue
                    s = summary(out)
                    t = s.get("engine_timings", {})
                    r = {"threads": s["threads"], "faces": s["faces"], "failed": s["images_failed"],
                         "first_s": s["first_s"], "init_s": t.get("ray_init_s", float("nan")),
                         "actors_s": t.get("actors_ready_s", float("nan")), "all": s["faces_per_s"],
                         "steady": steady_rate(out), "cpu_per_face": m["cpu_s"] / max(1, s["faces"]),
                         "rss": m["rss_tree_mb"], "rc": m["rc"], "load": (load + _load1()) / 2,
                         "wall": m["wall_s"], "cmd": s["faces"] / m["wall_s"]}
                    if engine == "ray-cluster":  # the actors live in the cluster, outside the command's tree
                        r["cpu_per_face"] = r["rss"] = float("nan")
                    runs.setdefault((method, w, engine), []).append(r)
                    print(f"    -> {r}  load: {uptime()}", flush=True)


def _throughput_table(args, runs: dict) -> None:
    def med(vals):
        vals = sorted(vals)
        return vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2

    print(f"\nMedians of {args.repeat} run(s) each. start-up: seconds to the first finished photo (ray: of which "
          "ray.init / all actors ready, models loaded); faces/s (all): over the whole run; (steady): first to "
          "last finished photo; (command): over the command's wall time, process start to exit (Python "
          "start-up, imports, table writing and Ray's shut-down included); x local: the ratio to the local engine's figure of the same method and "
          "workers; CPU s/face: CPU seconds of the whole process tree per face; load: 1-min load average.\n")
    print("| method | engine | workers x threads | faces | failed | start-up s | ray.init s | actors ready s | "
          "faces/s (all) | x local | faces/s (steady) | x local | command s | faces/s (command) | x local | CPU s/face | "
          "peak RSS tree MB | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (method, w, engine), rs in runs.items():
        ref = runs.get((method, w, "local"))
        f = {k: med([r[k] for r in rs]) for k in ("first_s", "init_s", "actors_s", "all", "steady", "cpu_per_face",
                                                   "rss", "load", "wall", "cmd")}
        ratio = {k: f[k] / med([r[k] for r in ref]) if ref else float("nan") for k in ("all", "steady", "cmd")}
        print(f"| {method} | {engine} | {w} x {rs[0]['threads']} | {rs[0]['faces']} | {rs[0]['failed']} | "
              f"{f['first_s']:.1f} | {f['init_s']:.1f} | {f['actors_s']:.1f} | {f['all']:.2f} | {ratio['all']:.2f} | "
              f"{f['steady']:.2f} | {ratio['steady']:.2f} | {f['wall']:.1f} | {f['cmd']:.2f} | {ratio['cmd']:.2f} | "
              f"{f['cpu_per_face']:.3f} | {f['rss']:.0f} | "
              f"{f['load']:.1f} |")


def rss(args) -> None:
    print(f"\n## peak memory vs input count (regress, local, 1 worker)  load: {uptime()}\n", flush=True)
    rows = []
    for n in args.rss:
        photos = make_photos(args.source, n, args.work / f"photos_{n}")
        out = args.work / f"out_rss_{n}"
        m = run_measured(batch_cmd(photos, out, "regress", "local", 1, ["--no-resume"]))
        rows.append((n, m["rss_driver_mb"], m["rss_tree_mb"], summary(out)["faces"]))
    print("| photos | faces | peak RSS driver MB | peak RSS tree MB |\n|---|---|---|---|")
    for n, d, t, f in rows:
        print(f"| {n} | {f} | {d:.0f} | {t:.0f} |")


def kill_resume(args) -> None:
    n = args.kill_photos
    print(f"\n## SIGKILL at ~50 % then resume ({n} photos, regress, local, 1 worker)  load: {uptime()}\n",
          flush=True)
    photos = make_photos(args.source, n, args.work / f"photos_{n}")
    out = args.work / "out_kill"
    cmd = batch_cmd(photos, out, "regress", "local", 1, ["--no-resume"])
    print(f"    $ {shlex.join(cmd)}  (SIGKILL to its process group at {n // 2} output files)", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    faces = out / "faces"
    while proc.poll() is None:
        if faces.is_dir() and sum(1 for _ in os.scandir(faces)) >= n // 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    at = sum(1 for _ in os.scandir(faces)) if faces.is_dir() else 0
    resume = batch_cmd(photos, out, "regress", "local", 1)
    m = run_measured(resume)
    import pyarrow.parquet as pq

    res = pq.read_table(out / "results.parquet", columns=["source", "stem"]).to_pylist()
    fail = pq.read_table(out / "failures.parquet", columns=["source"]).to_pylist()
    sources = [r["source"] for r in res] + [r["source"] for r in fail]
    inputs = {str(p.absolute()) for p in photos.iterdir()}
    files = [p.name for p in faces.iterdir()]
    stems = {r["stem"] for r in res}
    s = summary(out)
    print(f"killed: {killed} at {at} output files; resume exit code {m['rc']}, skipped {s['skipped_done']} "
          f"done, did {s['images_ok'] + s['images_failed']}")
    print("| inputs | in tables once | lost (in no table) | duplicated rows | output files | files without a "
          "row | rows without a file | stray temp files |\n|---|---|---|---|---|---|---|---|")
    print(f"| {len(inputs)} | {len(set(sources) & inputs)} | {len(inputs - set(sources))} | "
          f"{len(sources) - len(set(sources))} | {len(files)} | "
          f"{len({f.rsplit('.', 1)[0] for f in files} - stems)} | {len(stems - {f.rsplit('.', 1)[0] for f in files})} | "
          f"{sum(f.startswith('.') for f in files)} |")


def cluster(args) -> None:
    """`--engine ray --address` on a two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`,
    1 CPU per node, 2 actors of 1 thread): the faces each node did, from the results' `node` column."""
    import collections

    import pyarrow.parquet as pq
    from ray.cluster_utils import Cluster

    n = args.cluster_photos
    print(f"\n## a two-node Ray cluster on this machine ({n} photos, regress)  load: {uptime()}\n", flush=True)
    photos = make_photos(args.source, n, args.work / f"photos_{n}")
    out = args.work / "out_cluster"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        second = c.add_node(num_cpus=1)
        c.wait_for_nodes()
        names = {c.head_node.node_id: "head", second.node_id: "second"}
        m = run_measured(batch_cmd(photos, out, "regress", "ray", 2,
                                   ["--address", c.address, "--threads-per-worker", "1", "--no-resume"]))
    finally:
        c.shutdown()
    res = pq.read_table(out / "results.parquet", columns=["node", "worker"]).to_pylist()
    per_node = collections.Counter(names.get(r["node"], r["node"]) for r in res)
    print(f"exit {m['rc']}, {m['wall_s']:.1f} s; faces per node: {dict(per_node)}; actor processes: "
          f"{len({r['worker'] for r in res})}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (photos and outputs)")
    ap.add_argument("--source", type=Path, default=default_source())
    ap.add_argument("--methods", default="regress,fit")
    ap.add_argument("--engines", default="local,ray", help=f"comma list of {','.join(ENGINES)}")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the throughput runs (medians reported)")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--rss", default="100,1000", help="photo counts whose peak memory is compared")
    ap.add_argument("--kill-photos", type=int, default=None, help="photos of the kill/resume run (default --photos)")
    ap.add_argument("--cluster-photos", type=int, default=40, help="photos of the two-node Ray cluster run")
    ap.add_argument("--skip", default="", help="sections to skip: throughput,rss,kill,cluster (cluster runs "
                                               "when ray is among --engines)")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.engines = [e for e in args.engines.split(",") if e]
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.rss = [int(n) for n in args.rss.split(",") if n]
    args.kill_photos = args.kill_photos or args.photos
    args.work.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(","))
    print(f"benchmarks/batch.py: {' '.join(sys.argv[1:])}\ncores: {len(os.sched_getaffinity(0))}, load: {uptime()}")
    if "throughput" not in skip:
        throughput(args, make_photos(args.source, args.photos, args.work / f"photos_{args.photos}"))
    if "rss" not in skip:
        rss(args)
    if "kill" not in skip:
        kill_resume(args)
    if "cluster" not in skip and any(ENGINES[e][0] == "ray" for e in args.engines):
        cluster(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
