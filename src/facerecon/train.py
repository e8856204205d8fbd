"""Training entry point: the coefficient regressor (Deep3D's R-Net, weakly supervised) on
`facerecon preprocess` folders, with checkpoints, resume and AFLW2000-3D validation.

    from facerecon.train import TrainConfig, train_regressor
    train_regressor(TrainConfig(data=["prep/"], out="runs/r1"), val_root="aflw2000-3d-dev")

`facerecon train ...` is the command line over this; under torchrun (`torchrun --nproc_per_node N
-m facerecon.cli.main train ...`) each process shards the data and rank 0 logs and checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path

from .eval.validation import AflwValidator
from .models import load_model
from .regress.predict import export_checkpoint
from .regress.train import TrainConfig, train


def default_val_root() -> str | None:
    """$FACERECON_DATA/aflw2000-3d-dev, or None."""
    env = os.environ.get("FACERECON_DATA")
    return os.path.join(env, "aflw2000-3d-dev") if env else None


def train_regressor(cfg: TrainConfig, resume: bool = False, val_root: str | None = None,
                    val_limit: int | None = None, max_minutes: float | None = None,
                    export: str | os.PathLike | None = None) -> dict:
    """Train; returns {'step', 'out', 'last_logs', 'best_nme', 'validated', 'exported'}.

    val_root: AFLW2000-3D folder for validation every `cfg.val_every` steps (None: no validation);
    export: after training, write inference weights (from best.pt, else last.pt) to this path."""
    validate = None
    if cfg.val_every and val_root and int(os.environ.get("RANK", "0")) == 0:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        validate = AflwValidator(val_root, Path(cfg.out) / "val_crops.npz", load_model(cfg.model), val_limit)
    res = train(cfg, resume=resume, validate=validate,
                max_seconds=None if max_minutes is None else max_minutes * 60)
    res["validated"] = validate is not None
    res["exported"] = None
    if export:
        src = Path(cfg.out) / ("best.pt" if (Path(cfg.out) / "best.pt").is_file() else "last.pt")
        res["exported"] = (export_checkpoint(src, export), src.name)
    return res


__all__ = ["AflwValidator", "TrainConfig", "default_val_root", "train", "train_regressor"]
