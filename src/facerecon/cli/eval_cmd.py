"""`facerecon eval aflw2000`: 68-point NME on AFLW2000-3D (3DDFA protocol), per-image CSV, CED plot
and a markdown table beside published numbers."""

from __future__ import annotations

import os
import sys


def _default_root() -> str | None:
    env = os.environ.get("FACERECON_DATA")
    return os.path.join(env, "aflw2000-3d-dev") if env else None


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="run a benchmark (AFLW2000-3D 68-point NME)")
    s = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    s.required = True
    a = s.add_parser(
        "aflw2000",
        help="68-point 2D NME by |yaw| bin on AFLW2000-3D",
        description="68-point 2D NME (%) normalised by sqrt(w*h) of the ground-truth box, in |yaw| bins "
        "[0,30], (30,60], >60 and their mean (3DDFA protocol). Writes a per-image CSV, a CED plot and "
        "a markdown table to the output folder.",
    )
    root = _default_root()
    a.add_argument("--root", default=root,
                   help="dataset folder with protocol/ and AFLW2000/ (default $FACERECON_DATA/aflw2000-3d-dev)")
    a.add_argument("--gt", choices=("original", "reannotated"), default="original",
                   help="ground truth: the fitted pt3d_68 (original) or the re-annotated 2D points")
    a.add_argument("--boxes", choices=("gt", "detect"), default="gt",
                   help="gt: protocol roi boxes given to the method; detect: the method finds the face")
    a.add_argument("--method", default="3ddfa",
                   help="registered method name or 'package.module:factory' (see --list-methods)")
    a.add_argument("--detector", default=None,
                   help="for --boxes detect: detector backend name (faceboxes, retinaface, ...) or "
                   "'package.module:Class' (3ddfa's default: faceboxes, as 3DDFA_V2)")
    a.add_argument("-o", "--output", default="eval_out", help="output folder (default ./eval_out)")
    a.add_argument("--limit", type=int, default=None, help="only the first N images of the list")
    a.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a.add_argument("--failure-nme", type=float, default=None,
                   help="NME %% charged to a failed image in the 'failures counted' figures (default 10)")
    a.add_argument("--no-plot", action="store_true", help="skip the CED plot")
    a.add_argument("--list-methods", action="store_true", help="print the registered methods and exit")
    _option_arg(a)
    a.set_defaults(func=run)

    q = s.add_parser(
        "aflw2000-pose",
        help="head-pose MAE (yaw, pitch, roll) and geodesic error on AFLW2000",
        description="Head pose against AFLW2000's Pose_Para (images with all angles within ±99 degrees): MAE "
        "per angle in the dataset's Euler convention, their mean and the geodesic error, per |yaw| bin and "
        "overall. Writes a per-image CSV and a markdown table.",
    )
    q.add_argument("--root", default=root,
                   help="dataset folder with protocol/ and AFLW2000/ (images + .mat files)")
    q.add_argument("--boxes", choices=("gt", "detect"), default="gt",
                   help="gt: protocol roi boxes given to the method; detect: the method finds the face")
    q.add_argument("--method", default="fit",
                   help="a reconstruction method (fit, regress, regress+refine, ...), fit-photo, 3ddfa, or 3ddfa-tta (its pose averaged over test-time augmentation)")
    q.add_argument("--detector", default=None, help="detector backend for --boxes detect")
    q.add_argument("-o", "--output", default="eval_out", help="output folder (default ./eval_out)")
    q.add_argument("--limit", type=int, default=None, help="only the first N images of the list")
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    q.add_argument("--check-convention", action="store_true",
                   help="also print the convention proof (Procrustes of BFM's mean landmarks to pt3d_68)")
    _option_arg(q)
    q.set_defaults(func=run_pose)


def _option_arg(parser) -> None:
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option, e.g. w_rotation_prior=0 or photometric=false (repeatable; "
                             "numbers, true/false and strings)")


def method_options(args) -> dict:
    """--detector and every --option KEY=VALUE as the method factory's keyword arguments."""
    from ..errors import FaceReconError

    options = {"detector": args.detector} if args.detector else {}
    for item in args.option:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise FaceReconError(f"--option '{item}': expected KEY=VALUE with KEY a Python identifier")
        low = raw.strip().lower()
        if low in ("true", "false"):
            value = low == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        options[key] = value
    return options


def _progress(args, unit: str):
    """A progress callback (i, n) drawing a tqdm bar on stderr; silent with --quiet."""
    from tqdm import tqdm

    state = {}

    def progress(i: int, n: int) -> None:
        if getattr(args, "quiet", False):
            return
        if "bar" not in state:
            state["bar"] = tqdm(total=n, unit=unit, desc="evaluating", file=sys.stderr)
        state["bar"].update(i - state["bar"].n)
        if i == n:
            state["bar"].close()

    return progress


def run(args) -> int:
    import numpy as np
    import torch

    from ..eval import aflw2000 as bench
    from ..eval import methods

    if getattr(args, "list_methods", False):
        for name, desc in methods.available_methods().items():
            print(f"{name:16s} {desc}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.root:
        raise bench.DatasetError("no dataset folder: give --root DIR or set FACERECON_DATA")
    data = bench.load_aflw2000(args.root, args.gt)
    if args.limit is not None:
        data = data.subset(max(0, args.limit))
    method = methods.get_method(args.method, **method_options(args))

    progress = _progress(args, "images")

    failure = bench.DEFAULT_FAILURE_NME if args.failure_nme is None else args.failure_nme
    result = bench.evaluate(method, data, boxes=args.boxes, method_name=args.method, failure_nme=failure,
                            progress=progress)
    result.meta["torch threads"] = torch.get_num_threads()
    paths = bench.write_reports(result, args.output, plot=not args.no_plot)
    print(f"AFLW2000-3D {len(data)} images, method={args.method}, gt={args.gt}, boxes={args.boxes}")
    print(bench.format_summary(result.summary))
    if "input_summary" in result.meta:
        print("landmarks the method started from (same images):")
        print(bench.format_summary(result.meta["input_summary"]))
    print(f"latency per image: median {float(np.median(result.latency_ms)):.1f} ms "
          f"({torch.get_num_threads()} torch threads)")
    for kind, p in paths.items():
        if p is not None:
            print(f"{kind}: {p}")
    if paths["ced"] is None and not args.no_plot:
        print("(no CED plot: matplotlib is not installed)")
    return 0


def run_pose(args) -> int:
    import torch

    from ..eval import pose

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.root:
        from ..eval.aflw2000 import DatasetError

        raise DatasetError("no dataset folder: give --root DIR or set FACERECON_DATA")
    data = pose.load_aflw2000_pose(args.root, args.limit)
    options = method_options(args)
    method = pose.get_pose_method(args.method, **options)
    if args.option:
        print(f"method options: {options}")

    progress = _progress(args, "images")

    result = pose.evaluate_pose(method, data, boxes=args.boxes, method_name=args.method, progress=progress)
    result.meta["torch threads"] = torch.get_num_threads()
    if args.check_convention:
        result.meta["convention check (geodesic, BFM mean landmarks vs pt3d_68)"] = pose.convention_check(data.data)
    paths = pose.write_pose_reports(result, args.output)
    print(f"AFLW2000 head pose, {len(data)} images (|angles| <= 99), method={args.method}, boxes={args.boxes}")
    print(pose.format_pose(result))
    for k, v in result.meta.items():
        print(f"{k}: {v}")
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0
