"""Reading third-party checkpoints into our networks: one place for what every loader repeats."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn


def strip_dataparallel(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with DataParallel's ``module.`` key prefix removed (keys without it kept)."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_strict(net: nn.Module, path: str | os.PathLike, key: str | None = None) -> nn.Module:
    """torch.load `path` (weights only, CPU), take the nested dict `key` when the checkpoint has
    it, strip DataParallel's prefix and load into `net` strictly (every key matched, else
    RuntimeError). Returns `net` in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get(key, ckpt) if key is not None and isinstance(ckpt, dict) else ckpt
    net.load_state_dict(strip_dataparallel(sd), strict=True)
    return net.eval()
