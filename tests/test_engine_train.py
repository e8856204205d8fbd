"""Training the regressor on data-engine folders: the items' 3-D targets move with the augmentation,
the vertex loss (zero at the truth, its gradient), the validators' closed forms, and a 3-step run on a
synthetic engine folder (engine alone and mixed with a preprocessed folder). Tiny synthetic model, no
asset needed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.regress.data import Augment
from facerecon.regress.engine_data import EngineDataset, MixedDataset, augment_engine, expression_mirror
from facerecon.regress.predict import project_landmarks
from facerecon.regress.train import Losses, TrainConfig, train, vertex_term
from tests.test_regress import _write_dataset, tiny_model

CAM = PerspectiveCamera.deep3d(224)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _params(model, seed: int, yaw: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    p = model.random_params(1, generator=g, exp_scale=0.3)
    return p.replace(rotation=torch.tensor([[0.1, yaw, -0.05]]), translation=torch.tensor([[3.0, -2.0, 20.0]]))


def _write_engine(root, model, n: int = 3, n_val: int = 1, marker: int | None = None):
    """n + n_val engine samples of the tiny model (Deep3D camera), in the engine's on-disk layout.
    marker: draw a bright 3×3 square at that vertex's projection on a dark crop (else a noisy crop)."""
    from PIL import Image as PILImage

    (root / "samples").mkdir(parents=True)
    (root / "images").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n + n_val):
        p = _params(model, i, yaw=0.5 * (i - 1))
        with torch.no_grad():
            world = model.pose(model.shape(p.identity, p.expression), p.rotation, p.translation)[0]
            vpx = CAM.project(world).numpy().astype(np.float32)
            lm = project_landmarks(model, p, CAM)[0].numpy().astype(np.float32)
        crop = (rng.random((224, 224, 3)) * 60 + 100).astype(np.uint8)
        if marker is not None:
            crop[:] = 0
            x, y = np.round(vpx[marker, :2]).astype(int)
            crop[y - 1:y + 2, x - 1:x + 2] = 255
        pid = f"photo{i}"
        PILImage.fromarray(crop).save(root / "images" / f"{pid}_v0.png")
        np.savez(root / "samples" / f"{pid}_v0.npz", params=model.layout.join(p)[0].numpy().astype(np.float32),
                 layout=np.array([model.layout.n_identity, model.layout.n_expression, model.layout.n_albedo]),
                 vertices_px=vpx, vertices_world=world.numpy().astype(np.float32), lm68=lm,
                 vis68=np.ones(68, np.int8), mask=np.ones((224, 224), bool), rotation=p.rotation[0].double().numpy(),
                 camera=np.array([CAM.focal, CAM.cx, CAM.cy, 224, 224, CAM.distance, CAM.near]))
        rows.append({"status": "ok", "split": "val" if i >= n else "train", "sample": f"samples/{pid}_v0.npz",
                     "image": f"images/{pid}_v0.png", "yaw": float(np.degrees(p.rotation[0, 1])), "view": 0})
    rows.append({"status": "dropped", "photo_id": "bad", "split": "train"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_vertex_targets_follow_the_augmented_image(tmp_path, model, flip):
    """A marked vertex: after shift/scale/rotation (and a mirror) the bright square in the image is where
    the item's target for that vertex (the mirror vertex when flipped) went."""
    k = 5 * 12 + 3  # a vertex off the mirror axis
    root = _write_engine(tmp_path / "eng", model, n=1, n_val=0, marker=k)
    aug = Augment(shift=6.0, scale=0.05, rotate=10.0, brightness=0, contrast=0, saturation=0, flip=flip)
    ds = EngineDataset(root, model, split="train", augment=aug, vertex_index=np.arange(model.n_vertices))
    raw = ds.load(0)
    for epoch in range(3):
        d = ds[(0, epoch)]
        img = d["image"].sum(0)
        ys, xs = torch.nonzero(img > 0.5 * img.max(), as_tuple=True)
        w = img[ys, xs]
        blob = torch.stack([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
        j = int(ds.mirror[k]) if flip else k
        if flip:
            assert j != k and int(ds.mirror[j]) == k  # the mirror map is an involution
        # the target row j is the vertex that sits at the blob (k's image after the mirror)
        assert torch.allclose(d["vertices_px"][j, :2], blob, atol=0.6), (d["vertices_px"][j], blob)
        # depth is carried, not moved (relative depth is invariant to a 2-D similarity)
        assert torch.allclose(d["vertices_px"][:, 2], torch.from_numpy(raw["vertices_px"][ds.mirror if flip else
                                                                                          slice(None), 2]))
        assert float(d["param_w"][0]) == (0.0 if flip else 1.0)


def test_mirror_twice_is_the_identity(model):
    g = torch.Generator().manual_seed(0)
    img, mask = torch.rand(3, 224, 224, generator=g), torch.rand(1, 224, 224, generator=g)
    lm, w = torch.rand(68, 2) * 200, torch.rand(68)
    verts = torch.rand(model.n_vertices, 3) * 200
    from facerecon.models.annotations import mirror_vertices

    mirror = mirror_vertices(model.mean_shape)
    aug = Augment(shift=0, scale=0, rotate=0, brightness=0, contrast=0, saturation=0, flip=1.0)
    once = augment_engine(img, mask, lm, w, verts, mirror, aug, g)
    assert once[5] and not torch.allclose(once[4], verts)
    twice = augment_engine(*once[:5], mirror, aug, g)
    for a, b in zip(twice[:5], (img, mask, lm, w, verts)):
        assert torch.allclose(a, b, atol=1e-4)
    names = ["browDown_L", "browDown_R", "jawLeft", "jawOpen", "jawRight", "mouthLeft", "mouthRight", "eyeLookIn_L",
             "eyeLookIn_R"]
    perm = expression_mirror(names)
    assert [names[i] for i in perm] == ["browDown_R", "browDown_L", "jawRight", "jawOpen", "jawLeft", "mouthRight",
                                        "mouthLeft", "eyeLookIn_R", "eyeLookIn_L"]
    assert (perm[perm] == np.arange(len(names))).all()


def test_vertex_loss_zero_at_truth_and_gradient(model):
    p = _params(model, 3)
    with torch.no_grad():
        target = CAM.project(model.pose(model.shape(p.identity, p.expression), p.rotation, p.translation))
    assert float(vertex_term(target.clone(), target).abs().max()) == 0.0
    # a constant depth offset is not an error (relative depth), an x shift of 3 px is ~ 3 px (L1 regime)
    assert float(vertex_term(target + torch.tensor([0.0, 0.0, 50.0]), target).abs().max()) < 1e-4
    shifted = float(vertex_term(target + torch.tensor([3.0, 0.0, 0.0]), target, delta=0.01))
    assert abs(shifted - 3.0) < 0.02
    # through the Losses object: the regressor's vector of the true params gives vertex loss 0
    from facerecon.regress.model import Regressor

    reg = Regressor("mobilenet_v3_small", model, pretrained=False)
    cfg = TrainConfig(w_photo=0.0, w_vertex=1.0, w_param=1.0)
    idx = torch.arange(0, model.n_vertices, 3)
    vec = model.layout.join(p)
    batch = {"photo_w": torch.zeros(1), "lm68": project_landmarks(model, p, CAM), "lm_w": torch.ones(1, 68),
             "has3d": torch.ones(1), "vertices_px": target[:, idx], "params": vec.clone(),
             "param_w": torch.ones(1, 2)}
    _, logs = Losses(model, cfg, vertex_index=idx)(reg, vec, vec, batch)
    assert logs["vertex"] < 1e-6 and logs["param"] == 0.0 and logs["landmark_px2"] < 1e-6
    # gradient w.r.t. the parameters through pose + projection, against finite differences (float64)
    m64 = tiny_model().to(torch.float64)
    cam = PerspectiveCamera.deep3d(224)
    tgt = target.double() + torch.randn(target.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v0 = m64.layout.join(p).double().requires_grad_(True)

    def f(v):
        q = m64.layout.split(v)
        return vertex_term(cam.project(m64.pose(m64.shape(q.identity, q.expression), q.rotation, q.translation)),
                           tgt, delta=2.0).sum()

    assert torch.autograd.gradcheck(f, (v0,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_validators_closed_forms(tmp_path, model):
    from facerecon.eval.validation import AflwLm68Validator, EngineValidator

    root = _write_engine(tmp_path / "eng", model, n=1, n_val=2)
    ev = EngineValidator(root, model, "val")

    class Truth:  # a "regressor" that returns the samples' true parameters
        def predict(self, crops):
            ps = [np.load(root / f"samples/photo{i}_v0.npz")["params"] for i in (1, 2)]
            return model.layout.split(torch.from_numpy(np.stack(ps)))

    r = ev(Truth())
    assert r["n"] == 2 and r["vertex_mm"] < 1e-3 and r["lm_nme"] < 1e-3
    # the MERL-test score: visible points only, normalised by their box; no jaw in nme_nojaw
    v = object.__new__(AflwLm68Validator)
    gt = np.random.default_rng(0).random((3, 68, 2)) * 80 + 20
    v.names, v.lm68, v.yaw = ["a", "b", "c"], gt.copy(), np.array([10.0, 45.0, 80.0])
    v.vis68 = np.ones((3, 68), np.int8)
    v.vis68[2, :8] = -1
    v.lm68[2, :8] = np.nan
    assert AflwLm68Validator.score(v, gt.copy())["nme"] == 0.0
    pred = gt + [3.0, 4.0]  # 5 px everywhere
    pred[:, :17] += 100.0  # a wrong jaw: counts in nme only
    s = AflwLm68Validator.score(v, pred)
    box = [np.sqrt(np.prod(np.nanmax(v.lm68[i], 0) - np.nanmin(v.lm68[i], 0))) for i in range(3)]
    assert s["nme_nojaw_0_30"] == pytest.approx(5.0 / box[0] * 100)
    assert s["nme_nojaw"] == pytest.approx(np.mean([5.0 / b * 100 for b in box]))
    jaw2 = (8 * 0 + 9 * np.linalg.norm([103.0, 104.0]) + 51 * 5.0) / 60  # face c: 8 jaw points invisible
    assert s["nme_60_90"] == pytest.approx(jaw2 / box[2] * 100)


def test_three_step_training_on_an_engine_folder(tmp_path, model):
    eng = _write_engine(tmp_path / "eng", model, n=3, n_val=1)
    ds = EngineDataset(eng, model, split="train", augment=Augment())
    assert len(ds) == 3 and len(EngineDataset(eng, model, split="val")) == 1  # the dropped photo is skipped
    common = {"backbone": "mobilenet_v3_small", "pretrained": False, "steps": 3, "batch": 2, "warmup": 1,
              "workers": 0, "val_every": 0, "log_every": 1, "render_size": 32, "w_vertex": 1.0, "w_param": 1.0,
              "engine_photo_weight": 1.0}
    # mixed with a preprocessed photo folder: one dataset, photo items without 3-D targets
    data = tmp_path / "data"
    _write_dataset(data, model)
    from facerecon.regress.data import PreprocessedDataset

    mixed = MixedDataset(PreprocessedDataset([data], augment=None), ds)
    assert len(mixed) == 5 and float(mixed[0]["has3d"]) == 0 and float(mixed[(4, 0)]["has3d"]) == 1
    assert mixed[0]["vertices_px"].shape == mixed[4]["vertices_px"].shape  # they collate
    res = train(TrainConfig(data=[str(data)], engine=[str(eng)], out=str(tmp_path / "run"), **common),
                model=model, progress=False)
    assert res["step"] == 3
    logs = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # 3 batches of 2 from 5 items (3 engine items): some batch holds an engine item
    assert all(np.isfinite(r["total"]) and "photo" in r for r in logs)
    assert any(r.get("vertex", 0) > 0 for r in logs)
