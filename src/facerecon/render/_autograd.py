"""Fused CPU kernels (numba) for the two hot differentiable steps, with hand-written backward.

`barycentrics` and `blend` each replace a few dozen small torch ops (forward and backward) over the
covered pixels by one loop. They are used for CPU float32/float64 tensors when numba is present;
`rasterize`/`interpolate` fall back to plain torch otherwise (same maths, autograd-derived
gradients). First-order gradients only (no double backward).

Maths (per covered pixel p, triangle corners k = 0, 1, 2 at screen (x_k, y_k, z_k)):
    e_k = edge function of the edge opposite corner k at p,  A = Σ_k e_k (twice the signed area)
    r_k = e_k / z_k,  R = Σ_k r_k,  bary_k = r_k / R,  depth = A / R
"""

from __future__ import annotations

import numpy as np
import torch

from facerecon.jit import HAVE_NUMBA, njit, prange


@njit(cache=True, inline="always")
def _corners_and_edges(tri, n, X, Y):
    """Triangle n's corners (x, y, z) and its three edge functions at pixel (X, Y), as scalars."""
    x0, y0, z0 = tri[n, 0, 0], tri[n, 0, 1], tri[n, 0, 2]
    x1, y1, z1 = tri[n, 1, 0], tri[n, 1, 1], tri[n, 1, 2]
    x2, y2, z2 = tri[n, 2, 0], tri[n, 2, 1], tri[n, 2, 2]
    e0 = (x2 - x1) * (Y - y1) - (y2 - y1) * (X - x1)
    e1 = (x0 - x2) * (Y - y2) - (y0 - y2) * (X - x2)
    e2 = (x1 - x0) * (Y - y0) - (y1 - y0) * (X - x0)
    return x0, y0, z0, x1, y1, z1, x2, y2, z2, e0, e1, e2


@njit(cache=True, parallel=True)
def _bary_fwd(tri, px, py, bary, depth):
    for n in prange(tri.shape[0]):
        X, Y = px[n], py[n]
        x0, y0, z0, x1, y1, z1, x2, y2, z2, e0, e1, e2 = _corners_and_edges(tri, n, X, Y)
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        r0, r1, r2 = e0 / z0, e1 / z1, e2 / z2
        R = r0 + r1 + r2
        bary[n, 0] = r0 / R
        bary[n, 1] = r1 / R
        bary[n, 2] = r2 / R
        depth[n] = area / R


@njit(cache=True, parallel=True)
def _bary_bwd(tri, px, py, bary, depth, gb, gd, gtri):
    """gtri[n, k, :] = dL/d(x_k, y_k, z_k) for pixel n."""
    for n in prange(tri.shape[0]):
        X, Y = px[n], py[n]
        x0, y0, z0, x1, y1, z1, x2, y2, z2, e0, e1, e2 = _corners_and_edges(tri, n, X, Y)
        R = e0 / z0 + e1 / z1 + e2 / z2
        b0, b1, b2 = bary[n, 0], bary[n, 1], bary[n, 2]
        dot = gb[n, 0] * b0 + gb[n, 1] * b1 + gb[n, 2] * b2
        common = -gd[n] * depth[n] / R
        dr0 = (gb[n, 0] - dot) / R + common
        dr1 = (gb[n, 1] - dot) / R + common
        dr2 = (gb[n, 2] - dot) / R + common
        dA = gd[n] / R
        de0, de1, de2 = dr0 / z0, dr1 / z1, dr2 / z2
        gtri[n, 0, 2] = -de0 * e0 / z0
        gtri[n, 1, 2] = -de1 * e1 / z1
        gtri[n, 2, 2] = -de2 * e2 / z2
        # Edge (a -> b) at p: d/dxa = yb - Y, d/dxb = Y - ya, d/dya = X - xb, d/dyb = xa - X.
        # e0: 1 -> 2, e1: 2 -> 0, e2: 0 -> 1; A is edge 0 -> 1 evaluated at corner 2.
        gtri[n, 0, 0] = de1 * (Y - y2) + de2 * (y1 - Y) + dA * (y1 - y2)
        gtri[n, 1, 0] = de0 * (y2 - Y) + de2 * (Y - y0) + dA * (y2 - y0)
        gtri[n, 2, 0] = de0 * (Y - y1) + de1 * (y0 - Y) + dA * (y0 - y1)
        gtri[n, 0, 1] = de1 * (x2 - X) + de2 * (X - x1) + dA * (x2 - x1)
        gtri[n, 1, 1] = de0 * (X - x2) + de2 * (x0 - X) + dA * (x0 - x2)
        gtri[n, 2, 1] = de0 * (x1 - X) + de1 * (X - x0) + dA * (x1 - x0)


@njit(cache=True)
def _scatter_rows(dst, idx, src):
    """dst[idx[i]] += src[i] (sequential: indices repeat)."""
    C = src.shape[1]
    for i in range(idx.shape[0]):
        j = idx[i]
        for c in range(C):
            dst[j, c] += src[i, c]


@njit(cache=True, parallel=True)
def _blend_fwd(table, idx, bary, out):
    C = table.shape[1]
    for n in prange(bary.shape[0]):
        i0, i1, i2 = idx[3 * n], idx[3 * n + 1], idx[3 * n + 2]
        b0, b1, b2 = bary[n, 0], bary[n, 1], bary[n, 2]
        for c in range(C):
            out[n, c] = b0 * table[i0, c] + b1 * table[i1, c] + b2 * table[i2, c]


@njit(cache=True, parallel=True)
def _blend_bwd_bary(table, idx, g, gbary):
    C = table.shape[1]
    for n in prange(g.shape[0]):
        for k in range(3):
            i = idx[3 * n + k]
            s = 0.0
            for c in range(C):
                s += table[i, c] * g[n, c]
            gbary[n, k] = s


@njit(cache=True)
def _blend_bwd_table(idx, bary, g, gtable):
    C = g.shape[1]
    for n in range(g.shape[0]):
        for k in range(3):
            i = idx[3 * n + k]
            b = bary[n, k]
            for c in range(C):
                gtable[i, c] += b * g[n, c]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class Barycentrics(torch.autograd.Function):
    """(flat vertices (B·V, 3), corner index (3N,), px, py (N,)) -> bary (N, 3), depth (N,)."""

    @staticmethod
    def forward(ctx, v_flat, corner, px, py):
        tri = _np(v_flat.index_select(0, corner)).reshape(-1, 3, 3)
        N = tri.shape[0]
        bary = np.empty((N, 3), tri.dtype)
        depth = np.empty(N, tri.dtype)
        _bary_fwd(tri, _np(px), _np(py), bary, depth)
        bary_t, depth_t = torch.from_numpy(bary), torch.from_numpy(depth)
        ctx.save_for_backward(v_flat, corner, px, py, bary_t, depth_t)
        return bary_t, depth_t

    @staticmethod
    def backward(ctx, gb, gd):
        v_flat, corner, px, py, bary, depth = ctx.saved_tensors
        tri = _np(v_flat.index_select(0, corner)).reshape(-1, 3, 3)
        gb = torch.zeros_like(bary) if gb is None else gb
        gd = torch.zeros_like(depth) if gd is None else gd
        gtri = np.empty_like(tri)
        _bary_bwd(tri, _np(px), _np(py), _np(bary), _np(depth), _np(gb.to(bary.dtype)), _np(gd.to(bary.dtype)),
                  gtri)
        gv = np.zeros(tuple(v_flat.shape), tri.dtype)
        _scatter_rows(gv, _np(corner), gtri.reshape(-1, 3))
        return torch.from_numpy(gv), None, None, None


class Blend(torch.autograd.Function):
    """(table (M, C), corner index (3N,), bary (N, 3)) -> Σ_k bary_k · table[corner_k], (N, C)."""

    @staticmethod
    def forward(ctx, table, idx, bary):
        t = _np(table)
        b = _np(bary.to(table.dtype))
        out = np.empty((b.shape[0], t.shape[1]), t.dtype)
        _blend_fwd(t, _np(idx), b, out)
        ctx.save_for_backward(table, idx, bary)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, g):
        table, idx, bary = ctx.saved_tensors
        gn = _np(g.to(table.dtype))
        gt = gbar = None
        if ctx.needs_input_grad[0]:
            gtab = np.zeros(tuple(table.shape), gn.dtype)
            _blend_bwd_table(_np(idx), _np(bary.to(table.dtype)), gn, gtab)
            gt = torch.from_numpy(gtab)
        if ctx.needs_input_grad[2]:
            gb = np.empty((gn.shape[0], 3), gn.dtype)
            _blend_bwd_bary(_np(table), _np(idx), gn, gb)
            gbar = torch.from_numpy(gb).to(bary.dtype)
        return gt, None, gbar


def use_kernels(*tensors: torch.Tensor) -> bool:
    """Fused kernels apply to CPU float32/float64 tensors of one dtype when numba is importable."""
    return (HAVE_NUMBA and all(t.device.type == "cpu" for t in tensors)
            and len({t.dtype for t in tensors}) == 1 and tensors[0].dtype in (torch.float32, torch.float64))
