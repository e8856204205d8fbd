"""`facerecon train`: train the coefficient regressor (Deep3D's R-Net) on `facerecon preprocess`
folders, with checkpoints, --resume and AFLW2000-3D dev validation (68-point NME, GT boxes)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train the coefficient regressor on preprocessed folders",
                       description="Weakly supervised training (landmark + masked photometric + priors, "
                       "Deep3D's recipe). Checkpoints OUT/last.pt every --ckpt-every steps, OUT/best.pt by "
                       "validation NME; logs OUT/metrics.jsonl. --resume continues from OUT/last.pt. "
                       "Multi-GPU: torchrun --nproc_per_node N -m facerecon.cli.main train ...")
    p.add_argument("--data", nargs="+", required=True, help="preprocessed folder(s)")
    p.add_argument("--photo-weights", type=float, nargs="+", default=None,
                   help="photometric weight per --data folder (0 = landmarks only); default 1 each")
    p.add_argument("--backbone", default=d.backbone,
                   help="mobilenet_v1_3ddfa (default; 3DDFA_V2 face-trained init), mobilenet_v3_small, "
                   "resnet18, resnet50, ...")
    p.add_argument("--no-pretrained", action="store_true", help="mobilenet_v1_3ddfa: random init")
    p.add_argument("--model", default=d.model, help="morphable model (ict|bfm)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-backbone", type=float, default=None)
    p.add_argument("--out", default=d.out, help="run folder (checkpoints, logs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--pseudo-labels", default=None,
                   help="npz with names (N,) and params (N, dim): fitted FaceParams vectors (layout.join)")
    p.add_argument("--landmarks", choices=["gt", "detector"], default=d.landmarks,
                   help="landmark targets: manual labels where present (gt) or the detector's (3D convention)")
    p.add_argument("--init", default=None, help="regressor weights to start from (fine-tuning)")
    p.add_argument("--w-photo", type=float, default=d.w_photo)
    p.add_argument("--w-landmark", type=float, default=d.w_landmark)
    p.add_argument("--landmark-robust", type=float, default=d.landmark_robust,
                   help="soft cap on each landmark's error, crop px (0 = plain squared error)")
    p.add_argument("--w-identity", type=float, default=d.w_identity,
                   help="identity-perceptual loss weight (needs the mobilefacenet asset); 0 = off")
    p.add_argument("--render-size", type=int, default=d.render_size)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--val-every", type=int, default=d.val_every, help="0 = no validation")
    p.add_argument("--val-root", default=None,
                   help="AFLW2000-3D folder for validation (default $FACERECON_DATA/aflw2000-3d-dev)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N images only")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--export", default=None, help="after training, write inference weights (best.pt) here")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import set_threads
    from ..train import TrainConfig, default_val_root, train_regressor

    if args.threads:
        set_threads(args.threads)
    cfg = TrainConfig(
        data=list(args.data), photo_weights=args.photo_weights, out=args.out, backbone=args.backbone,
        model=args.model, pretrained=not args.no_pretrained, steps=args.steps, batch=args.batch, lr=args.lr,
        lr_backbone=args.lr_backbone, pseudo_labels=args.pseudo_labels, w_photo=args.w_photo,
        landmarks=args.landmarks, init=args.init, w_landmark=args.w_landmark,
        landmark_robust=args.landmark_robust or None, w_identity=args.w_identity, render_size=args.render_size,
        augment=not args.no_augment, workers=args.workers, ckpt_every=args.ckpt_every,
        val_every=args.val_every, device=args.device)
    root = args.val_root or default_val_root()
    if cfg.val_every and not root:
        print("(no validation: give --val-root or set FACERECON_DATA)")
    res = train_regressor(cfg, resume=args.resume, val_root=root, val_limit=args.val_limit,
                          max_minutes=args.max_minutes, export=args.export)
    print(f"stopped at step {res['step']}; best validation NME {res['best_nme']:.2f} %; run folder {res['out']}")
    if res["exported"]:
        path, name = res["exported"]
        print(f"weights: {path} (from {name})")
    return 0
