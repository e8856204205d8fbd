"""The GCN texture refiner (issue 18 D3): networks, losses, the photo-colour sampler, the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerecon.errors import AssetError


def _grid(n: int = 16):
    """A flat n x n grid in the z = 0 plane, x symmetric about 0: (V, 3) float64 vertices, (F, 3) faces."""
    xs = np.linspace(-1.0, 1.0, n)
    X, Y = np.meshgrid(xs, xs)
    v = np.stack([X.ravel(), Y.ravel(), np.zeros(n * n)], 1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return v, f.astype(np.int64)


@pytest.fixture(scope="module")
def tiny():
    """A GCNTexture on a 4-level hierarchy of a 256-vertex grid, with small channel counts."""
    from facerecon.geometry.hierarchy import build_hierarchy
    from facerecon.models.annotations import mirror_vertices
    from facerecon.nets.texture_refiner import GCNTexture, hierarchy_arrays

    v, f = _grid(16)
    H = build_hierarchy(v, f, levels=4, factor=2.0)
    torch.manual_seed(0)
    net = GCNTexture(hierarchy_arrays(H), torch.full((len(v), 3), 0.5), feature_dim=10,
                     config={"decoder_channels": (4, 4, 4, 6, 6), "refiner_channels": (4, 6, 6), "K": 3})
    return net, torch.as_tensor(mirror_vertices(v)), H


def _inputs(V: int, B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, 10, generator=g)
    photo = 0.3 + 0.4 * torch.rand(B, V, 3, generator=g)
    seen = torch.rand(B, V, generator=g) > 0.4
    return f, photo, seen


def test_shapes_and_range(tiny):
    net, mirror, H = tiny
    V = H.sizes[0]
    f, photo, seen = _inputs(V)
    with torch.no_grad():
        albedo, coarse = net(f, photo, seen, mirror)
    assert albedo.shape == (2, V, 3) and coarse.shape == (2, V, 3)
    assert albedo.dtype == torch.float32
    assert float(albedo.min()) >= 0 and float(albedo.max()) <= 1
    # untrained: the decoder's output layer is zero, so the coarse texture is the mean
    assert torch.allclose(coarse, torch.full_like(coarse, 0.5))
    # untrained refiner: gate 0.5 where seen by either side, 0 where not, no correction
    _, src, either = net.photo_channels(photo, seen, mirror)
    want = torch.where(either[..., None] > 0, 0.5 * coarse + 0.5 * src, coarse)
    assert torch.allclose(albedo, want, atol=1e-6)
    # float64 works as well (dtype-agnostic)
    with torch.no_grad():
        a64, _ = net.double()(f.double(), photo.double(), seen, mirror)
    net.float()
    assert a64.dtype == torch.float64 and torch.allclose(a64.float(), albedo, atol=1e-5)


def test_photo_channels_mirror_fill(tiny):
    net, mirror, H = tiny
    V = H.sizes[0]
    photo = torch.rand(1, V, 3)
    seen = torch.zeros(1, V, dtype=torch.bool)
    seen[0, 0] = True  # only vertex 0 seen: its mirror takes its colour
    x, src, either = net.photo_channels(photo, seen, mirror)
    m0 = int(mirror[0])
    assert m0 != 0 and bool(either[0, m0]) and bool(either[0, 0])
    assert torch.allclose(src[0, m0], photo[0, 0]) and torch.allclose(src[0, 0], photo[0, 0])
    assert int(either.sum()) == 2 and x.shape == (1, V, 8)
    assert torch.all(x[0, 0, :3] == photo[0, 0]) and float(x[0, 1:, :3].abs().sum()) == 0  # unseen photo is 0


def test_gradients_reach_every_parameter(tiny):
    from facerecon.nets.texture_refiner import GCNTexture

    net, mirror, H = tiny
    net2 = GCNTexture(net.arrays, torch.full((H.sizes[0], 3), 0.5), 10, net.config)
    with torch.no_grad():  # the zero-initialised output layers would block gradients to the layers below
        for m in (net2.decoder.out, net2.refiner.out):
            m.weight.normal_(0, 0.05)
    f, photo, seen = _inputs(H.sizes[0])
    albedo, coarse = net2(f, photo, seen, mirror)
    ((albedo - 0.3) ** 2).sum().add((coarse - 0.2).pow(2).sum()).backward()
    for name, p in net2.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_save_load_round_trip(tiny, tmp_path):
    from facerecon.nets.texture_refiner import GCNTexture, load_texture_refiner

    net, mirror, H = tiny
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    f, photo, seen = _inputs(H.sizes[0], seed=3)
    path = net.save(tmp_path / "r.pt", meta={"steps": 1}, half=False)
    net2 = GCNTexture.from_file(path)
    assert net2.meta == {"steps": 1}
    a, c = net(f, photo, seen, mirror)
    a2, c2 = net2(f, photo, seen, mirror)
    assert torch.allclose(a, a2, atol=1e-6) and torch.allclose(c, c2, atol=1e-6)
    assert load_texture_refiner(path).n_vertices == H.sizes[0]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AssetError, match="cannot read texture refiner"):
        load_texture_refiner(tmp_path / "bad.pt")
    with pytest.raises(AssetError, match="not found"):
        load_texture_refiner(tmp_path / "missing.pt")


def test_symmetry_loss(tiny):
    from facerecon.objective.texture import symmetry_loss

    _, mirror, H = tiny
    v = torch.as_tensor(H.vertices[0], dtype=torch.float32)
    sym = torch.stack([v[:, 0].abs(), v[:, 1], torch.ones_like(v[:, 0])], -1)[None] * 0.5
    assert float(symmetry_loss(sym, mirror)[0]) == 0.0
    asym = sym.clone()
    asym[..., 0] = 0.5 + 0.25 * v[:, 0]  # a left-right ramp
    got = float(symmetry_loss(asym, mirror)[0])
    want = float((0.25 * (v[:, 0] - v[mirror, 0])).abs().mean() / 3)  # only the red channel differs
    assert got > 0 and got == pytest.approx(want, rel=1e-5)


def test_skin_variance_loss():
    from facerecon.objective.texture import skin_variance_loss

    skin = torch.tensor([0, 2, 3])
    const = torch.full((2, 5, 3), 0.6)
    assert torch.all(skin_variance_loss(const, skin) == 0)
    a = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(1))
    want = a[:, skin].numpy().var(1).mean(-1)
    assert np.allclose(skin_variance_loss(a, skin).numpy(), want, atol=1e-7)
    a[:, [1, 4]] = 5.0  # outside the skin: no effect
    assert np.allclose(skin_variance_loss(a, skin).numpy(), want, atol=1e-7)


def test_basis_l1_and_schedule():
    from facerecon.objective.texture import basis_l1_loss, basis_weight_schedule, masked_l1

    a = torch.zeros(1, 4, 3)
    t = torch.tensor([[[0.1] * 3, [0.2] * 3, [0.3] * 3, [0.4] * 3]])
    assert float(basis_l1_loss(a, t)[0]) == pytest.approx(0.25)
    assert float(basis_l1_loss(a, t, torch.tensor([0.0, 0, 0, 1]))[0]) == pytest.approx(0.4)
    w = [basis_weight_schedule(s, 100, 1.0, 0.05) for s in range(0, 101, 10)]
    assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(0.05) and all(np.diff(w) < 0)
    assert w[5] == pytest.approx(0.05 ** 0.5)  # geometric: the middle is the geometric mean
    r = torch.zeros(1, 2, 2, 3)
    p = torch.ones(1, 2, 2, 3)
    m = torch.tensor([[[True, False], [False, False]]])
    assert float(masked_l1(r, p, m)[0]) == pytest.approx(1.0)
    assert float(masked_l1(r, p, torch.zeros_like(m))[0]) == 0.0


def test_delit_sampler_exact_on_synthetic_render():
    """Render a flat, fronto-parallel plane with a linear albedo under a light; the sampler's de-lit
    colours are the vertex albedo exactly at visible vertices; vertices behind an occluder are not seen."""
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.geometry.mesh import vertex_normals
    from facerecon.methods.texture import delit_vertex_colors
    from facerecon.render import MeshRenderer
    from facerecon.render.shading import sh_shade

    v, f = _grid(21)
    cam = PerspectiveCamera(focal=400.0, cx=63.5, cy=63.5, width=128, height=128, distance=1000.0, near=1.0)
    verts = torch.as_tensor(v * 150.0, dtype=torch.float64)  # ±150 mm at z = 0, 1 m from the camera
    # an occluder: a small plane 100 mm in front of the centre, covering a patch of the grid
    occ_v = torch.tensor([[-30, -30, 100], [30, -30, 100], [30, 30, 100], [-30, 30, 100]], dtype=torch.float64)
    occ_f = torch.tensor([[0, 1, 2], [0, 2, 3]]) + len(v)
    allv = torch.cat([verts, occ_v])[None]
    faces = torch.cat([torch.as_tensor(f), occ_f])
    alb = torch.stack([0.3 + 0.4 * (verts[:, 0] + 150) / 300, 0.2 + 0.5 * (verts[:, 1] + 150) / 300,
                       torch.full_like(verts[:, 0], 0.5)], -1)
    alb = torch.cat([alb, torch.full((4, 3), 0.1, dtype=torch.float64)])[None]
    light = torch.zeros(1, 27, dtype=torch.float64)
    light[0, [1, 10, 19]] = 0.1  # a directional band: irradiance is still constant on a plane
    n = vertex_normals(allv, faces)
    out = MeshRenderer(cam, faces, outputs=("rgb",))(allv, alb, light, normals=n)
    image = out.rgb[0].clamp(0, 1)
    got, seen = delit_vertex_colors(allv, n, faces, light, cam, image, min_facing=0.3)
    scr = cam.project(verts[None])[0]
    interior = (scr[:, 0] > 20) & (scr[:, 0] < 107) & (scr[:, 1] > 20) & (scr[:, 1] < 107)
    hidden = (verts[:, 0].abs() < 28) & (verts[:, 1].abs() < 28)
    border = (verts[:, 0].abs() - 30).abs().lt(12) & (verts[:, 1].abs() < 45) | \
             (verts[:, 1].abs() - 30).abs().lt(12) & (verts[:, 0].abs() < 45)
    s = seen[0, : len(v)]
    assert not s[hidden].any()
    check = interior & ~hidden & ~border
    assert check.sum() > 150 and s[check].all()
    irr = sh_shade(torch.ones(1, 1, 3, dtype=torch.float64), n[:, :1], light)
    assert float(irr.min()) != pytest.approx(1.0)  # the light is not neutral: de-lighting matters
    assert torch.allclose(got[0, : len(v)][check], alb[0, : len(v)][check], atol=1e-6)


def _shipped():
    from facerecon.nets.texture_refiner import load_texture_refiner

    try:
        return load_texture_refiner()
    except AssetError:
        pytest.skip("no shipped texture refiner (weights/texture_refiner/refiner.pt)")


def test_shipped_refiner_gives_valid_colours():
    from facerecon.models import load_model
    from facerecon.models.annotations import mirror_vertices

    from .conftest import need_asset

    net = _shipped()
    need_asset("ict-facekit")
    model = load_model("ict")
    assert net.n_vertices == model.n_vertices
    mirror = torch.as_tensor(mirror_vertices(model.mean_shape))
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, net.feature_dim, generator=g).abs()
    photo = torch.rand(2, net.n_vertices, 3, generator=g)
    seen = torch.rand(2, net.n_vertices, generator=g) > 0.5
    with torch.no_grad():
        albedo, coarse = net(f, photo, seen, mirror)
    assert albedo.shape == (2, net.n_vertices, 3) and torch.isfinite(albedo).all() and torch.isfinite(coarse).all()
    assert float(albedo.min()) >= 0 and float(albedo.max()) <= 1
    # the decoder depends on the features (it is not a constant texture)
    assert float((coarse[0] - coarse[1]).abs().mean()) > 1e-4
    assert net.meta.get("steps", 0) > 0


@pytest.mark.slow
def test_reconstruct_refined_end_to_end(astronaut_path, tmp_path):
    """`--texture refined` on a real photo with the regressor: the refined colours differ from the
    constant albedo, are in [0, 1], reach the exported mesh, and reproduce the crop better than the
    constant colour."""
    from .conftest import need_asset

    _shipped()
    need_asset("ict-facekit")
    need_asset("3ddfa-v2")
    need_asset("mobilefacenet")
    from facerecon import api
    from facerecon.cli.main import main
    from facerecon.render import MeshRenderer

    img = api.load_image(astronaut_path)
    ref = api.FaceReconstructor("ict", method="regress", texture="refined").reconstruct(img)[0]
    flat = api.FaceReconstructor("ict", method="regress", texture="constant").reconstruct(img)[0]
    a = ref.geometry.albedo
    assert a.shape == flat.geometry.albedo.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert float((a - flat.geometry.albedo).abs().mean()) > 0.01

    def l1(r):
        g = r.geometry
        o = MeshRenderer(r.camera_crop, r.topology.triangles)(g.vertices_world, g.albedo, r.params.light)
        m = o.mask[0] > 0.5
        return float((o.rgb[0].clamp(0, 1)[m] - torch.as_tensor(r.crop.image[m.numpy()] / 255.0)).abs().mean())

    assert l1(ref) < l1(flat)
    rc = main(["-q", "reconstruct", str(astronaut_path), "-o", str(tmp_path), "--method", "regress", "--texture",
               "refined", "--outputs", "obj"])
    assert rc == 0
    objs = list(tmp_path.rglob("*.obj"))
    assert len(objs) == 1, list(tmp_path.rglob("*"))
    import trimesh

    mesh = trimesh.load(objs[0], process=False)
    cols = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(float) / 255.0
    from facerecon.render.views import shaded_colors

    want = shaded_colors(ref.geometry.albedo, ref.geometry.normals, ref.params.light)  # the refined albedo, shaded
    flat_c = shaded_colors(flat.geometry.albedo, flat.geometry.normals, flat.params.light)
    assert cols.shape == want.shape
    assert np.abs(cols - want).mean() < 2 / 255 < np.abs(cols - flat_c).mean()


def test_refiner_search_paths(tmp_path, monkeypatch):
    from facerecon.nets.texture_refiner import ENV, default_refiner_paths, load_texture_refiner

    monkeypatch.setenv(ENV, str(tmp_path / "env.pt"))
    monkeypatch.setenv("FACERECON_ASSETS", str(tmp_path / "assets"))
    paths = default_refiner_paths()
    assert paths[0] == tmp_path / "env.pt"
    assert paths[1].parts[-3:] == ("weights", "texture_refiner", "refiner.pt")
    assert paths[2] == tmp_path / "assets" / "texture_refiner" / "refiner.pt"
    monkeypatch.setattr("facerecon.nets.texture_refiner.default_refiner_paths", lambda: [tmp_path / "none.pt"])
    with pytest.raises(AssetError, match=r"no texture refiner weights found; searched: .*none\.pt.*refiner-train"):
        load_texture_refiner()
