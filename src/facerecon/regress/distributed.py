"""Data-parallel training that computes what one process would (CPU/gloo or CUDA/nccl).

With `W` processes and a global batch `B`, each rank takes a contiguous `B / W` slice of the same
global batch (`GlobalBatchSampler`), batch-norm statistics are reduced over all ranks
(`GlobalBatchNorm`: PyTorch's `SyncBatchNorm` runs on GPUs only) and ratio losses are normalised
by global sums (`global_sum`). DDP averages the ranks' gradients, so a step equals the
single-process step on the same `B` items up to floating-point summation order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device: torch.device) -> tuple[int, int, int]:
    """(rank, world, local_rank); initialises the process group when launched by torchrun
    (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of a (detached) tensor over all ranks; `x` itself in one process."""
    n = world()[1]
    if n == 1:
        return x
    import torch.distributed as dist

    y = x.detach().clone()
    dist.all_reduce(y)
    return y


def any_rank(flag: bool) -> bool:
    """True when `flag` is true on any rank (every rank must call it at the same point)."""
    n = world()[1]
    if n == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_ranks x; each rank's y feeds its own loss, so dL/dx = Σ_ranks dL_r/dy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        g = g.clone()
        dist.all_reduce(g)
        return g


def _all_reduce_grad(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (torch.distributed.nn's version is deprecated)."""
    return _SumOverRanks.apply(x)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all ranks).

    Input (N, C, H, W) per rank, any N (the count is reduced too). Two passes (mean, then the
    centred second moment) keep it as accurate as the single-process kernel. Outside training, or
    in one process, it is exactly `nn.BatchNorm2d`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(x)
        C = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.tensor([x.numel() / C], dtype=x.dtype, device=x.device)
        n = global_sum(count)
        mean = _all_reduce_grad(x.sum(dims)) / n
        shape = [1, C] + [1] * (x.dim() - 2)
        xc = x - mean.view(shape)
        var = _all_reduce_grad((xc * xc).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every `nn.BatchNorm2d` in `module` (in place) for a `GlobalBatchNorm` with the same
    settings, parameters and buffers; returns `module`. Names in the state dict do not change."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            g = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                child.track_running_stats, device=child.weight.device if child.affine else None)
            g.load_state_dict(child.state_dict())
            g.train(child.training)
            setattr(module, name, g)
        else:
            convert_batchnorm(child)
    return module


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset keys `(index, epoch)`; rank r of W takes slice r of each global batch.

    Epoch e's order is a permutation drawn from `seed + e`, cut into `len // batch` global batches
    (the incomplete tail is dropped; a dataset smaller than one batch gives one short batch).
    `start` skips that many batches of the first epoch, so a resumed run sees exactly the batches
    an uninterrupted one would. Iterates forever (epoch after epoch): the caller counts steps.
    """

    def __init__(self, n: int, batch: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0):
        if batch % world:
            raise ValueError(f"the global batch ({batch}) must be a multiple of the process count ({world})")
        if n <= 0:
            raise ValueError("empty dataset")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.per_epoch = max(n // batch, 1)
        self.start = start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, k = divmod(self.start, self.per_epoch)
        per_rank = min(self.batch, self.n) // self.world
        while True:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
            while k < self.per_epoch:
                a = k * self.batch + self.rank * per_rank
                yield [(i, epoch) for i in order[a:a + per_rank]]
                k += 1
            epoch, k = epoch + 1, 0

    def __len__(self) -> int:  # one epoch (the iterator itself does not end)
        return self.per_epoch


__all__ = ["GlobalBatchNorm", "GlobalBatchSampler", "any_rank", "barrier", "convert_batchnorm", "global_sum",
           "setup", "world"]
