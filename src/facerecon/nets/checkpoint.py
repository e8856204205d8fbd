"""Reading third-party checkpoints into our networks: one place for what every loader repeats."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

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


def find_weights(path, tried, kind: str, hint: str = "") -> Path:
    """The weights file to read: `path`, or (None) the first existing of `tried`. AssetError naming
    `kind` (e.g. "PRNet") and every path searched when there is none; `hint` ends that message."""
    from ..errors import AssetError

    if path is None:
        tried = list(tried)
        path = next((p for p in tried if Path(p).is_file()), None)
        if path is None:
            raise AssetError(f"no {kind} weights found; searched: " + ", ".join(map(str, tried)) + hint)
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{kind} weights not found: {path}")
    return path


def write_weights(path, key: str, config, net: nn.Module, meta: dict | None = None, half: bool = True) -> Path:
    """The file `read_weights` reads: {key: config, "model": `net`'s state dict (floating tensors as
    float16 when `half`), "meta": meta}, written atomically (a temp file renamed onto `path`)."""
    from ..io.atomic import atomic_path

    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
          for k, v in net.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({key: config, "model": sd, "meta": dict(meta or {})}, tmp)
    return path


def read_weights(path: Path, kind: str, key: str, checkpoints: bool = False) -> dict:
    """One of our weights files, {key: network config, "model": state dict, "meta": ...}, read on
    the CPU. checkpoints: a training checkpoint (configs and an RNG state pickled beside them) may be
    read too, when the weights-only read fails. AssetError when unreadable or without key/"model"."""
    from ..errors import AssetError

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        if not checkpoints:
            raise AssetError(f"{path}: cannot read {kind} weights ({e})") from None
        try:
            ck = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001
            raise AssetError(f"{path}: cannot read {kind} weights ({e})") from None
    if not isinstance(ck, dict) or key not in ck or "model" not in ck:
        raise AssetError(f"{path}: not a facerecon {kind} file (needs '{key}' and 'model')")
    return ck


def load_state(net: nn.Module, ck: dict, path, config) -> nn.Module:
    """`ck["model"]` (stored float16 or float32) into `net` strictly, as float32; AssetError naming
    `path` and `config` when the keys or shapes do not match."""
    from ..errors import AssetError

    sd = {k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise AssetError(f"{path}: weights do not match {config}: {e}") from None
    return net
