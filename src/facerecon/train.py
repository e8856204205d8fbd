"""Training entry point: the coefficient regressor (Deep3D's R-Net, weakly supervised) on
`facerecon preprocess` folders, with checkpoints, resume and AFLW2000-3D validation.

    from facerecon.train import TrainConfig, train_regressor
    train_regressor(TrainConfig(data=["prep/"], out="runs/r1"), val_root="aflw2000-3d-dev")

`facerecon train ...` and `python -m facerecon.train ...` are the command line over this. Data
parallel: `torchrun --nproc_per_node N -m facerecon.train ...` (CPU: gloo, GPU: nccl) splits each
global batch over the N processes and computes the single-process step (see regress/distributed.py);
rank 0 logs, validates and checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .eval.validation import AflwLm68Validator, AflwValidator, EngineValidator, Validators
from .models import load_model
from .regress.predict import export_checkpoint
from .regress.train import TrainConfig, train


def default_val_root() -> str | None:
    """$FACERECON_DATA/aflw2000-3d-dev, or None."""
    env = os.environ.get("FACERECON_DATA")
    return os.path.join(env, "aflw2000-3d-dev") if env else None


VAL_SETS = ("aflw2000-dev", "aflw-lm68-test")


def default_lm68_root() -> str | None:
    """$FACERECON_DATA/aflw-lm68, or None."""
    env = os.environ.get("FACERECON_DATA")
    return os.path.join(env, "aflw-lm68") if env else None


def train_regressor(cfg: TrainConfig, resume: bool = False, val_root: str | None = None,
                    val_limit: int | None = None, max_minutes: float | None = None,
                    export: str | os.PathLike | None = None, val_set: str = "aflw2000-dev",
                    engine_val: bool = True) -> dict:
    """Train; returns {'step', 'out', 'last_logs', 'best_nme', 'validated', 'exported'}.

    val_root: the validation folder, every `cfg.val_every` steps (None: no validation): AFLW2000-3D
    (`val_set` "aflw2000-dev") or aflw-lm68 ("aflw-lm68-test": its MERL-RAV test split, held out of
    training; `eval.validation.AflwLm68Validator`); its 'nme' picks best.pt. engine_val: with engine
    folders (cfg.engine), also score their 'val' split (`EngineValidator`, logged as val_engine_*).
    export: after training, write inference weights (from best.pt, else last.pt) to this path."""
    if val_set not in VAL_SETS:
        raise ValueError(f"val_set must be one of {VAL_SETS}, got '{val_set}'")
    validate = None
    if cfg.val_every and val_root and int(os.environ.get("RANK", "0")) == 0:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        model = load_model(cfg.model)
        if val_set == "aflw-lm68-test":
            validate = AflwLm68Validator(val_root, Path(cfg.out) / "val_lm68_test.npz", model, "test", val_limit)
        else:
            validate = AflwValidator(val_root, Path(cfg.out) / "val_crops.npz", model, val_limit)
        if cfg.engine and engine_val:
            try:
                validate = Validators(validate, engine=EngineValidator(cfg.engine, model, "val"))
            except ValueError:  # a build without a val split: the primary validation alone
                pass
    res = train(cfg, resume=resume, validate=validate,
                max_seconds=None if max_minutes is None else max_minutes * 60)
    res["validated"] = validate is not None
    res["exported"] = None
    if export:
        src = Path(cfg.out) / ("best.pt" if (Path(cfg.out) / "best.pt").is_file() else "last.pt")
        res["exported"] = (export_checkpoint(src, export), src.name)
    return res


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The training options (shared by `facerecon train` and `python -m facerecon.train`)."""
    d = TrainConfig()
    p.add_argument("--data", nargs="*", default=[], help="preprocessed folder(s)")
    p.add_argument("--engine", nargs="+", default=[],
                   help="data-engine folder(s) (`facerecon dataset build`; their 'train' split) beside --data, "
                        "with direct 3-D supervision (--w-vertex, --w-param)")
    p.add_argument("--engine-photo-weight", type=float, default=d.engine_photo_weight,
                   help="photometric loss weight of engine items (0 = off)")
    p.add_argument("--w-vertex", type=float, default=None,
                   help="weight of the robust vertex loss on engine items (crop px / mm); default 1 with --engine")
    p.add_argument("--vertex-delta", type=float, default=d.vertex_delta,
                   help="pseudo-Huber scale of the vertex loss, px (quadratic below, L1 above)")
    p.add_argument("--w-param", type=float, default=d.w_param,
                   help="weight of the identity/expression parameter loss on engine items (0 = off)")
    p.add_argument("--photo-weights", type=float, nargs="+", default=None,
                   help="photometric weight per --data folder (0 = landmarks only); default 1 each")
    p.add_argument("--backbone", default=d.backbone,
                   help="mobilenet_v1_3ddfa (default; 3DDFA_V2 face-trained init), mobilenet_v3_small, "
                   "resnet18, resnet50, ...")
    p.add_argument("--no-pretrained", action="store_true", help="mobilenet_v1_3ddfa: random init")
    p.add_argument("--model", default=d.model, help="morphable model (ict|bfm)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch,
                   help="global batch (torchrun: split over the processes, which must divide it)")
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr} (regress), 1e-4 (prnet, the paper's)")
    p.add_argument("--lr-backbone", type=float, default=None)
    p.add_argument("--out", default=None, help=f"run folder (checkpoints, logs); default {d.out} or runs/prnet")
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
    p.add_argument("--prdl-weight", type=float, default=d.w_prdl,
                   help="3DDFA_V3's part re-projection distance loss against the face parser's part maps "
                        "(cached per item in DATA/parts/); 0 = off")
    p.add_argument("--render-size", type=int, default=d.render_size)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--val-every", type=int, default=d.val_every, help="0 = no validation")
    p.add_argument("--val-set", choices=VAL_SETS, default="aflw2000-dev",
                   help="validation: AFLW2000-3D dev, or aflw-lm68's MERL-RAV test split (held out of training; "
                        "NME on visible points, also without the jaw)")
    p.add_argument("--val-root", default=None,
                   help="the validation folder (default $FACERECON_DATA/aflw2000-3d-dev or $FACERECON_DATA/aflw-lm68)")
    p.add_argument("--no-engine-val", action="store_true", help="do not score the engine folders' val split")
    p.add_argument("--val-limit", type=int, default=None, help="validate on the first N images only")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per process (default: all cores, split between torchrun's processes)")
    p.add_argument("--seed", type=int, default=d.seed, help="data order, augmentation and initialisation")
    p.add_argument("--export", default=None, help="after training, write inference weights (best.pt) here")
    g = p.add_argument_group("PRNet position-map head (--head prnet; prnet/train.py)")
    g.add_argument("--head", choices=["regress", "prnet"], default="regress",
                   help="regress: the coefficient regressor on --data (default); prnet: PRNet's UV position-map "
                   "network on data-engine folders (--engine, the same option as the regressor's)")
    g.add_argument("--encoder", choices=["mobilenetv2", "resnet18", "baseline", "mobilenetv1_3ddfa"],
                   default="mobilenetv2",
                   help="PRNet encoder (the decoder is PRNet's in every case); mobilenetv1_3ddfa: 3DDFA_V2's face-trained MobileNetV1 (not the extension's)")
    g.add_argument("--map-size", type=int, default=128, help="input and position-map resolution (256: the paper's)")
    g.add_argument("--decoder-width", type=float, default=1.0, help="decoder channel multiplier (1 = PRNet's)")
    g.add_argument("--decoder-head", type=int, default=3,
                   help="channels of the decoder's last two hidden layers (PRNet: 3; wider learns faster)")
    g.add_argument("--lr-half-epochs", type=float, default=5.0, help="exponential decay: lr halves every N epochs")
    g.add_argument("--val-samples", type=int, default=120, help="engine val samples per validation")
    g.add_argument("--ckpt-minutes", type=float, default=3.0, help="OUT/last.pt every N minutes")


def run_from_args(args: argparse.Namespace) -> int:
    """Train with parsed `add_arguments` options; prints the outcome on rank 0."""
    from .api import set_threads
    from .threads import split_cores

    rank = int(os.environ.get("RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if args.threads:
        set_threads(args.threads)
    elif local_world > 1:
        # torchrun's N processes on one machine share its cores (torchrun's own default is 1 thread).
        set_threads(split_cores(local_world)[1])
    if args.head == "prnet":
        return run_prnet(args)
    d = TrainConfig()
    args.lr = d.lr if args.lr is None else args.lr
    args.out = d.out if args.out is None else args.out
    cfg = TrainConfig(
        data=list(args.data or []), photo_weights=args.photo_weights, out=args.out, backbone=args.backbone,
        model=args.model, pretrained=not args.no_pretrained, steps=args.steps, batch=args.batch, lr=args.lr,
        lr_backbone=args.lr_backbone, pseudo_labels=args.pseudo_labels, w_photo=args.w_photo,
        landmarks=args.landmarks, init=args.init, w_landmark=args.w_landmark,
        landmark_robust=args.landmark_robust or None, w_identity=args.w_identity, w_prdl=args.prdl_weight,
        render_size=args.render_size,
        augment=not args.no_augment, workers=args.workers, ckpt_every=args.ckpt_every,
        val_every=args.val_every, device=args.device, seed=args.seed, engine=list(args.engine),
        engine_photo_weight=args.engine_photo_weight,
        w_vertex=(1.0 if args.engine else 0.0) if args.w_vertex is None else args.w_vertex,
        vertex_delta=args.vertex_delta, w_param=args.w_param)
    if not cfg.data and not cfg.engine:
        from .errors import FaceReconError

        raise FaceReconError("no training data: give --data (preprocessed folders) and/or --engine (engine folders)")
    root = args.val_root or (default_lm68_root() if args.val_set == "aflw-lm68-test" else default_val_root())
    if cfg.val_every and not root and rank == 0:
        print("(no validation: give --val-root or set FACERECON_DATA)")
    res = train_regressor(cfg, resume=args.resume, val_root=root, val_limit=args.val_limit,
                          max_minutes=args.max_minutes, export=args.export if rank == 0 else None,
                          val_set=args.val_set, engine_val=not args.no_engine_val)
    if rank == 0:
        print(f"stopped at step {res['step']}; best validation NME {res['best_nme']:.2f} %; run folder {res['out']}")
        if res["exported"]:
            path, name = res["exported"]
            print(f"weights: {path} (from {name})")
    return 0


def run_prnet(args: argparse.Namespace) -> int:
    """`facerecon train --head prnet`: PRNet's position-map network on data-engine folders."""
    from .prnet.train import PrnetTrainConfig, export_prnet, train_prnet

    if not args.engine:
        from .errors import FaceReconError

        raise FaceReconError("--head prnet needs --engine DIR... (`facerecon dataset build` folders)")
    cfg = PrnetTrainConfig(
        engine=list(args.engine), out=args.out or "runs/prnet", encoder=args.encoder, width=args.decoder_width,
        head=args.decoder_head,
        size=args.map_size, model=args.model, steps=args.steps, batch=args.batch,
        lr=1e-4 if args.lr is None else args.lr, lr_half_epochs=args.lr_half_epochs, augment=not args.no_augment,
        workers=args.workers, ckpt_minutes=args.ckpt_minutes, val_every=args.val_every,
        val_samples=args.val_samples, seed=args.seed)
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    res = train_prnet(cfg, resume=args.resume, max_minutes=args.max_minutes, device=device)
    v = res["last_val"]
    print(f"stopped at step {res['step']}; best val dense error {res['best']:.2f} mm"
          + (f"; last val {v['dense_mm']:.2f} mm, NME68 {v['nme68']:.2f} %" if v else "") + f"; run folder {res['out']}")
    if args.export:
        src = Path(cfg.out) / ("best.pt" if (Path(cfg.out) / "best.pt").is_file() else "last.pt")
        print(f"weights: {export_prnet(src, args.export)} (from {src.name})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m facerecon.train` (what torchrun launches): the `facerecon train` options."""
    from . import log
    from .errors import FaceReconError

    p = argparse.ArgumentParser(prog="python -m facerecon.train", description="Train the coefficient regressor.")
    add_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    args = p.parse_args(argv)
    log.configure(-1 if args.quiet else 0)
    try:
        return run_from_args(args)
    except FaceReconError as e:
        print(f"facerecon train: error: {e}", file=sys.stderr)
        return 2


__all__ = [
    "VAL_SETS",
    "AflwLm68Validator",
    "AflwValidator",
    "EngineValidator",
    "TrainConfig",
    "add_arguments",
    "default_lm68_root",
    "default_val_root",
    "main",
    "run_from_args",
    "run_prnet",
    "train",
    "train_regressor",
]

if __name__ == "__main__":
    sys.exit(main())
