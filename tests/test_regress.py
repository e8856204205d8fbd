"""Regressor (Deep3D's R-Net): zero-init mean face, output ranges, augmentation consistency, a
training step with checkpoint + resume, ONNX parity, identity aggregation. Uses a tiny synthetic
morphable model and a randomly initialised backbone, so no asset is needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.models.morphable import ModelData, MorphableModel
from facerecon.regress.data import FLIP_68, Augment, PreprocessedDataset, augment_sample
from facerecon.regress.model import Regressor
from facerecon.regress.predict import aggregate_identity, load_regressor, project_landmarks, save_weights


def tiny_model(exp_prior: str = "unit_interval") -> MorphableModel:
    """A 12×12 curved grid, 150 mm wide, facing +z; 4 identity, 3 expression modes."""
    n = 12
    xs, ys = np.meshgrid(np.linspace(-75, 75, n), np.linspace(90, -90, n))
    zs = 60 - (xs ** 2 + ys ** 2) / 300.0
    v = np.stack([xs, ys, zs], -1).reshape(-1, 3).astype(np.float32)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [(a, d, b), (b, d, e)]  # counter-clockwise seen from +z (y up)
    rng = np.random.default_rng(0)
    V = len(v)
    data = ModelData(
        name="tiny", mean_shape=v, id_basis=rng.normal(0, 2, (V, 3, 4)).astype(np.float32),
        exp_basis=rng.normal(0, 2, (V, 3, 3)).astype(np.float32),
        albedo_mean=np.full((V, 3), 0.6, np.float32), albedo_basis=np.zeros((V, 3, 0), np.float32),
        faces=np.array(faces, np.int64), landmarks68=np.linspace(0, V - 1, 68).astype(np.int64),
        regions={"skin": np.arange(V)}, expression_names=["a", "b", "c"], exp_prior=exp_prior)
    return MorphableModel(data)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def reg(model):
    torch.manual_seed(0)
    return Regressor("mobilenet_v3_small", model, pretrained=False).eval()


def test_zero_init_gives_mean_face(model, reg):
    x = torch.rand(2, 3, 224, 224)
    vec = reg(x)
    assert vec.shape == (2, model.layout.dim)
    assert torch.count_nonzero(vec) == 0
    p = reg.params(x)
    for g in ("identity", "expression", "albedo", "rotation", "light", "translation"):
        t = getattr(p, g)
        assert t.shape == (2, model.layout.size(g))
        assert torch.all(t == 0), g
    pu = reg.predict(np.zeros((224, 224, 3), np.uint8))  # one crop -> batch 1
    assert pu.batch_size == 1 and torch.all(pu.identity == 0)


def test_expression_range_and_scales(model):
    r = Regressor("mobilenet_v3_small", model, pretrained=False)
    sl = model.layout.slices()
    raw = torch.zeros(3, model.layout.dim)
    raw[:, sl["expression"]] = torch.tensor([-2.0, 0.5, 3.0])
    r.eval()
    out = r.constrain(raw)
    assert torch.allclose(out[0, sl["expression"]], torch.tensor([0.0, 0.5, 1.0]))
    # Straight-through while training: the clamped value forward, identity gradient backward.
    r.train()
    raw.requires_grad_(True)
    out = r.constrain(raw)
    out[:, sl["expression"]].sum().backward()
    assert torch.all(raw.grad[:, sl["expression"]] == 1)
    assert float(r.expression_overflow(raw.detach())[0]) == pytest.approx(4.0 + 4.0)
    # A Gaussian-prior model keeps expression unbounded.
    g = Regressor("mobilenet_v3_small", tiny_model("gaussian"), pretrained=False).eval()
    assert torch.equal(g.constrain(raw.detach()), raw.detach())
    # Translation: one head unit = 10 mm.
    assert torch.all(r.out_scale[sl["translation"]] == 10.0)


def test_augment_moves_image_mask_and_landmarks_together():
    S = 224
    torch.manual_seed(3)
    lm = torch.rand(68, 2) * 120 + 50
    img = torch.zeros(3, S, S)
    mask = torch.ones(1, S, S)
    x, y = (round(float(v)) for v in lm[30])
    img[:, y - 1:y + 2, x - 1:x + 2] = 1.0  # a bright dot on landmark 30 (nose tip)
    aug = Augment(shift=10, scale=0.1, rotate=10, brightness=0, contrast=0, saturation=0, flip=1.0)
    img2, mask2, lm2, _w2 = augment_sample(img, mask, lm, torch.ones(68), aug)
    # Landmark 30 maps to itself under the iBUG mirror; the dot must sit where it went.
    assert FLIP_68[30] == 30
    yy, xx = np.unravel_index(int(img2[0].argmax()), (S, S))
    assert abs(xx - float(lm2[30, 0])) <= 1.5 and abs(yy - float(lm2[30, 1])) <= 1.5
    assert mask2.shape == (1, S, S) and float(mask2.min()) >= 0 and float(mask2.max()) <= 1
    # The mirror swaps sides: the left jaw end (0) becomes the right one (16).
    _img3, _, lm3, _ = augment_sample(img, mask, lm, torch.ones(68), Augment(0, 0, 0, 0, 0, 0, flip=1.0))
    assert torch.allclose(lm3[16], torch.stack([S - 1 - lm[0, 0], lm[0, 1]]), atol=1e-4)


def _write_dataset(root, model, n=2):
    """n synthetic preprocessed items: the mean face's landmarks shifted, grey crops, full masks."""
    from PIL import Image as PILImage

    from facerecon.io.atomic import write_text

    (root / "crops").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "items").mkdir()
    lm0 = project_landmarks(model, model.zeros(1))[0].numpy()
    lines = []
    rng = np.random.default_rng(1)
    for i in range(n):
        name = f"item{i}"
        crop = (rng.random((224, 224, 3)) * 60 + 100).astype(np.uint8)
        PILImage.fromarray(crop).save(root / "crops" / f"{name}.png")
        PILImage.fromarray(np.full((224, 224), 255, np.uint8)).save(root / "masks" / f"{name}.png")
        np.savez(root / "items" / f"{name}.npz", lm68=(lm0 + [6.0 + i, -4.0]).astype(np.float32),
                 lm5=np.zeros((5, 2), np.float32))
        lines.append(json.dumps({"name": name, "source": f"/x/{name}.jpg", "status": "ok"}))
    lines.append(json.dumps({"name": "bad", "source": "/x/bad.jpg", "status": "failed", "error": "x"}))
    write_text(root / "manifest.jsonl", "\n".join(lines) + "\n")


def test_training_step_checkpoint_and_resume(tmp_path, model):
    from facerecon.regress.train import TrainConfig, train

    data = tmp_path / "data"
    _write_dataset(data, model)
    ds = PreprocessedDataset([data], augment=None)
    assert len(ds) == 2  # the failed item is not used
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "run"), backbone="mobilenet_v3_small",
                      pretrained=False, steps=8, batch=2, lr=3e-4, warmup=1, workers=0, ckpt_every=4,
                      val_every=0, log_every=1, render_size=32, augment=False)
    res = train(cfg, model=model, dataset=ds, progress=False)
    assert res["step"] == 8
    logs = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = logs[0], logs[-1]
    assert np.isfinite(last["total"]) and "photo" in last
    assert last["landmark_px2"] < first["landmark_px2"]  # learns to move the landmarks
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ck["step"] == 8 and ck["regressor"]["backbone"] == "mobilenet_v3_small"
    # Resume continues from the checkpoint's step, not from 0.
    cfg.steps = 9
    res2 = train(cfg, resume=True, model=model, dataset=ds, progress=False)
    assert res2["step"] == 9
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 9
    # The checkpoint loads for inference and gives the trained (non-zero) output.
    r = load_regressor(tmp_path / "run" / "last.pt")
    p = r.predict(np.full((1, 224, 224, 3), 128, np.uint8))
    assert float(p.translation.abs().sum() + p.rotation.abs().sum()) > 0


def test_pseudo_label_distillation_runs(tmp_path, model):
    from facerecon.regress.train import TrainConfig, train

    data = tmp_path / "data"
    _write_dataset(data, model)
    vec = torch.zeros(2, model.layout.dim)
    vec[:, :4] = 0.5
    np.savez(tmp_path / "pl.npz", names=np.array(["item0", "item1"]), params=vec.numpy())
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "run"), backbone="mobilenet_v3_small",
                      pretrained=False, steps=2, batch=2, workers=0, val_every=0, log_every=1,
                      render_size=32, augment=False, w_photo=0.0, pseudo_labels=str(tmp_path / "pl.npz"))
    train(cfg, model=model, progress=False)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["pseudo_param"] > 0 and last["pseudo_vertex_mm2"] > 0


def test_weights_roundtrip_and_missing(tmp_path, reg):
    p = save_weights(reg, tmp_path / "w.pt", meta={"note": "test"})
    r2 = load_regressor(p)
    assert r2.meta["note"] == "test" and r2.backbone_name == "mobilenet_v3_small"
    from facerecon.errors import AssetError

    with pytest.raises(AssetError):
        load_regressor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AssetError):
        load_regressor(tmp_path / "junk.pt")


def test_onnx_matches_torch(tmp_path, model):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from facerecon.regress.onnx import OnnxRegressor, export_regressor_onnx

    torch.manual_seed(0)
    r = Regressor("mobilenet_v3_small", model, pretrained=False).eval()
    torch.nn.init.normal_(r.net.head.fc.weight, 0, 0.05)  # non-trivial output
    path = export_regressor_onnx(r, tmp_path / "r.onnx")
    o = OnnxRegressor(path, threads=1)
    crops = np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    a, b = r.predict(crops), o.predict(crops)
    assert a.batch_size == b.batch_size == 3
    for g in ("identity", "expression", "rotation", "light", "translation"):
        assert torch.allclose(getattr(a, g), getattr(b, g), atol=1e-4), g
    assert float(b.expression.min()) >= 0 and float(b.expression.max()) <= 1
    # load_regressor (and so FaceReconstructor(regressor=PATH), FACERECON_REGRESSOR) takes the export.
    from facerecon.regress import load_regressor

    loaded = load_regressor(path)
    assert isinstance(loaded, OnnxRegressor)
    assert torch.equal(loaded.predict(crops).identity, b.identity)


def test_aggregate_identity(model):
    p = model.zeros(3)
    ident = torch.tensor([[1.0, 0, 0, 0], [3.0, 0, 0, 0], [100.0, 0, 0, 0]])
    p = p.replace(identity=ident, expression=torch.rand(3, 3))
    out = aggregate_identity(p, [1.0, 3.0, 0.0])
    assert torch.allclose(out.identity, torch.tensor([2.5, 0, 0, 0]).expand(3, 4))
    assert torch.equal(out.expression, p.expression)  # per photo
    with pytest.raises(ValueError):
        aggregate_identity(p, [0.0, 0.0, 0.0])


def test_landmark_source_choice(tmp_path, model):
    """'gt' prefers manual labels (self-occluded points weight 0); 'detector' always the detector's."""
    data = tmp_path / "data"
    _write_dataset(data, model, n=1)
    item = data / "items" / "item0.npz"
    with np.load(item) as z:
        det = dict(z)
    gt = det["lm68"] + 3.0
    vis = np.ones(68, np.int8)
    vis[:4] = -1  # self-occluded
    np.savez(item, **det, lm68_gt=gt, vis68_gt=vis, lm68_conf=np.full(68, 0.5, np.float32))
    a = PreprocessedDataset([data], augment=None).load(0)
    np.testing.assert_array_equal(a["lm68"], gt)
    assert a["lm_w"][:4].sum() == 0 and a["lm_w"][4:].min() == 1 and a["gt"] == 1
    b = PreprocessedDataset([data], augment=None, landmarks="detector").load(0)
    np.testing.assert_array_equal(b["lm68"], det["lm68"])
    assert (b["lm_w"] == 0.5).all() and b["gt"] == 0
    with pytest.raises(ValueError, match="landmarks must be"):
        PreprocessedDataset([data], landmarks="manual")


def test_training_starts_from_init_weights(tmp_path, model):
    from facerecon.regress.predict import save_weights
    from facerecon.regress.train import TrainConfig, train

    data = tmp_path / "data"
    _write_dataset(data, model)
    r0 = Regressor("mobilenet_v3_small", model, pretrained=False).eval()
    torch.nn.init.normal_(r0.net.head.fc.weight, 0, 0.05)
    w = save_weights(r0, tmp_path / "init.pt")
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "run"), backbone="mobilenet_v3_small",
                      pretrained=False, steps=0, batch=2, warmup=1, workers=0, val_every=0,
                      render_size=32, augment=False, init=str(w))
    train(cfg, model=model, progress=False)
    r1 = load_regressor(tmp_path / "run" / "last.pt")
    for k, v in r0.state_dict().items():
        assert torch.equal(v, r1.state_dict()[k]), k
    with pytest.raises(ValueError, match="not a 'mobilenet_v3_large' torch regressor"):
        train(TrainConfig(**{**cfg.__dict__, "backbone": "mobilenet_v3_large", "out": str(tmp_path / "r2")}),
              model=model, progress=False)


def test_project_landmarks_matches_posed_model_landmarks():
    """The regressor's landmarks are the model's (vertex + model-space offset), posed and projected
    exactly as the fitter places them (they once missed the offsets: 2 cm on the jaw for ICT)."""
    from facerecon.fit import Fitter
    from facerecon.regress.predict import project_landmarks

    base, model = tiny_model(), tiny_model()
    model.landmark_offsets = torch.from_numpy(np.random.default_rng(3).normal(0, 8, (68, 3)).astype(np.float32))
    g = torch.Generator().manual_seed(2)
    p = model.random_params(2, generator=g).replace(rotation=torch.tensor([[0.1, 0.5, 0.0], [0.0, -0.3, 0.1]]),
                                                    translation=torch.tensor([[3.0, -2.0, 10.0], [0.0, 1.0, -5.0]]))
    fitter = Fitter(model)
    with torch.no_grad():
        # Offsets are model-space: add them before the pose.
        want = fitter.camera.project(model.pose(model.landmarks(model(p).vertices), p.rotation,
                                                p.translation))[..., :2]
        got = project_landmarks(model, p, fitter.camera)
        without = project_landmarks(base, p, fitter.camera)
        # The fitter's landmark decoder (bases sliced to the landmarks) places them alike.
        fast = model.project_points(fitter.decoder(p.identity, p.expression), p.rotation, p.translation,
                                    fitter.camera)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)
    torch.testing.assert_close(fast, want, rtol=0, atol=1e-3)
    assert (got - without).norm(dim=-1).mean() > 1.0  # the offsets matter at this size


def test_landmark_decoder_and_model_projection():
    """`landmark_decoder` (bases sliced to the landmarks + extra vertices) decodes the same points as
    the full decode; `project_landmarks` reuses given vertices and casts the params' dtype."""
    model = tiny_model()
    model.landmark_offsets = torch.from_numpy(np.random.default_rng(4).normal(0, 5, (68, 3)).astype(np.float32))
    g = torch.Generator().manual_seed(6)
    p = model.random_params(3, generator=g).replace(rotation=torch.tensor([[0.1, 0.5, 0.0], [0.0, -0.3, 0.1],
                                                                           [0.2, 0.0, -0.1]]))
    extra = np.array([0, 5, 77, 143])
    dec = model.landmark_decoder(extra)
    assert dec.n_points == 68 + 4 and torch.equal(dec.extra_vertices, torch.as_tensor(extra))
    with torch.no_grad():
        full = model.shape(p.identity, p.expression)
        pts = dec(p.identity, p.expression)
        torch.testing.assert_close(pts[:, :68], model.landmarks(full), rtol=0, atol=1e-4)
        torch.testing.assert_close(pts[:, 68:], full[:, extra], rtol=0, atol=1e-4)
        # A truncated identity uses the leading modes.
        torch.testing.assert_close(dec(p.identity[:, :2], p.expression),
                                   dec(torch.cat([p.identity[:, :2], torch.zeros(3, 2)], 1), p.expression))
        cam = PerspectiveCamera.deep3d(224)
        got = model.project_landmarks(p, cam)
        assert torch.equal(model.project_landmarks(p, cam, vertices=full), got)
        assert torch.equal(project_landmarks(model, p), got)  # the regressor's wrapper: Deep3D's 224² camera
        p64 = p.map(lambda t: t.double())
        assert model.project_landmarks(p64, cam).dtype == torch.float32
