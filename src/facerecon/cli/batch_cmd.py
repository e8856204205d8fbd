"""`facerecon batch INPUTS... -o OUT`: folders, globs and manifests of photos → per-face files and two
Parquet tables, on worker processes or Ray, resumable after a kill (docs/batch.md)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="reconstruct many photos: resumable, parallel, results in Parquet tables",
                       description="Reconstruct every face of many photos. Writes OUT/faces/<stem>.* per face, "
                                   "OUT/results.parquet (one row per face) and OUT/failures.parquet (one row per "
                                   "input that failed, with a named reason). Exit code 0: all inputs "
                                   "reconstructed; 3: some failed; 2: a usage or setup error.")
    p.add_argument("inputs", nargs="+", help="image files, folders, glob patterns, or manifests (.txt/.lst: one "
                                             "path a line; .csv/.tsv: a 'path' column)")
    p.add_argument("-o", "--output", required=True, help="output folder (also holds the resume state)")
    p.add_argument("--method", default="fit", help="a registered method (facerecon reconstruct --list-methods)")
    p.add_argument("--model", default="ict", choices=["ict", "bfm"])
    p.add_argument("--detector", default="auto", help="detector backend; auto: the method's choice")
    p.add_argument("--no-photometric", action="store_true", help="landmark-only fit (fast)")
    p.add_argument("--outputs", default="json",
                   help="comma list of per-face output formats (default json; 'none': tables only; "
                        "facerecon reconstruct --list-outputs)")
    p.add_argument("--max-faces", type=int, default=1, help="faces per image, largest first")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: worker processes on this machine; ray: a pool of Ray actors holding the models, on a local Ray or a cluster (pip install 'facerecon[ray]')")
    p.add_argument("--workers", type=int, default=1, help="worker processes (local) or actors (ray)")
    p.add_argument("--threads-per-worker", type=int, default=None,
                   help="compute threads per worker (default: cores // workers; capped so workers x threads <= cores)")
    p.add_argument("--address", default=None, help="ray: an existing cluster ('auto', 'ray://host:10001'); "
                                                    "default: start a local Ray")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip inputs already recorded in OUT's tables (default); --no-resume starts them anew")
    p.add_argument("--recursive", action="store_true", help="search folders (and ** globs) recursively")
    p.add_argument("--max-side", type=int, default=4096, help="downscale larger photos to this side (pixels)")
    p.add_argument("--limit", type=int, default=None, help="stop after N new inputs")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import api, batch
    from ..errors import FaceReconError

    formats = api.output_formats()
    what = () if args.outputs == "none" else tuple(formats) if args.outputs == "all" else \
        tuple(s.strip() for s in args.outputs.split(",") if s.strip())
    bad = set(what) - set(formats)
    if bad:
        print(f"facerecon: unknown outputs {sorted(bad)}; choose from {','.join(formats)}", file=sys.stderr)
        return 2
    if args.method not in api.available_methods():
        raise FaceReconError(f"unknown method '{args.method}'; choose from {', '.join(api.available_methods())}")
    cfg = batch.BatchConfig(args.output, outputs=what, method=args.method, model=args.model, detector=args.detector,
                            device=args.device, photometric=not args.no_photometric, max_faces=args.max_faces,
                            max_side=args.max_side)
    s = batch.run_batch(args.inputs, cfg, engine=args.engine, workers=args.workers,
                        threads=args.threads_per_worker, address=args.address, resume=args.resume,
                        recursive=args.recursive, progress=not args.quiet, limit=args.limit)
    print(f"{s.images_ok} image(s) -> {s.faces} face(s), {s.images_failed} failed, {s.skipped_done} done before; "
          f"{s.faces_per_s:.2f} faces/s; tables: {s.table_faces} face(s), {s.table_failures} failure(s) in "
          f"{args.output}")
    return s.exit_code


__all__ = ["add_parser", "run"]
