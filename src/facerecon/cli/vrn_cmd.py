"""`facerecon vrn train --engine DIR... --out RUN` / `facerecon vrn export RUN/best.pt -o FILE`: VRN's
volumetric head (docs/vrn.md). Its own command beside `facerecon train` (the coefficient regressor),
whose options and defaults stay unchanged."""

from __future__ import annotations

# cli.main builds this command's arguments (whose defaults import torch) only when it is the one run.
NAME = "vrn"
HELP = "train / export VRN (direct volumetric regression) on data-engine folders"


def add_parser(sub) -> None:
    from ..vrn.nets import VRNConfig
    from ..vrn.train import VRNTrainConfig

    d, n = VRNTrainConfig(), VRNConfig()
    p = sub.add_parser(NAME, help=HELP,
                       description="VRN-unguided (Jackson et al. 2017): stacked hourglasses that map the face crop "
                       "to an occupancy volume; reconstruct with `facerecon reconstruct --method vrn`.")
    vsub = p.add_subparsers(dest="vrn_command", metavar="ACTION")
    vsub.required = True
    t = vsub.add_parser("train", help="train on `facerecon dataset build` folders (per-voxel cross-entropy, RMSProp)",
                        description="Targets are voxelised from each sample's mesh on the fly (augmentation moves "
                        "image and mesh together). OUT/last.pt every --ckpt-every steps, OUT/best.pt by validation "
                        "IoU on the engine's 'val' split, OUT/metrics.jsonl; --resume continues from OUT/last.pt.")
    t.add_argument("--engine", nargs="+", required=True, help="data-engine folder(s)")
    t.add_argument("--out", default=d.out, help="run folder")
    t.add_argument("--full", action="store_true", help="the paper's size: 192² input, 200 slices, 256 features, "
                   "2 hourglasses (the other network options are ignored)")
    t.add_argument("--size", type=int, default=n.size, help="input = volume width (px)")
    t.add_argument("--slices", type=int, default=n.slices, help="depth slices (output channels)")
    t.add_argument("--features", type=int, default=n.features)
    t.add_argument("--stacks", type=int, default=n.stacks, help="hourglasses")
    t.add_argument("--depth", type=int, default=n.depth, help="down-samplings per hourglass")
    t.add_argument("--steps", type=int, default=d.steps)
    t.add_argument("--batch", type=int, default=d.batch)
    t.add_argument("--lr", type=float, default=d.lr, help="RMSProp learning rate")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    t.add_argument("--val-every", type=int, default=d.val_every, help="0 = no validation")
    t.add_argument("--val-limit", type=int, default=d.val_limit, help="validation views (IoU)")
    t.add_argument("--val-surface", type=int, default=d.val_surface, help="of which the surface error (mm)")
    t.add_argument("--workers", type=int, default=d.workers, help="data-loading processes")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--export", default=None, help="after training, write float16 inference weights here")
    t.set_defaults(func=run_train)
    e = vsub.add_parser("export", help="float16 inference weights from a training checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("-o", "--output", required=True)
    e.set_defaults(func=run_export)


def run_train(args) -> int:
    from ..api import set_threads
    from ..vrn import VRNConfig, VRNTrainConfig, export_weights, train_vrn

    if args.threads:
        set_threads(args.threads)
    net = VRNConfig.full() if args.full else VRNConfig(args.size, args.slices, args.features, args.stacks, args.depth)
    cfg = VRNTrainConfig(engine=list(args.engine), out=args.out, net=net, steps=args.steps, batch=args.batch,
                         lr=args.lr, augment=not args.no_augment, ckpt_every=args.ckpt_every,
                         val_every=args.val_every, val_limit=args.val_limit, val_surface=args.val_surface,
                         workers=args.workers, seed=args.seed)
    res = train_vrn(cfg, resume=args.resume, max_seconds=None if args.max_minutes is None else args.max_minutes * 60)
    val = res["val"] or {}
    print(f"stopped at step {res['step']}; loss {res['loss']:.4f}; last validation IoU {val.get('iou', float('nan')):.3f}, "
          f"surface {val.get('surface_mm', float('nan')):.2f} mm; run folder {res['out']}")
    if args.export:
        from pathlib import Path

        src = Path(args.out) / ("best.pt" if (Path(args.out) / "best.pt").is_file() else "last.pt")
        print(f"weights: {export_weights(src, args.export)} (from {src.name})")
    return 0


def run_export(args) -> int:
    from ..vrn import export_weights

    print(export_weights(args.checkpoint, args.output))
    return 0
