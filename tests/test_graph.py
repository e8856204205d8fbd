"""Mesh hierarchy (quadric edge collapse, barycentric up/down-sampling) and Chebyshev graph convolution."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from facerecon.geometry.hierarchy import (
    _closest_on_triangles,
    barycentric_upsampling,
    build_hierarchy,
    laplacian,
    mesh_edges,
    mesh_hierarchy,
)
from facerecon.geometry.simplify import simplify_keep_vertices
from facerecon.nets.graph import ChebConv, Resample, sparse_tensor


def grid_mesh(n: int = 33, bump: float = 0.3):
    """An n × n open grid over [-1, 1]², gently curved (z = bump·(x² + y²)), CCW triangles."""
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    v = np.stack([x.ravel(), y.ravel(), bump * (x ** 2 + y ** 2).ravel()], 1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, 1:].ravel(), i[1:, :-1].ravel()
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return v, f


def test_simplify_keeps_subset_and_manifold():
    v, f = grid_mesh(25)
    keep, cf = simplify_keep_vertices(v, f, 150)
    assert abs(len(keep) - 150) <= 3
    assert np.all(np.diff(keep) > 0) and keep.max() < len(v)
    assert cf.min() >= 0 and cf.max() < len(keep)
    # Manifold: every edge is used by at most two triangles; no degenerate triangles.
    e = np.sort(np.concatenate([cf[:, [0, 1]], cf[:, [1, 2]], cf[:, [2, 0]]]), 1)
    _, cnt = np.unique(e, axis=0, return_counts=True)
    assert cnt.max() <= 2
    assert np.all((cf[:, 0] != cf[:, 1]) & (cf[:, 1] != cf[:, 2]) & (cf[:, 0] != cf[:, 2]))
    # Orientation kept: the surface's normals still point the way the input's do (+z).
    p = v[keep][cf]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert (n[:, 2] > 0).all()
    # The four corners of the open square are held by the boundary planes.
    corners = [0, 24, 24 * 25, 25 * 25 - 1]
    assert set(corners) <= set(keep.tolist())


def test_closest_point_barycentrics_match_brute_force():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 200, 3))
    p = rng.normal(size=(200, 3)) * 2
    w = _closest_on_triangles(p, a, b, c)
    assert np.allclose(w.sum(1), 1) and (w >= -1e-9).all()
    q = w[:, :1] * a + w[:, 1:2] * b + w[:, 2:] * c
    # brute force over a dense barycentric grid of each triangle
    s = np.linspace(0, 1, 201)
    u, t = np.meshgrid(s, s)
    ok = (u + t) <= 1
    u, t = u[ok], t[ok]
    for i in range(0, 200, 20):
        pts = a[i] + u[:, None] * (b[i] - a[i]) + t[:, None] * (c[i] - a[i])
        best = np.sqrt(((pts - p[i]) ** 2).sum(1).min())
        assert np.linalg.norm(q[i] - p[i]) <= best + 1e-9


def test_hierarchy_sizes_and_sampling():
    v, f = grid_mesh(49)  # 2401 vertices
    H = build_hierarchy(v, f, levels=3, factor=4.0)
    for k, n in enumerate(H.sizes):
        assert abs(n - len(v) / 4 ** k) <= 0.02 * len(v) / 4 ** k + 2, H.sizes
    for k in range(3):
        D, U = H.down[k], H.up[k]
        assert D.shape == (H.sizes[k + 1], H.sizes[k]) and U.shape == (H.sizes[k], H.sizes[k + 1])
        assert np.allclose(np.asarray(U.sum(1)).ravel(), 1.0)
        assert (U.data >= -1e-9).all()
        # Down-sampling selects the kept vertices; up-sampling is exact on them.
        assert np.array_equal(D @ H.vertices[k], H.vertices[k + 1])
        assert np.allclose((U @ D @ H.vertices[k])[H.kept[k]], H.vertices[k][H.kept[k]])
        # Each fine vertex lands on the coarse surface: positions are reproduced to within the
        # surface's sagitta over a coarse triangle (the curvature 0.6 over triangles ~ 0.04·2^k wide).
        err = np.abs(U @ D @ H.vertices[k] - H.vertices[k]).max()
        assert err < 0.02 * 2 ** k, err


def test_flat_mesh_linear_functions_exact():
    v, f = grid_mesh(33, bump=0.0)
    H = build_hierarchy(v, f, levels=2)
    for k in range(2):
        x = H.vertices[k].astype(np.float64)
        lin = 0.3 + x @ np.array([1.5, -2.0, 0.0])  # barycentric interpolation reproduces linear functions
        assert np.abs(H.up[k] @ (H.down[k] @ lin) - lin).max() < 1e-5


def test_down_up_smooth_function_small_error():
    v, f = grid_mesh(49)
    H = build_hierarchy(v, f, levels=2)
    g = np.sin(2.0 * v[:, 0]) * np.cos(1.5 * v[:, 1])  # smooth, amplitude 1
    rec = H.up[0] @ (H.down[0] @ g)
    assert np.abs(rec - g).max() < 0.02
    rough = np.random.default_rng(1).normal(size=len(v))  # white noise is not preserved
    assert np.abs(H.up[0] @ (H.down[0] @ rough) - rough).mean() > 0.3


def test_barycentric_upsampling_identity_on_same_mesh():
    v, f = grid_mesh(9)
    U = barycentric_upsampling(v, v, f)
    assert np.allclose(U.toarray(), np.eye(len(v)), atol=1e-9)


def test_laplacian_spectrum_and_rows():
    v, f = grid_mesh(9)
    L = laplacian(f, len(v))
    ev = np.linalg.eigvalsh(L.toarray())
    assert ev.min() >= -1 - 1e-9 and ev.max() <= 1 + 1e-9
    # lambda_max = 2: L~ = -D^-1/2 A D^-1/2, so for degree-regular rows the constant vector maps to -1.
    A = sp.coo_matrix((np.ones(len(mesh_edges(f)) * 2), (np.r_[mesh_edges(f)[:, 0], mesh_edges(f)[:, 1]],
                                                          np.r_[mesh_edges(f)[:, 1], mesh_edges(f)[:, 0]])))
    d = np.asarray(A.sum(1)).ravel()
    assert np.allclose(L @ np.sqrt(d), -np.sqrt(d))


@pytest.fixture(scope="module")
def small_graph():
    v, f = grid_mesh(7)
    return v, f, laplacian(f, len(v))


def test_chebconv_k1_is_per_vertex_linear(small_graph):
    _, _, L = small_graph
    torch.manual_seed(0)
    conv = ChebConv(4, 3, L, K=1)
    x = torch.randn(2, L.shape[0], 4)
    ref = x @ conv.weight[0] + conv.bias
    assert torch.allclose(conv(x), ref, atol=1e-6)


def test_chebconv_matches_dense_recurrence(small_graph):
    _, _, L = small_graph
    torch.manual_seed(0)
    conv = ChebConv(3, 2, L, K=6).double()
    x = torch.randn(2, L.shape[0], 3, dtype=torch.float64)
    Ld = torch.from_numpy(L.toarray())
    # Chebyshev polynomials of the dense matrix: T_k(L~) = cos(k arccos L~) on the eigenbasis.
    w, Q = torch.linalg.eigh(Ld)
    out = conv.bias.clone().expand(2, L.shape[0], 2).clone()
    for k in range(6):
        Tk = Q @ torch.diag(torch.cos(k * torch.arccos(w.clamp(-1, 1)))) @ Q.T
        out = out + (Tk @ x) @ conv.weight[k]
    assert torch.allclose(conv(x), out, atol=1e-6)  # the Laplacian is stored float32


def test_chebconv_gradcheck():
    v, f = grid_mesh(4)  # 16 vertices: gradcheck's finite differences stay quick
    conv = ChebConv(2, 2, laplacian(f, len(v)), K=6).double()
    x = torch.randn(1, len(v), 2, dtype=torch.float64, requires_grad=True)
    W = conv.weight.detach().clone().requires_grad_(True)
    b = conv.bias.detach().clone().requires_grad_(True)
    fn = lambda x, W, b: torch.func.functional_call(conv, {"weight": W, "bias": b}, (x,))
    assert torch.autograd.gradcheck(fn, (x, W, b))
    conv(x).square().sum().backward()
    assert conv.weight.grad.abs().sum() > 0 and conv.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_chebconv_permutation_equivariance(small_graph):
    _, _f, L = small_graph
    V = L.shape[0]
    torch.manual_seed(0)
    perm = torch.randperm(V)
    P = sp.coo_matrix((np.ones(V), (np.arange(V), perm.numpy())), shape=(V, V)).tocsr()
    Lp = P @ L @ P.T
    conv = ChebConv(3, 5, L, K=6)
    conv_p = ChebConv(3, 5, Lp, K=6)
    conv_p.load_state_dict({**conv.state_dict(), "laplacian": sparse_tensor(Lp)})
    x = torch.randn(2, V, 3)
    assert torch.allclose(conv_p(x[:, perm]), conv(x)[:, perm], atol=1e-5)


def test_resample_batched_matches_scipy():
    v, f = grid_mesh(17)
    H = build_hierarchy(v, f, levels=1)
    x = torch.randn(3, len(v), 2, dtype=torch.float64)
    down, up = Resample(H.down[0]).double(), Resample(H.up[0]).double()
    y = down(x)
    for b in range(3):
        assert np.allclose(y[b].numpy(), H.down[0] @ x[b].numpy())
        assert np.allclose(up(y)[b].numpy(), H.up[0] @ y[b].numpy())


def test_mesh_hierarchy_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERECON_CACHE", str(tmp_path))
    v, f = grid_mesh(17)
    H1 = mesh_hierarchy(v, f, levels=2)
    files = list((tmp_path / "hierarchy").glob("mesh_*.npz"))
    assert len(files) == 1
    H2 = mesh_hierarchy(v, f, levels=2)
    assert H1.sizes == H2.sizes
    for k in range(2):
        assert np.array_equal(H1.kept[k], H2.kept[k]) and np.array_equal(H1.faces[k + 1], H2.faces[k + 1])
        assert abs(H1.up[k] - H2.up[k]).max() == 0 and abs(H1.down[k] - H2.down[k]).max() == 0
    # A different mesh gets its own entry.
    mesh_hierarchy(v * 2, f, levels=2)
    assert len(list((tmp_path / "hierarchy").glob("mesh_*.npz"))) == 2


@pytest.mark.slow
def test_ict_hierarchy_sizes(ict_model):
    v, f = ict_model.mean_shape.numpy(), ict_model.faces.numpy()
    H = build_hierarchy(v, f, levels=4)
    V = len(v)
    for k, n in enumerate(H.sizes):
        assert abs(n - V / 4 ** k) <= 0.05 * V / 4 ** k + 2, H.sizes
    err = np.abs(H.up[0] @ H.down[0] @ H.vertices[0] - H.vertices[0]).mean()
    assert err < 0.2  # mm
