"""`facerecon dataset build SOURCES... -o DIR`: the face-profiling data engine (docs/dataset.md)."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("dataset", help="build a face-profiled training set (300W-LP style) from photos",
                       description="Data engines for training.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    dsub.required = True
    b = dsub.add_parser("build", help="fit photos, drop poor fits, synthesize rotated views with 3-D labels",
                        description="For each photo: detect, align and fit the model, score the fit and drop poor "
                        "ones, then render K extra views with the head rotated (|yaw| up to 90 degrees, pitch/roll "
                        "jitter) from the photo's own texture. Writes DIR/images/*.jpg, DIR/samples/*.npz and "
                        "DIR/manifest.jsonl (docs/dataset.md).")
    b.add_argument("sources", nargs="+", help="image files or folders (searched recursively)")
    b.add_argument("-o", "--output", required=True, help="dataset folder")
    b.add_argument("--views", type=int, default=4, help="synthesized views per photo (K; view 0 is the photo)")
    b.add_argument("--limit", type=int, default=None, help="process at most N new photos (smoke runs)")
    b.add_argument("--workers", type=int, default=1, help="processes (one torch thread each)")
    b.add_argument("--seed", type=int, default=0, help="seed of the views' poses")
    b.add_argument("--resume", action="store_true", help="continue a build in DIR: photos in its manifest are skipped")
    b.add_argument("--max-yaw", type=float, default=90.0, help="largest |yaw| of a synthesized view, degrees")
    b.add_argument("--max-quality", type=float, default=None,
                   help="drop fits whose landmark residual exceeds this %% of the face size (default: the documented one)")
    b.add_argument("--no-photometric", dest="photometric", action="store_false",
                   help="landmark + dense stages only: ~8x faster fits, less accurate labels at large yaw")
    b.add_argument("--split-by", choices=("photo", "folder"), default="photo",
                   help="held-out split unit: each photo, or the photo's parent folder (a person, e.g. LFW)")
    b.add_argument("--val-fraction", type=float, default=0.05, help="share of photos/identities in the 'val' split")
    b.set_defaults(func=run)


def run(args) -> int:
    from ..dataset import BuildConfig, build_dataset

    kw = {"views": args.views, "seed": args.seed, "max_yaw_deg": args.max_yaw, "photometric": args.photometric,
          "split_by": args.split_by, "val_fraction": args.val_fraction}
    if args.max_quality is not None:
        kw["max_quality"] = args.max_quality
    s = build_dataset(args.sources, args.output, BuildConfig(**kw), limit=args.limit, workers=args.workers,
                      resume=args.resume, progress=not getattr(args, "quiet", False))
    for src, err in s.errors[:20]:
        print(f"failed: {src}: {err}", file=sys.stderr)
    if len(s.errors) > 20:
        print(f"... and {len(s.errors) - 20} more failures (see manifest.jsonl)", file=sys.stderr)
    print(f"{s.out_dir}: {s.ok} photos ok ({s.samples} samples), {s.dropped} dropped (poor fit), {s.failed} failed, "
          f"{s.skipped} skipped (already built) in {s.seconds:.1f} s")
    return 0
