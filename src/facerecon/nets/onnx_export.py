"""ONNX export of facerecon networks (needs the ``onnx`` extra: ``pip install "facerecon[onnx]"``).

The file is written to a temporary name beside the target and renamed into place, so a crash
mid-export never leaves a truncated model that a later run would try to load.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn


def export_onnx(module: nn.Module, example_input: torch.Tensor, path: str | os.PathLike,
                dynamic_batch: bool = True, opset: int = 17, input_name: str = "image",
                output_name: str = "output") -> Path:
    """Export `module` (put in eval mode) traced on `example_input` (e.g. (1, 3, 224, 224)).

    dynamic_batch: the batch axis of input and output is symbolic, so any batch size runs.
    Uses the TorchScript exporter (``dynamo=False``): it needs only ``onnx``, is deterministic and
    handles every network here. Returns the written path.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with the extra's name)
    except ImportError:
        raise ImportError('ONNX export needs the onnx extra: pip install "facerecon[onnx]"') from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example_input,), tmp, input_names=[input_name],
                              output_names=[output_name], dynamic_axes=axes, opset_version=opset,
                              dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        module.train(was_training)
    return path
