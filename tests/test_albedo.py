"""The learned albedo basis: de-lighting, the build on a synthetic engine, the loader and the model hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerecon.errors import AssetError

from .conftest import need_asset


def _render_sample(model, albedo: np.ndarray, light: torch.Tensor, yaw: float = 0.0):
    """A data-engine-like sample dict + (224, 224, 3) uint8 image of the model's mean face with
    per-vertex `albedo` (V, 3) under `light` (27,), vertex-shaded by our renderer."""
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.render import MeshRenderer

    cam = PerspectiveCamera.deep3d()
    p = model.zeros(1).replace(rotation=torch.tensor([[0.0, yaw, 0.0]]))
    g = model(p)
    r = MeshRenderer(cam, model.faces, outputs=("rgb",))
    img = r(g.vertices_world, torch.tensor(np.asarray(albedo), dtype=torch.float32)[None], light[None]).rgb[0]
    img = (img.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    vw = g.vertices_world[0].numpy()
    px = cam.project(g.vertices_world)[0].numpy()
    sample = {"vertices_world": vw, "vertices_px": px.astype(np.float32), "photo_id": "synthetic",
              "camera": np.array([cam.focal, cam.cx, cam.cy, cam.width, cam.height, cam.distance, cam.near]),
              "model": model.name}
    return sample, img


def _light(dc_rel: float = 0.0, front: float = 0.25, side: float = 0.1) -> torch.Tensor:
    g = torch.zeros(3, 9)
    g[:, 0] = dc_rel
    g[:, 2] = front  # n_z: from the camera
    g[:, 3] = side
    return g.reshape(27)


def test_delight_recovers_constant_albedo(ict_model):
    from facerecon.dataset.albedo import delight_sample

    V = ict_model.n_vertices
    true = np.tile(np.array([0.6, 0.45, 0.35], np.float32), (V, 1))
    sample, img = _render_sample(ict_model, true, _light())
    t = delight_sample(sample, img, ict_model.faces.numpy(), ridge=1e-4)
    skin = np.zeros(V, bool)
    skin[ict_model.region("skin").numpy()] = True
    ok = t.seen & skin
    assert ok.sum() > 2000
    # The directional light is recovered and divided out: the albedo is flat again (8-bit rounding,
    # interpolation at silhouettes), at the truth's level (the solve fixes the constant term at init_lit).
    err = np.abs(t.albedo[ok] - true[ok])
    assert np.median(err) < 0.01 and np.percentile(err, 95) < 0.03
    # Re-shading with the returned light reproduces the photo's vertex colours.
    from facerecon.dataset.albedo import _sample_rgb
    from facerecon.geometry.mesh import vertex_normals
    from facerecon.render.shading import sh_shade

    n = vertex_normals(torch.as_tensor(sample["vertices_world"])[None], ict_model.faces)
    shaded = sh_shade(torch.as_tensor(t.albedo)[None], n, torch.as_tensor(t.light)[None])[0].numpy()
    col = _sample_rgb(img, sample["vertices_px"][:, :2])
    assert np.median(np.abs(shaded[ok] - col[ok])) < 0.01
    # The unlit side of a turned head is not sampled (grazing / hidden).
    s2, img2 = _render_sample(ict_model, true, _light(), yaw=0.9)
    t2 = delight_sample(s2, img2, ict_model.faces.numpy())
    assert 0.2 < t2.seen.mean() < t.seen.mean()


def _write_engine(tmp, model, n: int, basis_true: np.ndarray, mean_true: np.ndarray, rng, split="train"):
    from facerecon.dataset.store import write_jpeg, write_npz

    (tmp / "images").mkdir(parents=True, exist_ok=True)
    (tmp / "samples").mkdir(exist_ok=True)
    rows = []
    coeffs = []
    for i in range(n):
        c = rng.normal(size=basis_true.shape[2])
        coeffs.append(c)
        alb = np.clip(mean_true + basis_true @ c, 0, 1)
        yaw = float(rng.uniform(-0.5, 0.5))
        # A side light only: a frontal (n_z) term is confounded with the constant one on a face seen
        # from the front, and the de-lighting fixes the constant term (the albedo's level) by convention.
        s, img = _render_sample(model, alb, _light(front=0.0, side=float(rng.uniform(-0.3, 0.3))), yaw=yaw)
        pid = f"p{i:03d}"
        s.update(photo_id=pid, view=0, split=split, source=f"/photos/{split}_{pid}.jpg")
        write_npz(tmp / "samples" / f"{pid}_v0.npz", s)
        write_jpeg(tmp / "images" / f"{pid}_v0.jpg", img)
        rows.append({"status": "ok", "view": 0, "split": split, "photo_id": pid, "source": s["source"],
                     "sample": f"samples/{pid}_v0.npz", "image": f"images/{pid}_v0.jpg"})
    with open(tmp / "manifest.jsonl", "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return np.array(coeffs)


@pytest.mark.slow
def test_build_recovers_synthetic_basis(ict_model, tmp_path):
    """A synthetic engine whose albedos live in a known symmetric 2-D subspace: the built mean and
    leading components span it (what the robust, mirrored, de-lit PCA must get right)."""
    from facerecon.dataset.albedo import AlbedoBuildConfig, build_albedo_basis
    from facerecon.dataset.profile import mirror_map

    rng = np.random.default_rng(0)
    V = ict_model.n_vertices
    x = ict_model.mean_shape.numpy()
    m = mirror_map(x.astype(np.float64))
    mean_true = np.tile(np.array([0.62, 0.47, 0.38]), (V, 1))
    b0 = np.tile(np.array([0.08, 0.06, 0.05]), (V, 1))  # skin tone
    b1 = np.outer(np.cos(x[:, 1] / 30.0), [0.0, 0.03, -0.03])  # a vertical tint pattern (symmetric)
    basis_true = np.stack([b0, b1], 2)
    basis_true = 0.5 * (basis_true + basis_true[m])
    coeffs = _write_engine(tmp_path, ict_model, 16, basis_true, mean_true, rng)
    _write_engine(tmp_path, ict_model, 2, basis_true, mean_true, rng, split="val")
    built = build_albedo_basis([tmp_path], AlbedoBuildConfig(n_components=4), progress=False)
    assert built["faces_used"] == 16 and len(built["photo_ids"]) == 16  # val photos never used
    skin = ict_model.region("skin").numpy()
    sample_mean = mean_true + basis_true @ coeffs.mean(0)
    assert np.abs(built["mean"][skin] - sample_mean[skin]).mean() < 0.02
    # The true directions lie in the span of the 2 leading built components (skin rows).
    Bt = basis_true[skin].reshape(-1, 2)
    Bb = built["basis"][skin][:, :, :2].reshape(-1, 2).astype(np.float64)
    Q, _ = np.linalg.qr(Bb)
    resid = Bt - Q @ (Q.T @ Bt)
    assert np.linalg.norm(resid) / np.linalg.norm(Bt) < 0.25
    # Symmetric: every component equals its mirror image.
    assert np.allclose(built["basis"], built["basis"][m], atol=1e-6)
    # Variances descending; the basis is scaled by their square roots (unit-variance coefficients).
    v = built["variance"]
    assert np.all(np.diff(v) <= 1e-12)
    norms = np.sqrt((built["basis"].astype(np.float64) ** 2).sum((0, 1)))
    assert np.allclose(norms, np.sqrt(v), rtol=0.05)


def _fake_basis(V: int = 9409, K: int = 5) -> dict:
    rng = np.random.default_rng(1)
    return {"mean": rng.uniform(0.3, 0.7, (V, 3)).astype(np.float32),
            "basis": (rng.normal(size=(V, 3, K)) * 0.01).astype(np.float32),
            "variance": np.linspace(1, 0.1, K), "faces_used": 12, "model": "ict-face",
            "photo_ids": np.array([f"p{i}" for i in range(12)])}


def test_loader_search_and_errors(tmp_path, monkeypatch):
    from facerecon.models.albedo import default_albedo_paths, find_albedo, load_albedo, save_albedo

    monkeypatch.setenv("FACERECON_ALBEDO", str(tmp_path / "nope.npz"))
    paths = default_albedo_paths()
    assert paths[0] == tmp_path / "nope.npz"
    assert any(p.parts[-3:] == ("weights", "albedo_ict", "albedo_ict.npz") for p in paths)
    with pytest.raises(AssetError, match="nope.npz"):
        find_albedo(tmp_path / "nope.npz")
    f = save_albedo(tmp_path / "a.npz", _fake_basis())
    monkeypatch.setenv("FACERECON_ALBEDO", str(f))
    assert find_albedo() == f
    z = load_albedo()
    assert z["mean"].dtype == np.float32 and z["basis"].shape == (9409, 3, 5)
    assert np.abs(z["mean"] - _fake_basis()["mean"]).max() < 1e-3  # stored float16
    b = _fake_basis()["basis"]
    # int8 per component: within half a quantisation step of the largest value
    assert np.all(np.abs(z["basis"] - b).max((0, 1)) <= np.abs(b).max((0, 1)) / 254 * 1.01)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="bad.npz"):
        load_albedo(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(AssetError, match="not an albedo basis"):
        load_albedo(tmp_path / "other.npz")


def test_learned_model_hook(tmp_path):
    need_asset("ict-facekit")
    from facerecon.models import load_model
    from facerecon.models.albedo import save_albedo

    fake = _fake_basis()
    f = save_albedo(tmp_path / "a.npz", fake)
    default = load_model("ict")
    learned = load_model("ict", albedo="learned", albedo_path=f)
    # The default model is untouched: constant albedo, no basis, the regressor's 186-d layout.
    assert default.layout.n_albedo == 0 and default.layout.dim == 186
    assert torch.equal(default.albedo_mean, torch.tensor([0.70, 0.53, 0.45]).expand(default.n_vertices, 3))
    assert learned.layout.n_albedo == 5 and learned.layout.dim == 191
    for name in ("mean_shape", "id_basis", "exp_basis", "faces", "landmarks68"):
        assert torch.equal(getattr(default, name), getattr(learned, name))
    c = torch.randn(2, 5) * 0.5
    a = learned.albedo(c)
    ref = torch.as_tensor(fake["mean"]) + torch.einsum("vck,bk->bvc", torch.as_tensor(fake["basis"]), c)
    assert torch.allclose(a, ref.clamp(0, 1), atol=2e-3)  # float16 mean, int8 basis
    # Variants: a vertex prefix takes the rows it has; the head keeps its constant beyond the face.
    head = load_model("ict", "head", albedo="learned", albedo_path=f)
    assert torch.allclose(head.albedo(c)[:, :9409], a, atol=1e-6)
    assert torch.equal(head.albedo(c)[:, 9409:], torch.tensor([0.70, 0.53, 0.45]).expand(2, head.n_vertices - 9409, 3))
    with pytest.raises(ValueError, match="ICT model only"):
        load_model("bfm", albedo="learned")
    with pytest.raises(AssetError):
        load_model("ict", albedo="learned", albedo_path=tmp_path / "missing.npz")


def test_shipped_basis_loads():
    need_asset("ict-facekit")
    from facerecon.models import load_model
    from facerecon.models.albedo import find_albedo

    try:
        find_albedo()
    except AssetError:
        pytest.skip("no shipped albedo basis in this checkout")
    m = load_model("ict", albedo="learned")
    assert m.layout.n_albedo == 80
    a = m.albedo(m.zeros(1).albedo)[0]
    skin = m.region("skin")
    assert 0.2 < float(a[skin].mean()) < 0.9  # a skin colour, not black or white


def test_photo_albedo_reproduces_photo(ict_model):
    """texture='photo': the de-lit colours re-shaded with the same light give back the image."""
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.methods.texture import photo_albedo
    from facerecon.render.shading import sh_shade

    V = ict_model.n_vertices
    rng = np.random.default_rng(0)
    true = np.clip(0.5 + 0.1 * rng.normal(size=(1, 3)), 0, 1).astype(np.float32)
    light = _light(front=0.2)
    sample, img = _render_sample(ict_model, np.broadcast_to(true, (V, 3)), light, yaw=0.4)
    vw = torch.as_tensor(sample["vertices_world"])[None]
    from facerecon.geometry.mesh import vertex_normals

    n = vertex_normals(vw, ict_model.faces)
    fallback = torch.full((1, V, 3), 0.5)
    mirror = torch.as_tensor(np.arange(V))
    alb, src = photo_albedo(vw, n, ict_model.faces, light[None], PerspectiveCamera.deep3d(), torch.as_tensor(img),
                            fallback, mirror)
    seen = src[0] == 1
    assert seen.float().mean() > 0.3
    assert (alb[0][~seen] == 0.5).all()  # identity "mirror" adds nothing: the fallback stays
    err = (alb[0][seen] - torch.as_tensor(true)).abs()
    assert float(err.median()) < 0.01
    from facerecon.dataset.albedo import _sample_rgb

    shaded = sh_shade(alb, n, light[None])[0].numpy()
    col = _sample_rgb(img, sample["vertices_px"][:, :2])
    assert np.median(np.abs(shaded[seen.numpy()] - col[seen.numpy()])) < 0.01


def test_texture_option_checks():
    from facerecon.api import _check_texture
    from facerecon.errors import FaceReconError

    assert _check_texture(None, "ict", "fit") is None
    assert _check_texture("photo", "bfm", "regress") == "photo"
    assert _check_texture("refined", "ict", "regress") == "refined"
    with pytest.raises(FaceReconError, match="unknown texture 'gcn'"):
        _check_texture("gcn", "ict", "fit")
    with pytest.raises(FaceReconError, match="texture 'refined' needs a method"):
        _check_texture("refined", "ict", "prnet")
    with pytest.raises(FaceReconError, match="trained on the ICT face mesh"):
        _check_texture("refined", "bfm", "fit")
    with pytest.raises(FaceReconError, match="needs the fitting method 'fit'"):
        _check_texture("basis", "ict", "regress")
    with pytest.raises(FaceReconError, match="learned ICT albedo basis"):
        _check_texture("basis", "bfm", "fit")


def test_cli_texture_flag():
    from facerecon.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["reconstruct", "x.jpg", "-o", "o", "--texture", "basis"]).texture == "basis"
    assert p.parse_args(["reconstruct", "x.jpg", "-o", "o"]).texture is None
    assert p.parse_args(["reconstruct", "x.jpg", "-o", "o", "--texture", "refined"]).texture == "refined"
    with pytest.raises(SystemExit):
        p.parse_args(["reconstruct", "x.jpg", "-o", "o", "--texture", "gcn"])
    a = p.parse_args(["albedo", "build", "e1", "e2", "-o", "f.npz"])
    assert a.engines == ["e1", "e2"] and a.components == 80


@pytest.mark.slow
def test_reconstruct_textures_end_to_end(astronaut_path):
    """The three colour sources on a real photo: basis coefficients are fitted, 'constant' has no
    offset, 'photo' reproduces the crop better than the flat albedo."""
    need_asset("ict-facekit")
    need_asset("3ddfa-v2")
    from facerecon import api
    from facerecon.models.albedo import find_albedo
    from facerecon.render import MeshRenderer

    try:
        find_albedo()
    except AssetError:
        pytest.skip("no shipped albedo basis")
    img = api.load_image(astronaut_path)
    cfg = api.FitConfig(steps_photo=20)
    out = {}
    for tex in ("constant", "basis", "photo"):
        rec = api.FaceReconstructor("ict", texture=tex, fit_config=cfg)
        out[tex] = rec.reconstruct(img)[0]
    assert out["basis"].params.albedo.shape == (1, 80) and out["basis"].params.albedo.abs().sum() > 0
    assert out["constant"].params.albedo_offset is None
    assert torch.allclose(out["constant"].geometry.albedo[0, 0], torch.tensor([0.70, 0.53, 0.45]))

    def l1(r):
        g = r.geometry
        o = MeshRenderer(r.camera_crop, r.topology.triangles)(g.vertices_world, g.albedo, r.params.light)
        m = o.mask[0] > 0.5
        return float((o.rgb[0].clamp(0, 1)[m] - torch.as_tensor(r.crop.image[m.numpy()] / 255.0)).abs().mean())

    assert l1(out["photo"]) < l1(out["basis"]) < l1(out["constant"])
