"""Similarity estimation, warping, Deep3D-style crops and face masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facerecon import assets
from facerecon.align import Crop, align_face, deep3d_lm3d_ref, face_mask, reference_points_2d
from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.transforms2d import (
    compose,
    estimate_similarity,
    invert_affine,
    transform_points,
    warp_image,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
AFLW = SHARED / "data" / "aflw2000-3d-dev" / "AFLW2000"


def _sim(scale, angle, t):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, t[0]], [scale * s, scale * c, t[1]]], dtype=np.float64)


@pytest.fixture(scope="module")
def bfm_lm_file():
    folder = assets.find("bfm-metadata", SHARED / "assets" / "bfm-metadata")
    if folder is None:
        pytest.skip("asset bfm-metadata not found")
    return folder / "similarity_Lm3D_all.mat"


@pytest.fixture(scope="module")
def ref5(bfm_lm_file):
    return deep3d_lm3d_ref(bfm_lm_file)


# ---------------------------------------------------------------- similarity transforms

def test_estimate_similarity_recovers_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (7, 2))
    M = _sim(1.7, 0.4, (-12.5, 33.25))
    np.testing.assert_allclose(estimate_similarity(src, transform_points(M, src)), M, atol=1e-9, rtol=0)
    # No rotation (Deep3D): exact scale + translation recovered.
    M0 = _sim(0.37, 0.0, (5.0, -8.0))
    np.testing.assert_allclose(estimate_similarity(src, transform_points(M0, src), rotation=False), M0, atol=1e-9)
    # A zero weight removes an outlier completely.
    dst = transform_points(M, src)
    dst[3] += 50.0
    w = np.ones(7)
    w[3] = 0.0
    np.testing.assert_allclose(estimate_similarity(src, dst, weights=w), M, atol=1e-9)
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), src[:5])


def test_inverse_and_compose_are_exact():
    M = _sim(2.3, -1.1, (100.0, -40.0))
    inv = invert_affine(M)
    np.testing.assert_allclose(compose(M, inv), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    p = np.array([[3.0, 4.0], [-10.0, 250.5]])
    np.testing.assert_allclose(transform_points(inv, transform_points(M, p)), p, atol=1e-12)
    # torch points go through the same formula, differentiably.
    pt = torch.tensor(p, requires_grad=True)
    out = transform_points(M, pt)
    np.testing.assert_allclose(out.detach().numpy(), transform_points(M, p), atol=1e-12)
    out.sum().backward()
    assert pt.grad is not None


# ---------------------------------------------------------------- warping

def _blob(h, w, cx, cy, sigma=2.0):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))


def _centroid(img):
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float64)
    w = img / img.sum()
    return float((w * xs).sum()), float((w * ys).sum())


def test_warp_image_moves_dot_to_predicted_location():
    img = (_blob(120, 160, 97.0, 41.0) * 255).astype(np.uint8)
    M = _sim(0.8, 0.3, (10.0, 20.0))
    want = transform_points(M, np.array([97.0, 41.0]))
    for arr in (img, img.astype(np.float32) / 255.0):
        out = warp_image(arr, M, (110, 150))
        assert out.dtype == arr.dtype and out.shape == (110, 150)
        got = _centroid(out.astype(np.float64))
        assert np.hypot(got[0] - want[0], got[1] - want[1]) < 0.5
    # torch path (grid_sample) agrees with numpy (antialiasing off: it has none).
    ref = warp_image(img.astype(np.float64), M, (110, 150), antialias=False)
    t = warp_image(torch.tensor(img, dtype=torch.float64)[None], M, (110, 150))[0].numpy()
    np.testing.assert_allclose(t, ref, atol=1e-9)


def test_warp_integer_shift_copies_pixels_and_fills_outside():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    M = np.array([[1.0, 0.0, -5.0], [0.0, 1.0, 3.0]])  # pixel centres land on pixel centres
    out = warp_image(img, M, (30, 40))
    np.testing.assert_array_equal(out[3:, :35], img[:27, 5:])
    assert (out[:3] == 0).all()


def test_warp_downscale_antialiases():
    stripes = np.zeros((200, 200), dtype=np.float64)
    stripes[:, ::2] = 1.0  # 1-pixel stripes alias badly at a 1/4 downscale
    M = _sim(0.25, 0.0, (0.0, 0.0))
    smooth = warp_image(stripes, M, 50)
    assert abs(smooth[5:-5, 5:-5].mean() - 0.5) < 0.05 and smooth[5:-5, 5:-5].std() < 0.05


# ---------------------------------------------------------------- crops

def _synthetic_face(ref_pts_crop, M_true, shape=(300, 400)):
    """A photo whose 5 landmarks are the crop's reference points moved by M_true⁻¹."""
    lm5 = transform_points(invert_affine(M_true), ref_pts_crop)
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    return img, lm5


def test_align_face_crop_round_trip_and_landmarks(ref5):
    cam = PerspectiveCamera.deep3d()
    ref2d = reference_points_2d(ref5, cam)
    # Reference points sit where a frontal face at the origin projects: symmetric about x = 111.5.
    assert abs((ref2d[0, 0] + ref2d[1, 0]) / 2 - 111.5) < 1.0
    M_true = _sim(1.2, 0.0, (-40.0, 12.0))  # enlarging: no antialias blur, plain bilinear
    img, lm5 = _synthetic_face(ref2d, M_true)
    lm68 = np.random.default_rng(3).uniform(0, 300, (68, 2))
    crop = align_face(img, lm5, ref5, lm68=lm68, source="synthetic")
    assert isinstance(crop, Crop) and crop.image.shape == (224, 224, 3) and crop.image.dtype == np.uint8
    np.testing.assert_allclose(crop.M, M_true, atol=1e-9)
    np.testing.assert_allclose(crop.lm5, ref2d, atol=1e-4)
    np.testing.assert_allclose(crop.crop_to_original(crop.lm68), lm68, atol=1e-3)  # lm68 stored as float32
    p = np.array([[0.0, 0.0], [223.0, 223.0], [57.25, 190.5]])
    np.testing.assert_allclose(crop.original_to_crop(crop.crop_to_original(p)), p, atol=1e-9)
    np.testing.assert_allclose(compose(crop.M, crop.M_inv), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    # The crop shows the original: pixel (i, j) of the crop = bilinear sample at M_inv·(j, i).
    q = crop.crop_to_original(np.array([100.0, 80.0]))
    x0, y0 = int(np.floor(q[0])), int(np.floor(q[1]))
    fx, fy = q[0] - x0, q[1] - y0
    f = img.astype(np.float64)
    want = ((1 - fx) * (1 - fy) * f[y0, x0] + fx * (1 - fy) * f[y0, x0 + 1]
            + (1 - fx) * fy * f[y0 + 1, x0] + fx * fy * f[y0 + 1, x0 + 1])
    assert np.abs(crop.image[80, 100].astype(np.float64) - want).max() <= 1.0


def test_deep3d_reference_points(ref5):
    # Deep3D's load_lm3d on similarity_Lm3D_all.mat (decimetres) printed [-0.3115, 0.2904, 0.1338] first.
    np.testing.assert_allclose(ref5[0], [-31.148657, 29.036078, 13.377953], atol=1e-4)
    np.testing.assert_allclose(ref5[2], [0.32535, -4.617932, 55.244243], atol=1e-4)
    assert ref5[0, 0] < 0 < ref5[1, 0]  # image-left eye first


def test_deep3d_method_matches_deep3d_formula(ref5):
    """``method="deep3d"`` puts landmarks where Deep3D's own formula does (up to its integer crop)."""
    img = np.zeros((480, 640, 3), dtype=np.uint8)
    lm5 = np.array([[280.0, 200.0], [360.0, 196.0], [322.0, 250.0], [290.0, 300.0], [352.0, 298.0]])
    crop = align_face(img, lm5, ref5, method="deep3d")
    # Deep3D: POS on y-up landmarks, scale 102/s, continuous landmark formula, then y flipped back.
    h0, w0 = img.shape[:2]
    xp = np.stack([lm5[:, 0], h0 - 1 - lm5[:, 1]], 1)
    x = ref5 / 100.0
    A = np.zeros((10, 8))
    A[0::2, 0:3], A[0::2, 3], A[1::2, 4:7], A[1::2, 7] = x, 1, x, 1
    k = np.linalg.lstsq(A, xp.reshape(-1), rcond=None)[0]
    s = (np.linalg.norm(k[:3]) + np.linalg.norm(k[4:7])) / 2
    w, h = int(w0 * 102 / s), int(h0 * 102 / s)
    lm = (xp - k[[3, 7]] + [w0 / 2, h0 / 2]) * 102 / s - [w / 2 - 112, h / 2 - 112]
    lm_deep3d = np.stack([lm[:, 0], 223 - lm[:, 1]], 1)
    assert np.abs(crop.lm5 - lm_deep3d).max() < 1.5
    # ... and the camera method agrees with it to a few pixels on a frontal face.
    cam_crop = align_face(img, lm5, ref5)
    assert np.abs(cam_crop.lm5 - lm_deep3d).max() < 6.0


# ---------------------------------------------------------------- masks

def _frontal_lm68(bfm_lm_file):
    from scipy.io import loadmat

    lm = np.asarray(loadmat(bfm_lm_file)["lm"], dtype=np.float64) * 100.0
    return reference_points_2d(lm, PerspectiveCamera.deep3d())


def _check_mask(mask, lm68):
    assert mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    h, w = mask.shape

    def at(p):
        return mask[int(np.rint(p[1])), int(np.rint(p[0]))]

    assert at(lm68[30]) > 0.5 and at((lm68[28] + lm68[30]) / 2) > 0.5  # nose
    for cheek in (lm68[[2, 31, 41]].mean(0), lm68[[14, 35, 46]].mean(0)):
        assert at(cheek) > 0.5
    for corner in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
        assert mask[corner[1], corner[0]] == 0
    for eye in (lm68[36:42], lm68[42:48]):
        assert at(eye.mean(0)) == 0
        assert at((eye[1] + eye[5]) / 2) == 0  # between upper and lower lid


def test_face_mask_synthetic(bfm_lm_file):
    lm68 = _frontal_lm68(bfm_lm_file)
    img = np.empty((224, 224, 3), dtype=np.uint8)
    img[:] = (40, 70, 200)  # blue background
    ys, xs = np.mgrid[0:224, 0:224]
    c = lm68[30]
    face = ((xs - c[0]) / 62.0) ** 2 + ((ys - c[1] + 5) / 72.0) ** 2 < 1.0  # skin-coloured ellipse
    img[face] = (205, 150, 125)
    mask = face_mask(img, lm68)
    _check_mask(mask, lm68)
    # Inside the landmark hull but blue (forehead extension beyond the ellipse): rejected by colour.
    top = (lm68[19] + lm68[24]) / 2 + 0.3 * (lm68[17:27].mean(0) - lm68[8])
    probe = top + np.array([0.0, 3.0])
    assert not face[int(probe[1]), int(probe[0])]
    assert mask[int(probe[1]), int(probe[0])] < 0.05
    assert face_mask(img, lm68, skin=False)[int(probe[1]), int(probe[0])] == 1.0


def test_face_mask_real_photo():
    path = AFLW / "image00014.jpg"  # near-frontal AFLW2000-3D dev image (yaw 6°)
    if not path.is_file():
        pytest.skip("AFLW2000-3D dev data not found")
    from PIL import Image
    from scipy.io import loadmat

    img = np.asarray(Image.open(path).convert("RGB"))
    lm68 = np.asarray(loadmat(path.with_suffix(".mat"))["pt3d_68"], dtype=np.float64)[:2].T
    _check_mask(face_mask(img, lm68), lm68)
