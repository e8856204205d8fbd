"""PRDL (objective/prdl.py): statistics against brute force, zero at coincidence, gradients that
move a shifted part back, the invariances V3 relies on, and the mesh (prediction) side."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerecon.objective.prdl import (
    anchor_grid,
    distance_statistics,
    label_map_points,
    part_iou,
    point_set_loss,
    prdl,
)


def _brute(anchors, pts):
    out = []
    for a in anchors.tolist():
        d = [math.hypot(a[0] - p[0], a[1] - p[1]) for p in pts.tolist()]
        out.append([min(d), max(d), sum(d) / len(d)])
    return torch.tensor(out, dtype=torch.float64)


def test_statistics_match_brute_force_with_padding():
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(7, 2, generator=g, dtype=torch.float64) * 20
    pts = torch.rand(2, 9, 2, generator=g, dtype=torch.float64) * 20
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 5:] = False  # face 1 has 5 real points, the rest padding (far away: must be ignored)
    pts[1, 5:] = 1e4
    s = distance_statistics(anchors, pts, valid, eps=0.0)
    assert torch.allclose(s[0], _brute(anchors, pts[0]), atol=1e-12)
    assert torch.allclose(s[1], _brute(anchors, pts[1, :5]), atol=1e-12)
    assert s.shape == (2, 7, 3)


def test_anchor_grid_is_centred_on_the_image():
    a = anchor_grid(224, 16)
    assert a.shape == (256, 2)
    assert torch.allclose(a.mean(0), torch.tensor([111.5, 111.5]))  # the image centre (pixel centres at integers)
    assert float(a[:, 0].min()) == pytest.approx(224 / 32 - 0.5)


def test_zero_when_sets_coincide_and_invariances():
    g = torch.Generator().manual_seed(1)
    anchors = anchor_grid(32, 4, torch.float64)
    t = torch.rand(1, 40, 2, generator=g, dtype=torch.float64) * 32
    v = torch.ones(1, 40, dtype=torch.bool)
    assert float(point_set_loss(anchors, t, v, t, v)) == 0.0
    # No correspondence: any order; any multiplicity of the whole set; padding is ignored.
    perm = t[:, torch.randperm(40, generator=g)]
    assert float(point_set_loss(anchors, perm, v, t, v)) < 1e-20
    twice = torch.cat([t, t], 1)
    assert float(point_set_loss(anchors, twice, torch.ones(1, 80, dtype=torch.bool), t, v)) < 1e-20
    padded = torch.cat([t, torch.full((1, 5, 2), 99.0, dtype=torch.float64)], 1)
    pv = torch.cat([v, torch.zeros(1, 5, dtype=torch.bool)], 1)
    assert float(point_set_loss(anchors, padded, pv, t, v)) < 1e-20
    # A different set is not free, and an empty side contributes nothing.
    assert float(point_set_loss(anchors, t + 1.0, v, t, v)) > 0.1
    assert float(point_set_loss(anchors, t, torch.zeros_like(v), t, v)) == 0.0


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    anchors = anchor_grid(16, 3, torch.float64)
    pred = (torch.rand(2, 6, 2, generator=g, dtype=torch.float64) * 16).requires_grad_(True)
    tgt = torch.rand(2, 8, 2, generator=g, dtype=torch.float64) * 16
    vp, vt = torch.ones(2, 6, dtype=torch.bool), torch.ones(2, 8, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda p: point_set_loss(anchors, p, vp, tgt, vt), (pred,), eps=1e-6, atol=1e-6)


def test_gradient_moves_a_shifted_part_back():
    """A filled disc shifted by (3, -2) px: the gradient w.r.t. the shift points along it, and plain
    gradient descent on the shift brings it back to ~0."""
    yy, xx = torch.meshgrid(torch.arange(64.0, dtype=torch.float64), torch.arange(64.0, dtype=torch.float64),
                            indexing="ij")
    disc = ((xx - 30) ** 2 + (yy - 34) ** 2 <= 81).reshape(-1)
    tgt = torch.stack([xx.reshape(-1)[disc], yy.reshape(-1)[disc]], -1)[None]
    v = torch.ones(tgt.shape[:2], dtype=torch.bool)
    anchors = anchor_grid(64, 8, torch.float64)
    shift0 = torch.tensor([3.0, -2.0], dtype=torch.float64)
    s = shift0.clone().requires_grad_(True)
    point_set_loss(anchors, tgt + s, v, tgt, v).sum().backward()
    assert float(s.grad @ shift0) > 0  # descent direction -grad points back to 0
    s = shift0.clone().requires_grad_(True)
    opt = torch.optim.Adam([s], lr=0.2)
    for _ in range(100):
        opt.zero_grad()
        point_set_loss(anchors, tgt + s, v, tgt, v).sum().backward()
        opt.step()
    assert float(s.detach().norm()) < 0.3


def test_label_map_points_and_prdl_over_parts():
    lm = np.zeros((2, 8, 8), np.uint8)
    lm[0, 2:4, 2:5] = 1  # part 0
    lm[0, 6, 6] = 8  # part 7: one pixel (below min_points)
    lm[1, 1:3, 1:3] = 1
    pp = label_map_points(torch.from_numpy(lm), stride=1, dtype=torch.float64)
    assert pp.counts.tolist() == [[6, 0, 0, 0, 0, 0, 0, 1], [4, 0, 0, 0, 0, 0, 0, 0]]
    assert sorted(map(tuple, pp.points[0][0][pp.valid[0][0]].tolist())) == [
        (x, y) for x in (2.0, 3.0, 4.0) for y in (2.0, 3.0)]
    anchors = anchor_grid(8, 2, torch.float64)
    assert torch.equal(prdl(pp, pp, anchors), torch.zeros(2, dtype=torch.float64))
    other = label_map_points(torch.from_numpy(np.roll(lm, 1, axis=2)), stride=1, dtype=torch.float64)
    loss = prdl(other, pp, anchors)
    assert (loss > 0).all()
    # Stride 2 keeps the pixels at odd rows and columns (offset stride // 2).
    pp2 = label_map_points(torch.from_numpy(lm), stride=2)
    assert pp2.counts[0, 0] == 1 and pp2.points[0][0, 0].tolist() == [3.0, 3.0]  # rows/cols 1, 3, 5, 7 only
    iou = part_iou(lm, np.roll(lm, 1, axis=2))
    assert iou[0, 0] == pytest.approx(4 / 8) and np.isnan(iou[0, 1])


# ---------------------------------------------------------------- the mesh (prediction) side

@pytest.fixture(scope="module")
def part_mesh(ict_model):
    from facerecon.models.annotations import annotations_for
    from facerecon.objective.prdl import PartMesh

    return PartMesh(annotations_for(ict_model), ict_model.faces)


def _posed(model, dx=0.0, expression=None, dtype=torch.float64):
    from facerecon.geometry.camera import PerspectiveCamera

    p = model.random_params(1, generator=torch.Generator().manual_seed(3), exp_scale=0.0)
    e = p.expression if expression is None else model.expression_vector(expression)
    p = p.replace(expression=e, rotation=torch.tensor([[0.05, 0.3, 0.02]]),
                  translation=torch.tensor([[dx, 0.0, 0.0]]))
    with torch.no_grad():
        v = model(p).vertices_world.to(dtype)
    return v, PerspectiveCamera.deep3d(224)


@pytest.mark.assets
def test_mesh_points_are_the_label_map_pixels(ict_model, part_mesh):
    """At the current pose the prediction's points are exactly the pixel centres of its own label
    map, so PRDL against its own label map is 0; moved sideways, it is not."""
    from facerecon.objective.prdl import prdl_term

    v, cam = _posed(ict_model, expression={"jawOpen": 0.5})
    maps = part_mesh.label_maps(v, cam)
    tgt = label_map_points(torch.from_numpy(maps), max_points=300, dtype=torch.float64)
    assert tgt.strides[0] == 1 and tgt.strides[7] > 2  # eyes: every pixel; skin: a coarse lattice
    pred = part_mesh.points(v, cam, tgt.strides)
    assert torch.equal(pred.counts, tgt.counts)
    for k in range(8):
        a = pred.points[k][pred.valid[k]].detach()
        b = tgt.points[k][tgt.valid[k]]
        a = a[torch.argsort(a[:, 1] * 1000 + a[:, 0])]
        b = b[torch.argsort(b[:, 1] * 1000 + b[:, 0])]
        assert torch.allclose(a, b, atol=1e-6)
    anchors = anchor_grid(224, 16, torch.float64)
    assert float(prdl_term(part_mesh, v, cam, tgt, anchors)) < 1e-8
    v2, _ = _posed(ict_model, dx=3.0, expression={"jawOpen": 0.5})
    assert float(prdl_term(part_mesh, v2, cam, tgt, anchors)) > 1.0


@pytest.mark.assets
def test_mesh_gradient_moves_the_face_back(ict_model, part_mesh):
    """The face rendered 4 mm to the right of its target: d PRDL / d x-translation is positive (descent
    moves it left), and the eye part alone gives the same sign."""
    from facerecon.objective.prdl import prdl_term

    v, cam = _posed(ict_model)
    tgt = label_map_points(torch.from_numpy(part_mesh.label_maps(v, cam)), dtype=torch.float64)
    anchors = anchor_grid(224, 16, torch.float64)
    for weights in (None, torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])):
        t = torch.tensor([4.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
        prdl_term(part_mesh, v + t, cam, tgt, anchors, weights).sum().backward()
        assert float(t.grad[0]) > 0 and abs(float(t.grad[1])) < abs(float(t.grad[0]))


# ---------------------------------------------------------------- training

def test_augment_warps_and_mirrors_part_maps():
    from facerecon.regress.data import Augment, augment_sample

    S = 64
    parts = torch.zeros(1, S, S, dtype=torch.int64)
    parts[0, 10:20, 5:15] = 1  # right eye (subject's right: image left)
    parts[0, 10:20, 40:50] = 2  # left eye
    img, mask, lm = torch.rand(3, S, S), torch.ones(1, S, S), torch.rand(68, 2) * S
    # No change: identical map. Mirror: columns flipped and the two eyes swap labels.
    *_, same = augment_sample(img, mask, lm, torch.ones(68), Augment(0, 0, 0, 0, 0, 0, flip=0.0), parts=parts)
    assert torch.equal(same, parts)
    *_, flip = augment_sample(img, mask, lm, torch.ones(68), Augment(0, 0, 0, 0, 0, 0, flip=1.0), parts=parts)
    assert int(flip[0, 15, S - 1 - 10]) == 2 and int(flip[0, 15, S - 1 - 45]) == 1
    assert set(torch.unique(flip).tolist()) == {0, 1, 2}  # nearest: no blended labels


def _write_synthetic_dataset(root, model, n=4, seed=0):
    """n renders of random ICT faces as a preprocessed folder, with their exact part maps cached in
    parts/ (the parser stand-in)."""
    import json

    from PIL import Image as PILImage

    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.models.annotations import annotations_for
    from facerecon.objective.prdl import PartMesh
    from facerecon.regress.data import part_map_path
    from facerecon.render import MeshRenderer

    cam = PerspectiveCamera.deep3d(224)
    pm = PartMesh(annotations_for(model), model.faces)
    g = torch.Generator().manual_seed(seed)
    p = model.random_params(n, generator=g, exp_scale=0.3)
    p = p.replace(rotation=(torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.3, 1.0, 0.2]),
                  translation=(torch.rand(n, 3, generator=g) - 0.5) * 10)
    with torch.no_grad():
        geo = model(p)
        img = MeshRenderer(cam, model.faces)(geo.vertices_world, geo.albedo, torch.zeros(n, 27)).rgb
        lm = model.project_points(model.landmarks(geo.vertices), p.rotation, p.translation, cam)
    maps = pm.label_maps(geo.vertices_world, cam)
    for d in ("crops", "masks", "items"):
        (root / d).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        name = f"s{i}"
        PILImage.fromarray((img[i].clamp(0, 1) * 255).byte().numpy()).save(root / "crops" / f"{name}.png")
        PILImage.fromarray(np.full((224, 224), 255, np.uint8)).save(root / "masks" / f"{name}.png")
        np.savez(root / "items" / f"{name}.npz", lm68=lm[i].numpy().astype(np.float32), lm5=np.zeros((5, 2)))
        part_map_path(root, name).parent.mkdir(exist_ok=True)
        PILImage.fromarray(maps[i]).save(part_map_path(root, name))
        lines.append(json.dumps({"name": name, "status": "ok"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.assets
@pytest.mark.slow
def test_training_with_prdl_smoke(tmp_path, ict_model):
    """`--prdl-weight`: the PRDL term is computed on the batch's cached part maps and falls while
    training (a smoke run: 4 synthetic items, 15 steps, photometric loss off)."""
    import json

    from facerecon.regress.data import PreprocessedDataset
    from facerecon.regress.train import TrainConfig, train

    data = tmp_path / "data"
    _write_synthetic_dataset(data, ict_model)
    ds = PreprocessedDataset([data], augment=None, parts=True)
    assert ds[0]["parts"].shape == (224, 224) and int(ds[0]["parts"].max()) == 8
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "run"), backbone="mobilenet_v3_small", pretrained=False,
                      steps=15, batch=4, lr=1e-3, warmup=1, workers=0, ckpt_every=100, val_every=0, log_every=1,
                      w_photo=0.0, w_prdl=1.0, augment=False)
    train(cfg, model=ict_model, dataset=ds, progress=False)
    logs = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    prdl = [r["prdl_px2"] for r in logs if "prdl_px2" in r]
    print("PRDL px² over training:", [round(x, 1) for x in prdl[:3]], "...", [round(x, 1) for x in prdl[-3:]])
    assert len(prdl) == 15 and np.mean(prdl[-3:]) < 0.5 * np.mean(prdl[:3])


# ---------------------------------------------------------------- fitting

@pytest.mark.assets
@pytest.mark.slow  # ~25 s on the shared 2-core machine
def test_parts_stage_lowers_prdl_and_checks_map_shape(ict_model, part_mesh):
    """The fitter's parts stage starts from a landmark fit and lowers PRDL against exact part maps of a
    face with closed eyes and an open jaw; maps of the wrong size are refused."""
    from facerecon.fit import FitConfig, FitTargets, Fitter

    v, cam = _posed(ict_model, expression={"eyeBlink_L": 1.0, "eyeBlink_R": 1.0, "jawOpen": 0.7},
                    dtype=torch.float32)
    maps = torch.from_numpy(part_mesh.label_maps(v, cam).astype(np.int64))
    p = ict_model.random_params(1, generator=torch.Generator().manual_seed(3), exp_scale=0.0)
    e = ict_model.expression_vector({"eyeBlink_L": 1.0, "eyeBlink_R": 1.0, "jawOpen": 0.7})
    lm = ict_model.project_points(ict_model.landmarks(ict_model.shape(p.identity, e)),
                                  torch.tensor([[0.05, 0.3, 0.02]]), torch.zeros(1, 3), cam)
    lm = lm + torch.randn(lm.shape, generator=torch.Generator().manual_seed(0)) * 2.0
    cfg = FitConfig(steps_pose=10, steps_shape=15, steps_photo=0, w_prdl=0.3, steps_prdl=4)
    fitter = Fitter(ict_model, cfg)
    before = Fitter(ict_model, FitConfig(steps_pose=10, steps_shape=15, steps_photo=0)).fit(FitTargets(lm68=lm))
    res = fitter.fit(FitTargets(lm68=lm, parts=maps))
    assert "parts" in res.times and "prdl_px2" in res.losses
    from facerecon.objective.prdl import anchor_grid, label_map_points, prdl_term

    tgt = label_map_points(maps)
    A = anchor_grid(224, 12)
    with torch.no_grad():
        l0 = float(prdl_term(part_mesh, ict_model(before.params).vertices_world, cam, tgt, A))
        l1 = float(prdl_term(part_mesh, ict_model(res.params).vertices_world, cam, tgt, A))
    assert l1 < l0
    with pytest.raises(ValueError, match="part maps"):
        fitter.fit(FitTargets(lm68=lm, parts=maps[:, :100]))


@pytest.mark.assets
def test_fit_method_fills_part_maps_from_its_parser(ict_model, part_mesh, monkeypatch):
    """`prdl=True`: the method asks its parser for the crops' maps (any object with `parse`), and the
    fit runs the parts stage; without a parser in this install, a clear FaceReconError."""
    from facerecon.align import Crop
    from facerecon.detect.base import Face
    from facerecon.errors import FaceReconError
    from facerecon.fit.targets import default_parser
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.methods import MethodContext
    from facerecon.methods.base import Request
    from facerecon.methods.fit import PRDL_WEIGHT, FitMethod

    v, cam = _posed(ict_model, dtype=torch.float32)
    maps = part_mesh.label_maps(v, cam)

    class Parser:
        calls = 0

        def parse(self, crops):
            Parser.calls += 1
            assert crops.shape == (1, 224, 224, 3) and crops.dtype == np.uint8
            return maps

    with torch.no_grad():
        lm = ict_model.project_points(ict_model.landmarks(ict_model.mean_shape[None]),
                                      torch.tensor([[0.05, 0.3, 0.02]]), torch.zeros(1, 3), cam)[0].numpy()
    crop = Crop(image=np.zeros((224, 224, 3), np.uint8), M=np.eye(2, 3), M_inv=np.eye(2, 3), lm68=lm, source="x.jpg")
    face = Face(box=np.array([0, 0, 224, 224], np.float32), score=1.0, lm5=np.zeros((5, 2), np.float32), lm68=lm)
    ctx = MethodContext(ict_model, PerspectiveCamera.deep3d(224), torch.device("cpu"))
    m = FitMethod(ctx, prdl=True, parser=Parser(), steps_pose=5, steps_shape=5, steps_prdl=2)
    assert m.config.w_prdl == PRDL_WEIGHT
    t = m.targets([crop], [face], Request(photometric=False))
    assert Parser.calls == 1 and torch.equal(t.parts[0], torch.from_numpy(maps[0].astype(np.int64)))
    assert FitMethod(ctx).targets([crop], [face], Request(photometric=False)).parts is None  # off: no parser
    # Without a parser module, `prdl=True` is refused when the method is built, by a clear error.
    import sys

    import facerecon.detect

    monkeypatch.setitem(sys.modules, "facerecon.detect.parsing", None)
    # `from ..detect import parsing` reads the package's attribute first, set once any test imported it.
    monkeypatch.delattr(facerecon.detect, "parsing", raising=False)
    with pytest.raises(FaceReconError, match="face parser"):
        default_parser()
    with pytest.raises(FaceReconError, match="face parser"):
        FitMethod(ctx, prdl=True)


def test_an_eye_the_target_lacks_is_pulled_shut():
    """Target: no right-eye pixels (closed); prediction: an open eye. The loss is the eye's variance
    across its minor axis (here the rows), and its gradient moves the points towards the eye's middle
    row only (for parts outside `collapse_parts`, a one-sided part is ignored)."""
    lm = np.zeros((1, 16, 16), np.uint8)
    lm[0, 6:10, 4:12] = 1
    pred = label_map_points(torch.from_numpy(lm), stride=1, dtype=torch.float64)
    pts = pred.points[0].clone().requires_grad_(True)
    pred = type(pred)((pts,) + pred.points[1:], pred.valid, pred.counts, pred.strides)
    tgt = label_map_points(torch.from_numpy(np.zeros_like(lm)), stride=1, dtype=torch.float64)
    anchors = anchor_grid(16, 2, torch.float64)
    loss = prdl(pred, tgt, anchors)
    _, ys = np.meshgrid(np.arange(4, 12), np.arange(6, 10))
    assert float(loss.detach()) == pytest.approx(ys.var(), abs=1e-5)
    loss.sum().backward()
    g = pts.grad[0]
    centre = pts.detach()[0].mean(0)
    assert float(((pts.detach()[0] - centre) * g).sum(-1).min()) >= 0  # every point: descent moves it inwards
    assert float(g[:, 0].abs().max()) < 1e-6  # ... and not sideways: the eye keeps its width
    assert float(prdl(pred, tgt, anchors, collapse_parts=())) == 0.0
