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
