import math

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
