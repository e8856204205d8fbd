"""The mirror image of a face in parameter space (`models.mirror`) and the regressor's flip test-time
augmentation: closed forms on a synthetic model whose bases are closed under mirroring (exact), and
on the ICT model (asset) within its basis' projection error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.landmarks import flip_landmarks
from facerecon.geometry.rotations import euler_to_matrix
from facerecon.models.annotations import mirror_vertices
from facerecon.models.layout import FaceParams
from facerecon.models.mirror import ParamMirror, flip_average
from facerecon.models.morphable import ModelData, MorphableModel

CAM = PerspectiveCamera.deep3d(224)
S = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))


def symmetric_model() -> MorphableModel:
    """A 12×12 curved grid symmetric about x = 0; identity modes half symmetric, half antisymmetric;
    expressions: a mirrored pair (`smile_L`, `smile_R`) and a symmetric `jawOpen`."""
    n = 12
    xs, ys = np.meshgrid(np.linspace(-75, 75, n), np.linspace(90, -90, n))
    v = np.stack([xs, ys, 60 - (xs ** 2 + ys ** 2) / 300.0], -1).reshape(-1, 3)
    mir = mirror_vertices(v)
    sign = np.array([-1.0, 1.0, 1.0])

    def P(f):  # (V, 3, K) field -> its mirror image
        return f[mir] * sign[None, :, None]

    rng = np.random.default_rng(0)
    R = rng.normal(0, 2, (len(v), 3, 3))
    ident = np.concatenate([(R + P(R)) / 2, (R - P(R)) / 2], 2)
    E = rng.normal(0, 2, (len(v), 3, 1))
    F = rng.normal(0, 2, (len(v), 3, 1))
    expr = np.concatenate([E, P(E), (F + P(F)) / 2], 2)
    faces = [(r * n + c, (r + 1) * n + c, r * n + c + 1) for r in range(n - 1) for c in range(n - 1)]
    data = ModelData(
        name="sym", mean_shape=v.astype(np.float32), id_basis=ident.astype(np.float32),
        exp_basis=expr.astype(np.float32), albedo_mean=np.full((len(v), 3), 0.6, np.float32),
        albedo_basis=np.zeros((len(v), 3, 0), np.float32), faces=np.array(faces, np.int64),
        landmarks68=np.linspace(0, len(v) - 1, 68).astype(np.int64), regions={"skin": np.arange(len(v))},
        expression_names=["smile_L", "smile_R", "jawOpen"], exp_prior="unit_interval")
    return MorphableModel(data)


def _params(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p = model.random_params(3, generator=g, exp_scale=0.4)
    rot = torch.tensor([[0.1, 0.5, 0.05], [-0.2, -1.2, 0.1], [0.3, 0.0, -0.4]])
    t = torch.tensor([[5.0, -3.0, 20.0], [0.0, 0.0, 0.0], [-10.0, 4.0, -30.0]])
    return p.replace(rotation=rot.to(p.rotation), translation=t.to(p.translation))


def _posed(model, p):
    return model.pose(model.shape(p.identity, p.expression), p.rotation, p.translation).double()


def test_mirror_rotation_is_s_r_s():
    a = torch.tensor([[0.3, -0.7, 0.2], [-0.1, 1.3, -0.5]], dtype=torch.float64)
    m = a * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    assert torch.allclose(S @ euler_to_matrix(a) @ S, euler_to_matrix(m), atol=1e-12)


def test_mirror_is_exact_on_a_mirror_closed_model():
    model = symmetric_model()
    pm = ParamMirror(model, CAM)
    assert pm.identity_residual < 1e-6
    assert pm.exp_perm.tolist() == [1, 0, 2]
    p = _params(model)
    q = pm(p)
    want = (_posed(model, p) @ S)[:, pm.vertex_map]  # rows: S v (S is symmetric)
    assert torch.allclose(_posed(model, q), want, atol=1e-3)
    # an involution, and the flipped crop's projection is the pixel mirror x -> W - 1 - x
    r = pm(q)
    for k in ("identity", "expression", "rotation", "translation"):
        assert torch.allclose(getattr(r, k), getattr(p, k), atol=1e-4), k
    xy_p, xy_q = CAM.project(_posed(model, p)), CAM.project(_posed(model, q))
    assert torch.allclose(xy_q[:, :, 0], 223.0 - xy_p[:, pm.vertex_map, 0], atol=1e-3)


def test_off_centre_principal_point_is_shifted():
    """cx != (W-1)/2: the mirrored face is moved so that its centre lands at W - 1 - x."""
    model = symmetric_model()
    cam = PerspectiveCamera(focal=1015.0, cx=114.0, cy=111.5, width=224, height=224, distance=1000.0)
    pm = ParamMirror(model, cam)
    p = _params(model)
    q = pm(p)
    c_p = cam.project(p.translation.double()[:, None])[:, 0, 0]
    c_q = cam.project(q.translation.double()[:, None])[:, 0, 0]
    assert torch.allclose(c_q, 223.0 - c_p, atol=1e-6)


def test_flip_average_of_a_consistent_pair_is_the_original():
    model = symmetric_model()
    pm = ParamMirror(model, CAM)
    p = _params(model)
    q = pm(p)
    avg = flip_average(p, q, pm)
    for k in ("identity", "expression", "rotation", "translation"):
        assert torch.allclose(getattr(avg, k), getattr(p, k), atol=1e-4), k
    # disagreement is halved: a flipped pass off by +d in yaw gives the mean
    off = q.replace(rotation=q.rotation + torch.tensor([0.0, 0.2, 0.0]))
    assert torch.allclose(flip_average(p, off, pm).rotation[:, 1], p.rotation[:, 1] - 0.1, atol=1e-6)


def test_regress_method_flip_tta_uses_the_flipped_crops():
    """A stand-in regressor that reads the pose off a marker pixel: the flipped crop gives the
    mirrored pose, and the TTA average is the plain prediction."""
    from facerecon.align import Crop
    from facerecon.methods.base import MethodContext, Request
    from facerecon.methods.regress import RegressMethod

    model = symmetric_model()
    p0 = _params(model).map(lambda t: t[:1])
    pm = ParamMirror(model, CAM)

    class Marker:
        def predict(self, images):
            left = images[:, 100, :112].sum((1, 2)) > images[:, 100, 112:].sum((1, 2))
            rows = [p0 if bool(flag) else pm(p0) for flag in left]
            return FaceParams.cat(rows)

    img = np.zeros((224, 224, 3), np.uint8)
    img[100, 10] = 255
    crop = Crop(image=img, M=np.eye(2, 3), M_inv=np.eye(2, 3))
    ctx = MethodContext(model=model, camera=CAM, device=torch.device("cpu"))
    for tta in (False, True):
        got = RegressMethod(ctx, Marker(), flip_tta=tta).predict([crop], Request())
        assert torch.allclose(got.rotation, p0.rotation.to(got.rotation), atol=1e-5)
        assert torch.allclose(got.translation, p0.translation.to(got.translation), atol=1e-4)


def test_ict_mirror_within_its_basis_projection(ict_model):
    model = ict_model
    pm = ParamMirror(model, CAM)
    assert pm.identity_residual < 0.01  # ICT's identity basis is nearly closed under mirroring
    p = _params(model)
    q = pm(p)
    want = (_posed(model, p) @ S)[:, pm.vertex_map]
    err = (_posed(model, q) - want).norm(dim=-1)
    assert float(err.mean()) < 0.1 and float(err.quantile(0.99)) < 0.5
    # the projected 68 landmarks follow within ~1 px (ICT's own 68 are not exactly symmetric)
    lp = model.project_landmarks(p, CAM).numpy()
    lq = model.project_landmarks(q, CAM).numpy()
    assert np.abs(flip_landmarks(lp, 224) - lq).mean() < 0.6


@pytest.mark.parametrize("n", [1, 2])
def test_mirror_keeps_dtype_and_batch(n):
    model = symmetric_model()
    p = _params(model).map(lambda t: t[:n].double())
    q = ParamMirror(model, CAM)(p)
    assert q.identity.dtype == torch.float64 and q.identity.shape == p.identity.shape


def test_flip_tta_wrapper_flips_the_width_axis():
    """regress.predict.FlipTTA: one network call on the crops and their mirror images along W; a
    regressor that is exactly mirror-consistent is returned unchanged."""
    from facerecon.regress.predict import FlipTTA

    model = symmetric_model()
    pm = ParamMirror(model, CAM)
    p0 = _params(model).map(lambda t: t[:2])
    q0 = pm(p0)
    seen = []

    class Consistent:
        def predict(self, crops):
            seen.append(np.array(crops))
            return FaceParams.cat([p0, q0])

    crops = np.random.default_rng(0).integers(0, 255, (2, 8, 6, 3), dtype=np.uint8)
    got = FlipTTA(Consistent(), model).predict(crops)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], np.concatenate([crops, crops[:, :, ::-1]]))
    for k in ("identity", "expression", "rotation", "translation"):
        assert torch.allclose(getattr(got, k), getattr(p0, k), atol=1e-4), k
