"""`facerecon train`: train the coefficient regressor (Deep3D's R-Net) on `facerecon preprocess`
folders, with checkpoints, --resume and AFLW2000-3D dev validation (68-point NME, GT boxes)."""

from __future__ import annotations

# cli.main builds this command's arguments (which import torch) only when it is the one run.
NAME = "train"
HELP = "train the coefficient regressor on preprocessed folders"


def add_parser(sub) -> None:
    from ..train import add_arguments

    p = sub.add_parser(NAME, help=HELP,
                       description="Weakly supervised training (landmark + masked photometric + priors, "
                       "Deep3D's recipe). Checkpoints OUT/last.pt every --ckpt-every steps, OUT/best.pt by "
                       "validation NME; logs OUT/metrics.jsonl. --resume continues from OUT/last.pt. "
                       "Data parallel (CPU or GPU): torchrun --nproc_per_node N -m facerecon.train ...")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train import run_from_args

    return run_from_args(args)
