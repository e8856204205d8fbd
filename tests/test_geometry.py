import math

import numpy as np
import pytest
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.rotations import (
    axis_angle_to_matrix,
    euler_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
)


def test_euler_matrix_round_trip_float64():
    g = torch.Generator().manual_seed(0)
    ang = (torch.rand(500, 3, generator=g, dtype=torch.float64) - 0.5) * 2 * torch.tensor([3.1, 1.5, 3.1],
                                                                                           dtype=torch.float64)
    R = euler_to_matrix(ang)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(500, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(matrix_to_euler(R), ang, atol=1e-9)


def test_euler_composition_order_matches_deep3d():
    # R = Rz(roll) Ry(yaw) Rx(pitch): pitch alone rotates y into z.
    R = euler_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(R @ torch.tensor([0, 1.0, 0], dtype=torch.float64),
                          torch.tensor([0, 0, 1.0], dtype=torch.float64), atol=1e-12)
    a = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    Rx = euler_to_matrix(torch.tensor([0.3, 0, 0], dtype=torch.float64))
    Ry = euler_to_matrix(torch.tensor([0, -0.2, 0], dtype=torch.float64))
    Rz = euler_to_matrix(torch.tensor([0, 0, 0.1], dtype=torch.float64))
    assert torch.allclose(euler_to_matrix(a), Rz @ Ry @ Rx, atol=1e-14)


def test_positive_yaw_moves_nose_to_image_right():
    # Nose at +z (towards the camera); yaw > 0 rotates +z towards +x = image right.
    cam = PerspectiveCamera.deep3d()
    nose = torch.tensor([[0.0, 0.0, 100.0]], dtype=torch.float64)
    R = euler_to_matrix(torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64))
    px = cam.project(nose @ R.T)
    assert px[0, 0] > cam.cx


def test_axis_angle_round_trip_including_small_and_near_pi():
    g = torch.Generator().manual_seed(1)
    axis = torch.nn.functional.normalize(torch.randn(300, 3, generator=g, dtype=torch.float64), dim=-1)
    ang = torch.cat([torch.rand(298, generator=g, dtype=torch.float64) * 3.1,
                     torch.tensor([1e-9, math.pi - 1e-5], dtype=torch.float64)])
    aa = axis * ang[:, None]
    R = axis_angle_to_matrix(aa)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(300, 3, 3), atol=1e-12)
    back = axis_angle_to_matrix(matrix_to_axis_angle(R))
    assert torch.allclose(back, R, atol=1e-7)
    assert torch.allclose(matrix_to_axis_angle(R[:298]), aa[:298], atol=1e-7)


def test_axis_angle_matches_euler_single_axis():
    t = torch.tensor(0.7, dtype=torch.float64)
    assert torch.allclose(axis_angle_to_matrix(torch.tensor([0, 0.7, 0], dtype=torch.float64)),
                          euler_to_matrix(torch.stack([torch.zeros(()), t, torch.zeros(())]).double()), atol=1e-14)


def test_deep3d_camera_constants():
    cam = PerspectiveCamera.deep3d()
    assert cam.focal == 1015.0 and cam.distance == 1000.0
    assert cam.fov_deg == pytest.approx(2 * math.degrees(math.atan(112 / 1015)), abs=1e-9)
    assert cam.fov_deg == pytest.approx(12.59, abs=0.01)
    # The origin projects to the image centre (pixel centres at integers: 111.5 for 224 px).
    p = cam.project(torch.zeros(1, 3, dtype=torch.float64))
    assert torch.allclose(p, torch.tensor([[111.5, 111.5, 1000.0]], dtype=torch.float64))
    # +y world (up) goes to smaller pixel y (image rows grow downwards).
    assert cam.project(torch.tensor([[0.0, 10.0, 0.0]]))[0, 1] < 111.5


def test_project_unproject_round_trip():
    cam = PerspectiveCamera.from_fov(30, 640, 480)
    pts = torch.randn(50, 3, dtype=torch.float64) * 50
    s = cam.project(pts)
    assert torch.allclose(cam.unproject(s[:, :2], s[:, 2]), pts, atol=1e-9)


def test_scaled_camera_consistent():
    cam = PerspectiveCamera.deep3d(224)
    big = cam.scaled(2.0)
    pts = torch.randn(20, 3, dtype=torch.float64) * 40
    a, b = cam.project(pts), big.project(pts)
    assert torch.allclose((a[:, :2] + 0.5) * 2 - 0.5, b[:, :2], atol=1e-9)
    assert big == PerspectiveCamera.deep3d(448)


def test_fit_similarity_recovers_transform_and_ignores_zero_weights():
    from facerecon.geometry.rotations import fit_similarity

    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    R = euler_to_matrix(torch.tensor([[0.3, -1.2, 0.4], [-0.2, 0.5, 2.0]], dtype=torch.float64))
    s = torch.tensor([2.5, 0.7], dtype=torch.float64)
    t = torch.tensor([[1.0, -2.0, 3.0], [0.0, 4.0, -1.0]], dtype=torch.float64)
    dst = s[:, None, None] * src @ R.transpose(1, 2) + t[:, None]
    w = torch.ones(2, 30, dtype=torch.float64)
    dst[:, :5] += 50.0  # outliers, weighted out
    w[:, :5] = 0
    s1, R1, t1 = fit_similarity(src, dst, w)
    torch.testing.assert_close(s1, s)
    torch.testing.assert_close(R1, R)
    torch.testing.assert_close(t1, t)
    # A mirrored target still gets a proper rotation (det +1), not a reflection.
    _, Rm, _ = fit_similarity(src, dst * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.det(Rm), torch.ones(2, dtype=torch.float64))


def test_nearest_rotation_is_proper_and_fixes_rotations():
    from facerecon.geometry.rotations import nearest_rotation

    R = euler_to_matrix(torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(nearest_rotation(R), R, atol=1e-12)
    noisy = 1.7 * R + 0.05 * np.random.default_rng(0).standard_normal((3, 3))
    Q = nearest_rotation(noisy)
    np.testing.assert_allclose(Q @ Q.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(Q) == pytest.approx(1.0) and np.abs(Q - R).max() < 0.1
    # A reflection is turned into the nearest proper rotation (det +1), not kept.
    assert np.linalg.det(nearest_rotation(np.diag([1.0, 1.0, -1.0]))) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- 2-D transforms


def test_estimate_similarity_torch_matches_numpy_and_batches():
    from facerecon.geometry.transforms2d import (
        estimate_similarity,
        estimate_similarity_torch,
        transform_points,
    )

    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (2, 7, 2))
    c, s = math.cos(0.4), math.sin(0.4)
    M = np.array([[1.3 * c, -1.3 * s, 5.0], [1.3 * s, 1.3 * c, -7.0]])
    dst = transform_points(M, src) + rng.normal(0, 0.5, src.shape)
    got = estimate_similarity_torch(torch.tensor(src), torch.tensor(dst))
    assert got.shape == (2, 2, 3) and got.dtype == torch.float64
    for b in range(2):
        np.testing.assert_allclose(got[b].numpy(), estimate_similarity(src[b], dst[b]), atol=1e-10)
    single = estimate_similarity_torch(torch.tensor(src[0]), torch.tensor(dst[0]))
    assert single.shape == (2, 3)
    torch.testing.assert_close(single, got[0])


# ----------------------------------------------------------------------------- landmark conventions


def _synthetic_lm68():
    # Random quarter-pixel points: exact in float32, so mirroring twice is exactly the identity.
    rng = np.random.default_rng(2)
    return (np.round(rng.uniform(0, 100, (68, 2)) * 4) / 4).astype(np.float32)


def test_lm5_rules_on_synthetic_68_points():
    from facerecon.geometry.landmarks import LM5_FROM_68, lm5_from_lm68_contour, lm5_from_lm68_corners

    lm = _synthetic_lm68()
    contour = lm5_from_lm68_contour(lm)
    assert contour.dtype == np.float32 and contour.shape == (5, 2)
    np.testing.assert_allclose(contour[0], lm[36:42].mean(0), rtol=1e-6)
    np.testing.assert_allclose(contour[1], lm[42:48].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(contour[2:], lm[[30, 48, 54]])
    corners = lm5_from_lm68_corners(lm)
    assert corners.dtype == np.float64 and corners.shape == (5, 2)
    lm64 = lm.astype(np.float64)
    np.testing.assert_allclose(corners[0], (lm64[36] + lm64[39]) / 2, rtol=1e-12)
    np.testing.assert_allclose(corners[1], (lm64[42] + lm64[45]) / 2, rtol=1e-12)
    np.testing.assert_array_equal(corners[2:], lm64[[30, 48, 54]])
    assert [len(ix) for ix in LM5_FROM_68] == [2, 2, 1, 1, 1]
    # torch: batched, any D, differentiable; same numbers as numpy
    t = torch.tensor(np.stack([lm64, lm64[::-1].copy()]), requires_grad=True)
    out = lm5_from_lm68_corners(t)
    assert out.shape == (2, 5, 2)
    np.testing.assert_array_equal(out[0].detach().numpy(), corners)
    out.sum().backward()
    assert float(t.grad.sum()) == pytest.approx(2 * 5 * 2)
    with pytest.raises(ValueError):
        lm5_from_lm68_corners(np.zeros((5, 2)))


def test_morphable_model_lm5_uses_the_corner_rule():
    from facerecon.geometry.landmarks import lm5_from_lm68_corners
    from facerecon.models.morphable import MorphableModel

    t = torch.tensor(_synthetic_lm68(), dtype=torch.float64)
    torch.testing.assert_close(MorphableModel.lm5_from_lm68(t), lm5_from_lm68_corners(t), rtol=0, atol=0)


def test_flip_landmarks_and_box_are_involutions():
    from facerecon.geometry.landmarks import IBUG68_MIRROR, flip_box, flip_landmarks

    assert sorted(IBUG68_MIRROR.tolist()) == list(range(68))
    np.testing.assert_array_equal(IBUG68_MIRROR[IBUG68_MIRROR], np.arange(68))
    lm = _synthetic_lm68()
    flipped = flip_landmarks(lm, 120)
    assert flipped.dtype == lm.dtype and flipped.shape == lm.shape
    np.testing.assert_array_equal(flip_landmarks(flipped, 120), lm)
    # Mirror x about the image's centre line (pixel centres at integers) and swap left/right points.
    assert flipped[36, 0] == 119 - lm[45, 0] and flipped[36, 1] == lm[45, 1]
    np.testing.assert_array_equal(flipped[30], [119 - lm[30, 0], lm[30, 1]])  # nose tip stays itself
    batch = np.stack([lm, lm + 1])
    np.testing.assert_array_equal(flip_landmarks(batch, 120)[1], flip_landmarks(lm + 1, 120))
    box = [10.0, 20.0, 50.0, 70.0, 0.9]
    np.testing.assert_array_equal(flip_box(box, 100), [49.0, 20.0, 89.0, 70.0])
    np.testing.assert_array_equal(flip_box(flip_box(box, 100), 100), box[:4])


def test_yaw_gate_closed_form():
    from facerecon.geometry.landmarks import yaw_gate

    assert yaw_gate(0.0) == 1.0 and yaw_gate(30.0) == 1.0 and yaw_gate(-30.0) == 1.0
    assert yaw_gate(50.0) == 0.0 and yaw_gate(-90.0) == 0.0
    assert yaw_gate(40.0) == pytest.approx(0.5) and yaw_gate(-45.0) == pytest.approx(0.25)
    assert yaw_gate(25.0, full=20.0, zero=30.0) == pytest.approx(0.5)
    assert isinstance(yaw_gate(np.float32(35.0)), float)


# ----------------------------------------------------------------------------- mesh topology


def test_mesh_edges_tetrahedron_and_matches_edge_topology():
    from facerecon.geometry.mesh import edge_topology, icosphere, mesh_edges

    tet = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    e = mesh_edges(tet)
    assert e.dtype == torch.int64
    assert e.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert mesh_edges(tet.int()).dtype == torch.int64
    _, f = icosphere(2)
    torch.testing.assert_close(mesh_edges(f), edge_topology(f).edge_vertices, rtol=0, atol=0)
    assert len(mesh_edges(f)) == 3 * len(f) // 2  # closed surface: each edge in two faces


def test_jit_fallback_without_numba(monkeypatch):
    """facerecon.jit without numba: HAVE_NUMBA False, prange = range, njit a no-op in both forms."""
    import importlib.util
    import sys

    from facerecon import jit

    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    spec = importlib.util.spec_from_file_location("_facerecon_jit_without_numba", jit.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert not mod.HAVE_NUMBA and mod.prange is range

    def f(x):
        return x + 1

    assert mod.njit(f) is f and mod.njit(cache=True, parallel=True)(f) is f


def test_mean_rotation_of_symmetric_passes_and_weights():
    from facerecon.geometry.rotations import axis_angle_to_matrix, mean_rotation

    g = torch.Generator().manual_seed(2)
    R = axis_angle_to_matrix(torch.randn(3, generator=g, dtype=torch.float64)).numpy()
    a = axis_angle_to_matrix(torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)).numpy()
    passes = [R @ a, R @ a.T]  # +-0.1 rad about one axis: the mean is R exactly
    np.testing.assert_allclose(mean_rotation(passes), R, atol=1e-12)
    np.testing.assert_allclose(mean_rotation(passes, [1.0, 0.0]), R @ a, atol=1e-12)
    M = mean_rotation(np.stack([R, R @ a, R @ a @ a]))
    np.testing.assert_allclose(M @ M.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(M, R @ a, atol=1e-12)  # about one axis the chordal mean is the middle one
