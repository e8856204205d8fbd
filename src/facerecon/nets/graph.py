"""Chebyshev graph convolution (Defferrard et al. 2016) on meshes, in pure PyTorch with torch.sparse.

As in COMA and Lin et al. (CVPR 2020)'s texture decoder/refiner: with the scaled Laplacian L~ of the
mesh graph (`geometry.hierarchy.laplacian`: eigenvalues in [-1, 1]),

    T_0 = x,  T_1 = L~ x,  T_k = 2 L~ T_{k-1} - T_{k-2},   y = sum_{k<K} T_k W_k + b

for x (B, V, C_in) -> y (B, V, C_out). K = 1 is a per-vertex linear map; a filter of order K mixes
vertices up to K-1 edges apart. `sparse_tensor` turns a scipy matrix (a Laplacian or a hierarchy's
down/up-sampling matrix) into a torch sparse COO tensor; `sparse_apply` applies one to (B, V, C).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def sparse_tensor(matrix, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """A scipy sparse matrix (or dense numpy array) -> coalesced torch sparse COO tensor (same shape)."""
    import scipy.sparse as sp

    m = sp.coo_matrix(matrix)
    idx = torch.from_numpy(np.stack([m.row, m.col]).astype(np.int64))
    val = torch.from_numpy(np.asarray(m.data, np.float64)).to(dtype)
    return torch.sparse_coo_tensor(idx, val, m.shape, device=device, check_invariants=True).coalesce()


def sparse_apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(M, V) sparse matrix applied per batch item to x (B, V, C) -> (B, M, C)."""
    B, V, C = x.shape
    flat = x.permute(1, 0, 2).reshape(V, B * C)
    y = torch.sparse.mm(matrix, flat)
    return y.reshape(-1, B, C).permute(1, 0, 2)


class ChebConv(nn.Module):
    """Chebyshev spectral graph convolution of order K on a fixed graph.

    Args:
        in_channels, out_channels: C_in, C_out.
        laplacian: (V, V) scaled Laplacian (torch sparse, or scipy / numpy, converted), eigenvalues in
            [-1, 1]; registered as a buffer so it follows `.to(device, dtype)`.
        K: filter order (number of Chebyshev terms), >= 1 (the paper: 6).
        bias: add a learned (C_out,) bias.

    Shape:
        x (B, V, C_in) -> (B, V, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, laplacian, K: int = 6, bias: bool = True):
        super().__init__()
        if K < 1:
            raise ValueError(f"ChebConv order K must be >= 1, got {K}")
        self.K = K
        L = laplacian if isinstance(laplacian, torch.Tensor) else sparse_tensor(laplacian)
        if not L.is_sparse:
            L = L.to_sparse()
        self.register_buffer("laplacian", L.coalesce())
        self.weight = nn.Parameter(torch.empty(K, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(in_channels * K)  # keeps the output scale of a K-term sum like a linear layer's
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.laplacian.to(x.dtype)
        tx0 = x
        out = tx0 @ self.weight[0]
        if self.K > 1:
            tx1 = sparse_apply(L, x)
            out = out + tx1 @ self.weight[1]
            for k in range(2, self.K):
                tx2 = 2.0 * sparse_apply(L, tx1) - tx0
                out = out + tx2 @ self.weight[k]
                tx0, tx1 = tx1, tx2
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[2]}, K={self.K}, V={self.laplacian.shape[0]}"


class Resample(nn.Module):
    """Fixed sparse down- or up-sampling between hierarchy levels: (B, V_in, C) -> (B, V_out, C)."""

    def __init__(self, matrix):
        super().__init__()
        M = matrix if isinstance(matrix, torch.Tensor) else sparse_tensor(matrix)
        self.register_buffer("matrix", M.coalesce())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_apply(self.matrix.to(x.dtype), x)


__all__ = ["ChebConv", "Resample", "sparse_apply", "sparse_tensor"]
