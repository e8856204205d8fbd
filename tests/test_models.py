import numpy as np
import pytest
import torch

from facerecon.models import FaceParams, ParamLayout

from .conftest import need_asset


# --- ICT-FaceKit ------------------------------------------------------------------------------
def test_ict_counts(ict_model):
    m = ict_model
    assert m.n_vertices == 9409  # ICT README: full face area, vertices 0..9408
    assert m.n_faces == 18461  # its 9,230 polygons triangulated (quads -> 2, triangles kept)
    assert m.layout.n_identity == 100 and m.layout.n_expression == 53 and m.layout.n_albedo == 0
    assert m.layout.dim == 100 + 53 + 0 + 3 + 27 + 3
    assert "jawOpen" in m.expression_names and "eyeBlink_L" in m.expression_names
    assert int(m.faces.max()) == m.n_vertices - 1
    assert m.uv.shape[1] == 2 and m.uv_faces.shape == m.faces.shape


def test_ict_readme_landmarks_vs_bfm_convention(ict_model):
    # The README's own points are kept as a region; the default landmarks follow the BFM/3DDFA
    # convention, which moves the jaw outward-forward by ~2 cm and keeps the inner face within ~5 mm.
    readme = ict_model.mean_shape[ict_model.region("landmarks_ict_readme")]
    bfm = ict_model.landmarks(ict_model.mean_shape[None])[0]
    d = (readme - bfm).norm(dim=-1)
    assert d[27:].mean() < 5.0 and d[:17].mean() > 10.0
    assert float(ict_model.landmark_offsets.norm(dim=-1).max()) < 15.0


def test_ict_variants():
    need_asset("ict-facekit")
    from facerecon.models import load_model

    head = load_model("ict", variant="head")
    narrow = load_model("ict", variant="narrow")
    assert head.n_vertices == 26719 and narrow.n_vertices == 6706
    # Same landmark vertices in every variant (they all lie in the narrow face area).
    assert torch.equal(head.landmarks68, narrow.landmarks68)


def test_ict_landmarks_in_model_space(ict_model):
    lm = ict_model.landmarks(ict_model.mean_shape[None])[0]  # (68, 3) mm
    nose_tip, l_eye_out, r_eye_out = lm[30], lm[36], lm[45]
    # Subject's right eye (iBUG 36) on -x, left eye (45) on +x, either side of the nose.
    assert l_eye_out[0] < nose_tip[0] - 20 < 0 and r_eye_out[0] > nose_tip[0] + 20
    assert abs(float(nose_tip[0])) < 1.0  # symmetric model
    # Mouth below the nose, eyes above; nose tip is the front-most landmark.
    assert lm[48:68, 1].max() < nose_tip[1] < lm[36:48, 1].min()
    assert int(lm[:, 2].argmax()) == 30
    # Jaw contour runs from the subject's right (x<0) to left (x>0) through the chin (lowest).
    assert lm[0, 0] < 0 < lm[16, 0] and int(lm[:17, 1].argmin()) in (7, 8, 9)
    # Plausible adult interocular distance (outer corners ~ 85-100 mm).
    assert 75 < float((r_eye_out - l_eye_out).norm()) < 110


def test_ict_lm5_deep3d_rule(ict_model):
    lm = ict_model.landmarks(ict_model.mean_shape[None])[0]
    lm5 = ict_model.mean_lm5()
    assert torch.allclose(lm5[0], (lm[36] + lm[39]) / 2) and torch.allclose(lm5[2], lm[30])
    assert torch.allclose(lm5[3], lm[48]) and torch.allclose(lm5[4], lm[54])


def test_jaw_open_opens_mouth(ict_model):
    m = ict_model
    p = m.zeros(2)
    p = p.replace(expression=m.expression_vector({"jawOpen": 1.0}, 2) * torch.tensor([[0.0], [1.0]]))
    with torch.no_grad():
        lm = m.landmarks(m(p).vertices)
    inner = lambda x: float((x[62] - x[66]).norm())
    assert inner(lm[1]) > inner(lm[0]) + 10.0  # mm
    assert lm[1, 8, 1] < lm[0, 8, 1] - 10.0  # chin drops


def test_random_identities_plausible(ict_model):
    m = ict_model
    g = torch.Generator().manual_seed(0)
    p = m.random_params(16, generator=g, exp_scale=0.0)
    with torch.no_grad():
        v = m(p).vertices
    disp = (v - m.mean_shape).norm(dim=-1)
    assert float(disp.mean()) < 15.0 and float(disp.max()) < 60.0  # mm
    assert float(disp.mean()) > 1.0  # it does change the face
    # Interocular distance stays human.
    lm = m.landmarks(v)
    iod = (lm[:, 45] - lm[:, 36]).norm(dim=-1)
    assert bool(((iod > 60) & (iod < 125)).all())  # outer canthi, adults ~75-110


def test_forward_batched_dtype_and_normals(ict_model):
    m64 = ict_model.to(torch.float64)
    try:
        p = m64.zeros(3).replace(rotation=torch.tensor([[0, 0.5, 0], [0.2, 0, 0], [0, 0, 0.3]], dtype=torch.float64),
                                 translation=torch.tensor([[0, 0, 10.0]] * 3, dtype=torch.float64))
        g = m64(p)
        assert g.vertices_world.dtype == torch.float64 and g.vertices_world.shape == (3, 9409, 3)
        assert torch.allclose(g.normals.norm(dim=-1), torch.ones(3, 9409, dtype=torch.float64), atol=1e-6)
        # Nose-tip normal points towards the camera (+z) at zero pose, and turns with yaw.
        nose = int(m64.landmarks68[30])
        g0 = m64(m64.zeros(1))
        assert g0.normals[0, nose, 2] > 0.9
        assert g.normals[0, nose, 0] > 0.3
        single = m64(p[1])
        assert torch.allclose(single.vertices_world[0], g.vertices_world[1])
    finally:
        ict_model.to(torch.float32)


def test_expression_names_validated(ict_model):
    with pytest.raises(KeyError, match="jawOpen"):
        ict_model.expression_vector({"jawopen": 1.0})


# --- parameters --------------------------------------------------------------------------------
def test_deep3d_layout_257():
    lay = ParamLayout.deep3d()
    assert lay.dim == 257
    s = lay.slices()
    assert (s["identity"], s["expression"], s["albedo"]) == (slice(0, 80), slice(80, 144), slice(144, 224))
    assert (s["rotation"], s["light"], s["translation"]) == (slice(224, 227), slice(227, 254), slice(254, 257))
    vec = torch.randn(4, 257, dtype=torch.float64)
    p = lay.split(vec)
    assert isinstance(p, FaceParams) and p.batch_size == 4
    assert torch.allclose(p.translation, vec[:, 254:] * 100.0)  # Deep3D dm -> mm
    assert torch.allclose(lay.join(p), vec)
    with pytest.raises(ValueError, match="257"):
        lay.split(torch.zeros(2, 256))


def test_params_indexing_and_cat():
    lay = ParamLayout(10, 5, 0)
    p = lay.split(torch.arange(2 * lay.dim, dtype=torch.float32).view(2, -1))
    assert torch.equal(FaceParams.cat([p[0], p[1]]).identity, p.identity)
    assert p[1].batch_size == 1


# --- BFM09 (synthetic bases + the real Deep3D metadata) ---------------------------------------
def _write_synthetic_bfm(folder, k=3, exp_dim=5, seed=0):
    import scipy.io as sio

    rng = np.random.default_rng(seed)
    n = 3 * 53490
    mat = {
        "shapeMU": (rng.standard_normal((n, 1)) * 5e4).astype(np.float32),
        "shapePC": rng.standard_normal((n, k)).astype(np.float32),
        "shapeEV": np.array([[3e3], [2e3], [1e3]], np.float32)[:k],
        "texMU": rng.uniform(0, 255, (n, 1)).astype(np.float32),
        "texPC": rng.standard_normal((n, k)).astype(np.float32),
        "texEV": np.array([[40.0], [20.0], [10.0]], np.float32)[:k],
        "tl": rng.integers(1, 53490, (106466, 3)).astype(np.float64),
        "segbin": np.zeros((4, 53490), np.uint8),
    }
    sio.savemat(folder / "01_MorphableModel.mat", mat)
    nt = 3 * 53215
    expmu = rng.standard_normal(nt).astype(np.float32)
    exppc = rng.standard_normal((exp_dim, nt)).astype(np.float32)
    with open(folder / "Exp_Pca.bin", "wb") as fh:
        np.array([exp_dim], np.int32).tofile(fh)
        expmu.tofile(fh)
        exppc.tofile(fh)
    return mat, exppc.T


def test_bfm_builder_synthetic(tmp_path, monkeypatch):
    meta = need_asset("bfm-metadata")
    import scipy.io as sio

    from facerecon.models.bfm import build_bfm_front, load_bfm_model_front, save_bfm_model_front

    mat, exp_pc = _write_synthetic_bfm(tmp_path)
    data = build_bfm_front(tmp_path / "01_MorphableModel.mat", tmp_path / "Exp_Pca.bin", meta)
    info = sio.loadmat(meta / "facemodel_info.mat")
    front = sio.loadmat(meta / "BFM_front_idx.mat")["idx"].astype(int).ravel() - 1
    trim = sio.loadmat(meta / "BFM_exp_idx.mat")["trimIndex"].astype(int).ravel() - 1
    std_exp = np.loadtxt(meta / "std_exp.txt")

    assert data.mean_shape.shape == (35709, 3)
    assert data.faces.shape == (70789, 3) and np.array_equal(data.faces, info["tri"].astype(int) - 1)
    assert np.array_equal(data.landmarks68, info["keypoints"].astype(int).ravel() - 1)
    assert data.id_basis.shape == (35709, 3, 3) and data.exp_basis.shape == (35709, 3, 5)
    assert data.albedo_basis.shape == (35709, 3, 3)
    assert len(data.regions["skin"]) == int((info["skinmask"] > 0.5).sum())
    # Values: front vertex k is BFM09 vertex trim[front[k]]; expression uses front[k] directly.
    k = 1234
    src = trim[front[k]]
    mu = mat["shapeMU"].ravel().reshape(-1, 3)[trim[front]].astype(np.float64) / 1e3
    assert np.allclose(data.mean_shape[k], mu[k] - mu.mean(0), atol=1e-3)
    assert np.allclose(data.id_basis[k, :, 1], mat["shapePC"].reshape(-1, 3, 3)[src, :, 1] * 2e3 / 1e3, rtol=1e-5)
    assert np.allclose(data.exp_basis[k, :, 2], exp_pc.reshape(-1, 3, 5)[front[k], :, 2] * std_exp[2] / 1e3,
                       rtol=1e-5)
    assert np.allclose(data.albedo_mean[k], mat["texMU"].ravel().reshape(-1, 3)[src] / 255.0, atol=1e-6)
    assert data.faces.max() == 35708

    # Round trip through Deep3D's BFM_model_front.mat format.
    save_bfm_model_front(data, tmp_path / "BFM_model_front.mat")
    back = load_bfm_model_front(tmp_path / "BFM_model_front.mat")
    assert np.allclose(back.mean_shape, data.mean_shape, atol=1e-3)
    assert np.allclose(back.exp_basis, data.exp_basis, rtol=1e-4, atol=1e-6)
    assert np.array_equal(back.faces, data.faces) and np.array_equal(back.landmarks68, data.landmarks68)

    # Through the registry + cache, into a MorphableModel with Deep3D's 257-ish layout.
    monkeypatch.setenv("FACERECON_CACHE", str(tmp_path / "cache"))
    from facerecon.models import load_model

    m = load_model("bfm", asset_dir=tmp_path)
    assert m.n_vertices == 35709 and m.layout.translation_unit_mm == 100.0
    assert m.layout.dim == 3 + 5 + 3 + 33
    g = m(m.zeros(1))
    assert g.vertices.shape == (1, 35709, 3)


def test_bfm_bad_files_clear_errors(tmp_path):
    from facerecon.errors import AssetError
    from facerecon.models.bfm import read_exp_pca

    (tmp_path / "Exp_Pca.bin").write_bytes(np.array([79], np.int32).tobytes() + b"\0" * 16)
    with pytest.raises(AssetError, match="Exp_Pca.bin"):
        read_exp_pca(tmp_path / "Exp_Pca.bin")


def test_missing_asset_message(tmp_path, monkeypatch):
    from facerecon import assets
    from facerecon.errors import AssetError

    monkeypatch.setenv("FACERECON_ASSETS", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(AssetError) as e:
        assets.resolve("bfm09")
    msg = str(e.value)
    assert str(tmp_path / "bfm09") in msg and "faces.dmi.unibas.ch" in msg


def test_param_layout_dict_round_trip():
    import json

    from facerecon.models.layout import GROUPS, ParamLayout

    for lay in (ParamLayout.deep3d(), ParamLayout(100, 53, 0, order=tuple(reversed(GROUPS)))):
        assert ParamLayout.from_dict(json.loads(json.dumps(lay.to_dict()))) == lay
    assert ParamLayout.from_dict({"n_identity": 1, "n_expression": 2, "n_albedo": 0}).order == GROUPS
