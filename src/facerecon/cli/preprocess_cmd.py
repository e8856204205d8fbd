"""`facerecon preprocess IMAGES... -o OUT`: detect, align (224² Deep3D crop) and mask photos into a
training dataset folder (crops/, masks/, items/*.npz, manifest.jsonl). Resumable."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("preprocess", help="build a training dataset: aligned crops, landmarks, masks",
                       description="For each image: detect the largest face (default pipeline), cut the aligned "
                       "224x224 crop, store 68/5 landmarks in crop pixels and a face/skin mask. Items already "
                       "in OUT/manifest.jsonl are skipped, so an interrupted run resumes.")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("-o", "--output", required=True, help="dataset folder (created)")
    p.add_argument("--model", default="ict", help="morphable model whose mean face sets the alignment (ict|bfm)")
    p.add_argument("--detector", default="default", help="detector backend (default: the default pipeline)")
    p.add_argument("--gt-landmarks", default=None,
                   help="npz with names, lm68 (N,68,2), vis68 (N,68) in image pixels (e.g. aflw-lm68 labels.npz)")
    p.add_argument("--retry-failed", action="store_true", help="re-run items the manifest lists as failed")
    p.add_argument("--limit", type=int, default=None, help="process at most N new items")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..preprocess import preprocess

    s = preprocess(args.inputs, args.output, detector=args.detector, model=args.model,
                   retry_failed=args.retry_failed, gt_landmarks=args.gt_landmarks, limit=args.limit,
                   progress=not args.quiet)
    for src, err in s.errors[:20]:
        print(f"failed: {src}: {err}", file=sys.stderr)
    if len(s.errors) > 20:
        print(f"... and {len(s.errors) - 20} more failures (see manifest.jsonl)", file=sys.stderr)
    print(f"{s.out_dir}: {s.ok} ok, {s.failed} failed, {s.skipped} skipped (already done) in {s.seconds:.1f} s")
    return 0
