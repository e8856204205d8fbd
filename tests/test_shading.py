"""SH lighting (Deep3D's basis) and vertex normals."""

from __future__ import annotations

import math

import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.mesh import edge_topology, face_normals, grid_mesh, icosphere, vertex_normals
from facerecon.render import MeshRenderer, sh_basis, sh_coefficients, sh_shade
from facerecon.render.shading import A0, A1, A2, C0, C1, C2

A0C0 = math.pi / math.sqrt(4 * math.pi)


def test_constants_match_deep3d():
    assert math.isclose(A0, math.pi) and math.isclose(A1, 2 * math.pi / math.sqrt(3))
    assert math.isclose(A2, 2 * math.pi / math.sqrt(8)) and math.isclose(C0, 1 / math.sqrt(4 * math.pi))
    assert math.isclose(C1, math.sqrt(3) / math.sqrt(4 * math.pi))
    assert math.isclose(C2, 3 * math.sqrt(5) / math.sqrt(12 * math.pi))
    n = torch.tensor([[0.36, -0.48, 0.8]], dtype=torch.float64)
    nx, ny, nz = 0.36, -0.48, 0.8
    k1, k2 = A1 * C1, A2 * C2
    expect = [A0 * C0, -k1 * ny, k1 * nz, -k1 * nx, k2 * nx * ny, -k2 * ny * nz,
              k2 * 0.5 / math.sqrt(3) * (3 * nz * nz - 1), -k2 * nx * nz, k2 * 0.5 * (nx * nx - ny * ny)]
    assert torch.allclose(sh_basis(n)[0], torch.tensor(expect, dtype=torch.float64))


def test_sphere_constant_and_linear_light_closed_form():
    v, f = icosphere(3, 1.0, dtype=torch.float64)
    n = vertex_normals(v[None], f)
    assert (n[0] - v).norm(dim=-1).max() < 2e-2  # unit sphere: normal ≈ position
    albedo = torch.rand(1, v.shape[0], 3, dtype=torch.float64)
    # Constant light only: colour = albedo · a0c0 · (γ0 + 0.8) per channel.
    gamma = torch.zeros(1, 27, dtype=torch.float64)
    gamma[0, [0, 9, 18]] = torch.tensor([0.1, 0.3, -0.2], dtype=torch.float64)
    col = sh_shade(albedo, n, gamma)
    expect = albedo * A0C0 * (torch.tensor([0.1, 0.3, -0.2], dtype=torch.float64) + 0.8)
    assert torch.allclose(col, expect)
    # Plus a linear nz light on the green channel only (coefficient 2 of channel 1).
    gamma[0, 9 + 2] = 0.5
    col = sh_shade(albedo, n, gamma)
    nz = n[0, :, 2]
    assert torch.allclose(col[0, :, 1], albedo[0, :, 1] * (A0C0 * 1.1 + A1 * C1 * 0.5 * nz))
    assert torch.allclose(col[0, :, [0, 2]], expect[0, :, [0, 2]])
    # init_lit=0 removes Deep3D's offset; a (9,) tensor offsets every coefficient.
    assert torch.allclose(sh_shade(albedo, n, torch.zeros(1, 27, dtype=torch.float64), init_lit=0.0), torch.zeros((), dtype=torch.float64))
    off = torch.zeros(9, dtype=torch.float64)
    off[3] = 1.0
    assert torch.allclose(sh_coefficients(torch.zeros(2, 27), off)[:, :, 3], torch.ones(2, 3))


def test_sh_shade_broadcasting_and_pixels():
    n = torch.nn.functional.normalize(torch.randn(2, 4, 5, 3), dim=-1)
    gamma = torch.randn(2, 27) * 0.1
    img = sh_shade(torch.ones(2, 4, 5, 3), n, gamma)
    assert img.shape == (2, 4, 5, 3)
    per = sh_shade(torch.ones(1, 20, 3), n[1].reshape(1, 20, 3), gamma[1:])
    assert torch.allclose(img[1].reshape(20, 3), per[0], atol=1e-6)


def test_vertex_normals_plane_and_area_weighting():
    v, f, _ = grid_mesh(3, 3, dtype=torch.float64)
    n = vertex_normals(v, f)
    assert torch.allclose(n, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(n))
    # Vertex 0 shared by a big triangle in the xy plane and a small one in the xz plane.
    v = torch.tensor([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, -1], [1, 0, 0]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 4, 3]])
    fn = face_normals(v, f)
    assert torch.allclose(fn, torch.tensor([[0, 0, 1.0], [0, 1.0, 0]], dtype=torch.float64))
    n0 = vertex_normals(v, f)[0]
    expect = torch.tensor([0.0, 0.5 * 1, 0.5 * 100], dtype=torch.float64)
    assert torch.allclose(n0, expect / expect.norm())


def test_edge_topology_closed_sphere():
    _, f = icosphere(2)
    t = edge_topology(f)
    assert (t.edge_count == 2).all() and t.edge_vertices.shape[0] == 3 * f.shape[0] // 2
    # The opposite vertices are the faces' third corners.
    e = 5
    for side in range(2):
        face = f[t.edge_faces[e, side]].tolist()
        assert set(face) == {*t.edge_vertices[e].tolist(), t.edge_opposite[e, side].item()}


def test_sh_shading_gradcheck_wrt_vertices():
    v = torch.tensor([[0, 0, 0.1], [1, 0, 0], [0, 1, 0], [-1, -0.5, 0.2], [0.3, -1, -0.1]],
                     dtype=torch.float64)[None]
    f = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1]])
    albedo = torch.rand(1, 5, 3, dtype=torch.float64)
    gamma = torch.randn(1, 27, dtype=torch.float64) * 0.3

    def shade(verts, g):
        return sh_shade(albedo, vertex_normals(verts, f), g)

    assert torch.autograd.gradcheck(shade, (v.clone().requires_grad_(), gamma.clone().requires_grad_()))


def test_rendered_sphere_matches_closed_form():
    # Per-pixel shading of a sphere under a linear nz light equals the formula with the exact
    # sphere normal at each pixel (up to tessellation).
    v, f = icosphere(4, 50.0)
    cam = PerspectiveCamera.from_fov(12.0, 96, 96)
    gamma = torch.zeros(1, 27)
    gamma[0, [2, 11, 20]] = 0.4
    r = MeshRenderer(cam, f, outputs=("rgb", "normals", "mask"), shading="pixel")
    out = r(v[None], torch.full((1, v.shape[0], 3), 0.5), gamma)
    m = out.mask[0] > 0
    nz = out.normals[0, ..., 2][m]
    expect = 0.5 * (A0C0 * 0.8 + A1 * C1 * 0.4 * nz)
    assert torch.allclose(out.rgb[0, ..., 0][m], expect, atol=1e-5)
    assert (nz > 0).all()  # only the hemisphere facing the camera is visible


def test_solve_sh_light_recovers_known_light():
    from facerecon.render.shading import sh_channels, sh_flatten, solve_sh_light

    g = torch.Generator().manual_seed(0)
    v, _ = icosphere(3, 1.0, dtype=torch.float64)
    n = v[None].expand(2, -1, -1)  # unit sphere: normal = position, every direction seen
    albedo = 0.3 + 0.6 * torch.rand(2, v.shape[0], 3, generator=g, dtype=torch.float64)
    gamma = torch.randn(2, 27, generator=g, dtype=torch.float64) * 0.2
    colors = sh_shade(albedo, n, gamma)
    w = torch.ones(2, v.shape[0], dtype=torch.float64)
    # Closed form: exact without the ridge term, to its size with it.
    assert torch.allclose(solve_sh_light(colors, n, albedo, w, ridge=0.0), gamma, atol=1e-10)
    assert torch.allclose(solve_sh_light(colors, n, albedo, w), gamma, atol=1e-3)
    # Zero-weight samples do not count, whatever their colour.
    bad = colors.clone()
    bad[:, ::3] = 1.0
    w[:, ::3] = 0.0
    assert torch.allclose(solve_sh_light(bad, n, albedo, w, ridge=0.0), gamma, atol=1e-10)
    # Another init_lit: the result is relative to it, so shading with it reproduces the colours.
    g2 = solve_sh_light(colors, n, albedo, torch.ones_like(w), init_lit=0.3, ridge=0.0)
    assert torch.allclose(sh_shade(albedo, n, g2, init_lit=0.3), colors, atol=1e-10)
    # Channel layout: 9 for red, then green, then blue.
    assert torch.equal(sh_channels(gamma)[:, 1], gamma[:, 9:18]) and torch.equal(sh_flatten(sh_channels(gamma)), gamma)
