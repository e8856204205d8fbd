"""PRNet: UV position maps (rasterization, read-back, conventions), weight mask, networks, training
pairs and loop, the method."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.rotations import euler_to_matrix
from facerecon.prnet import uv as U
from facerecon.prnet.nets import ENCODERS, PRNet, count_parameters

CAM = PerspectiveCamera.deep3d()


def posed(model, angles_deg=(10.0, -35.0, 5.0), t=(2.0, -3.0, 0.0)):
    """(1, V, 3) the model's mean face posed in the deep3d camera's world frame (mm)."""
    R = euler_to_matrix(torch.tensor([[math.radians(a) for a in angles_deg]], dtype=torch.float64))
    v = model.mean_shape.double()[None] @ R.transpose(1, 2) + torch.tensor(t, dtype=torch.float64)
    return v, R


# -- rasterization and maps on a closed-form layout ---------------------------------------------------

def test_a_linear_function_round_trips_exactly_through_a_two_triangle_square():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    R = 16
    fid, bary, inside = U.rasterize_uv(uv, faces, R)
    assert inside.all() and (fid >= 0).all()
    assert np.allclose(bary.sum(-1), 1.0, atol=1e-6)
    layout = U.UVLayout(R, fid, bary, inside, faces, U.uv_to_texel(uv, R).astype(np.float32))
    # Positions linear in (u, v): every texel of the map holds the same linear function exactly.
    pos = torch.tensor([[[3.0, 1.0, -2.0], [13.0, 1.0, 0.0], [13.0, 21.0, 4.0], [3.0, 21.0, 2.0]]], dtype=torch.float64)
    m = U.render_map(layout, pos)
    ys, xs = np.mgrid[0:R, 0:R]
    u, v = (xs + 0.5) / R, 1 - (ys + 0.5) / R
    expect = np.stack([3 + 10 * u, 1 + 20 * v, -2 + 2 * u + 4 * v])
    assert np.allclose(m[0].numpy(), expect, atol=1e-5)
    # Corners sit half a texel outside the centres: the border padding reads the nearest texel, so
    # compare at interior points instead, where bilinear reads of a linear map are exact.
    pts = torch.tensor([[2.3, 7.7], [10.0, 3.25], [14.5, 14.5]], dtype=torch.float64)
    got = U.sample_map(m, pts)[0].numpy()
    uu, vv = (pts[:, 0].numpy() + 0.5) / R, 1 - (pts[:, 1].numpy() + 0.5) / R
    assert np.allclose(got, np.stack([3 + 10 * uu, 1 + 20 * vv, -2 + 2 * uu + 4 * vv], 1), atol=1e-5)


def test_dilated_texels_extrapolate_the_triangle_linearly():
    uv = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75]], np.float32)
    fid, bary, inside = U.rasterize_uv(uv, np.array([[0, 1, 2]]), 32, dilate=1.5)
    filled = fid >= 0
    assert filled.sum() > inside.sum()
    # Outside texels have some negative weight, and none is farther than 1.5 texels from an edge.
    out = filled & ~inside
    assert (bary[out].min(-1) < 0).all()
    # The legs are 16 texels long: barycentrics 1 and 2 × 16 are distances to the legs.
    assert (bary[out][:, 1:].min(-1) * 16.0 >= -1.5 - 1e-4).all()
    # Extrapolation is linear: the weights still sum to 1 and reproduce the texel position.
    P = U.uv_to_texel(uv, 32)
    ys, xs = np.nonzero(out)
    assert np.allclose(bary[out] @ P, np.stack([xs, ys], 1), atol=1e-4)


def test_position_conventions_invert_exactly():
    v = torch.randn(2, 50, 3, dtype=torch.float64) * 60
    p = U.positions_from_world(v, CAM)
    assert torch.allclose(U.world_from_positions(p, CAM), v, atol=1e-9)
    scr = CAM.project(v)
    assert torch.allclose(U.positions_from_screen(scr, CAM), p, atol=1e-9)
    # Nearer the camera (larger world z) is larger z; at the origin z is S / 2; scale focal / distance.
    origin = U.positions_from_world(torch.zeros(1, 1, 3, dtype=torch.float64), CAM)
    assert origin[0, 0, 2] == pytest.approx(112.0)
    dz = U.positions_from_world(torch.tensor([[[0.0, 0.0, 10.0]]], dtype=torch.float64), CAM)[0, 0, 2] - 112.0
    assert dz == pytest.approx(10.0 * CAM.focal / CAM.distance)


@pytest.mark.parametrize("size,bound_face,bound_lm", [(128, 0.65, 0.4), (256, 0.33, 0.2)])
def test_ict_mesh_map_mesh_round_trip(ict_model, size, bound_face, bound_lm):
    """mesh → map → mesh on the ICT face (yaw −35°): read-back error in crop px (≈ mm at this camera).
    Measured: face mean 0.55 / 0.27 px at R = 128 / 256, median 0.09 / 0.04; 68 landmarks 0.29 / 0.13."""
    from facerecon.prnet.train import face_vertex_mask

    layout = U.uv_layout(ict_model, size)
    v, _ = posed(ict_model)
    pos = U.positions_from_world(v, CAM)
    back = U.read_vertices(layout, U.render_map(layout, pos))
    err = (back - pos).norm(dim=-1)[0]
    face = face_vertex_mask(ict_model)
    assert err[face].mean() < bound_face, err[face].mean()
    assert err[face].median() < bound_face / 5, err[face].median()
    assert err[ict_model.landmarks68].mean() < bound_lm, err[ict_model.landmarks68].mean()
    assert np.isfinite(layout.vertex_xy).all()
    assert layout.mask.mean() > 0.9  # the ICT face layout covers ~95 % of its UV square


def test_weight_mask_ratios(ict_model):
    w = U.model_weight_mask(ict_model, 128)
    assert set(np.unique(w)) == {0.0, 3.0, 4.0, 16.0}
    layout = U.uv_layout(ict_model, 128)
    assert (w[~layout.filled] == 0).all()
    # Keypoint texels: at most 2 × 2 per landmark, at least one each.
    n16 = int((w == 16).sum())
    assert 68 <= n16 <= 4 * 68
    xy = layout.vertex_xy[ict_model.landmarks68.numpy()]
    for x, y in xy:
        assert w[int(np.floor(y)), int(np.floor(x))] == 16
    # The nose tip region (feature) is 4, the cheek (skin) 3, the neck (other) 0.
    from facerecon.models.annotations import PART_NAMES, annotations_for

    parts = annotations_for(ict_model).vertex_parts
    nose = np.flatnonzero(parts == PART_NAMES.index("nose"))
    vals = [w[round(float(y)), round(float(x))] for x, y in layout.vertex_xy[nose]]
    assert np.mean(np.isin(vals, (4.0, 16.0))) > 0.8


# -- networks --------------------------------------------------------------------------------------

#: Parameter counts (decoder width 1.0): a change here changes every shipped weights file.
PARAMS = {"baseline": 10_307_937, "mobilenetv2": 8_693_665, "resnet18": 17_893_601, "mobilenetv1_3ddfa": 7_535_681}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_network_shapes_and_parameters(encoder):
    net = PRNet(encoder).eval()
    assert count_parameters(net) == PARAMS[encoder]
    with torch.no_grad():
        for size in (128, 256):
            x = torch.rand(1, 3, size, size)
            assert net.encoder((x - net.mean) / net.std).shape == (1, 512, size // 32, size // 32)
            y = net(x)
            assert y.shape == (1, 3, size, size) and (y > 0).all() and (y < 1).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.rand(1, 3, 100, 100))


def test_decoder_has_17_transposed_convolutions_and_width_scales_it():
    from facerecon.prnet.nets import Decoder

    d = Decoder(512, 1.0)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 17 and sum(c.stride[0] == 2 for c in convs) == 5
    assert [c.out_channels for c in convs[-3:]] == [3, 3, 3]
    assert count_parameters(Decoder(512, 0.5)) < count_parameters(d) / 2.5
    wide = [m for m in Decoder(512, 1.0, head=16).modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(wide) == 17 and [c.out_channels for c in wide[-3:]] == [16, 16, 3]


def test_weights_round_trip_keeps_the_configuration(tmp_path):
    from facerecon.prnet.model import PositionNet, load_prnet, save_weights

    net = PositionNet("mobilenetv1_3ddfa", 0.25, 64, head=8).eval()
    net.set_prior(torch.rand(3, 64, 64) * 100)
    back = load_prnet(save_weights(net, tmp_path / "w.pt", half=False))
    assert back.config == {"encoder": "mobilenetv1_3ddfa", "width": 0.25, "head": 8, "size": 64}
    x = np.random.default_rng(0).integers(0, 255, (1, 224, 224, 3), dtype=np.uint8)
    assert torch.allclose(back.predict_maps(x), net.predict_maps(x), atol=1e-4)


# -- decoding, training pairs, training --------------------------------------------------------------

def test_decode_recovers_pose_landmarks_and_mesh(ict_model):
    from facerecon.geometry.rotations import matrix_to_euler
    from facerecon.prnet.model import decode_maps

    layout = U.uv_layout(ict_model, 256)
    v, R = posed(ict_model, (5.0, 30.0, -8.0))
    maps = U.render_map(layout, U.positions_from_world(v, CAM)).float()
    dec = decode_maps(ict_model, layout, maps, CAM)
    ang = torch.rad2deg(matrix_to_euler(dec.rotation))[0]
    assert torch.allclose(ang, torch.tensor([5.0, 30.0, -8.0], dtype=ang.dtype), atol=0.3)
    assert dec.scale[0] == pytest.approx(1.0, abs=0.01)
    lm_true = CAM.project(ict_model.landmarks(ict_model.mean_shape.double()[None]) @ R.transpose(1, 2)
                          + torch.tensor([2.0, -3.0, 0.0], dtype=torch.float64))[0, :, :2]
    assert (dec.lm68_crop[0] - lm_true).norm(dim=-1).mean() < 0.5
    # v_world = R v_model + t
    re = torch.einsum("ij,vj->vi", dec.rotation[0], dec.vertices_model[0]) + dec.translation[0]
    assert torch.allclose(re, dec.vertices_world[0], atol=1e-6)


def _fake_engine(root, model, n=6):
    """A tiny data-engine folder: the mean face at random poses over noise images (train and val)."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "samples").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        v, _ = posed(model, tuple(rng.uniform(-30, 30, 3)))
        scr = CAM.project(v)[0].float().numpy()
        lm = CAM.project(model.landmarks(model.mean_shape.double()[None]) @ torch.eye(3, dtype=torch.float64))[0, :, :2]
        cam = np.array([CAM.focal, CAM.cx, CAM.cy, CAM.width, CAM.height, CAM.distance, CAM.near])
        np.savez(root / "samples" / f"s{i}.npz", vertices_px=scr, camera=cam, vertices_world=v[0].float().numpy(),
                 lm68=lm.float().numpy())
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(root / "images" / f"s{i}.jpg")
        rows.append({"status": "ok", "split": "val" if i >= n - 2 else "train", "image": f"images/s{i}.jpg",
                     "sample": f"samples/s{i}.npz"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')


def test_augmentation_moves_image_and_map_alike(ict_model, tmp_path):
    from facerecon.prnet.data import Augment, EngineMaps

    _fake_engine(tmp_path / "eng", ict_model)
    layout = U.uv_layout(ict_model, 128)
    plain = EngineMaps([tmp_path / "eng"], "train", layout)
    aug = EngineMaps([tmp_path / "eng"], "train", layout, Augment(rot_deg=15, scale=0.1, shift_px=10))
    assert len(plain) == 4  # 4 train rows; the torn last line is ignored
    _, m0, _ = plain[1]
    _, m1, _ = aug[1]
    filled = torch.as_tensor(layout.filled)
    p0, p1 = m0[:, filled].T.double(), m1[:, filled].T.double()
    # The augmented map is a 2-D similarity of the plain one in x, y, with z scaled about S / 2 alike.
    A = torch.cat([p0[:, :2], torch.ones(len(p0), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(A, p1[:, :2]).solution
    assert (A @ sol - p1[:, :2]).abs().max() < 1e-3
    scale = float(torch.linalg.det(sol[:2].T)) ** 0.5
    zmask = (p0[:, 2] - 112).abs() > 5
    assert torch.allclose((p1[zmask, 2] - 112) / (p0[zmask, 2] - 112),
                          torch.full((int(zmask.sum()),), scale, dtype=torch.float64), atol=1e-3)
    assert abs(scale - 1) > 1e-3


def test_training_runs_validates_checkpoints_and_resumes(ict_model, tmp_path):
    from facerecon.prnet.model import load_prnet
    from facerecon.prnet.train import PrnetTrainConfig, export_prnet, train_prnet

    _fake_engine(tmp_path / "eng", ict_model)
    cfg = PrnetTrainConfig(engine=[str(tmp_path / "eng")], out=str(tmp_path / "run"), encoder="mobilenetv2",
                           width=0.25, size=64, steps=2, batch=2, val_every=2, val_samples=2, log_every=1)
    res = train_prnet(cfg)
    assert res["step"] == 2 and res["last_val"]["n"] == 2 and math.isfinite(res["best"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "step" in x] == [1, 2]
    cfg.steps = 3
    res = train_prnet(cfg, resume=True)
    assert res["step"] == 3
    w = export_prnet(tmp_path / "run" / "best.pt", tmp_path / "w.pt")
    net = load_prnet(w)
    assert net.size == 64 and net.config["width"] == 0.25
    assert all(v.dtype == torch.float16 for v in torch.load(w, weights_only=True)["model"].values()
               if v.is_floating_point())


def test_untrained_position_net_outputs_its_prior():
    from facerecon.prnet.model import PositionNet

    net = PositionNet("mobilenetv2", 0.25, 64).eval()
    mean = torch.rand(3, 64, 64) * 200
    net.set_prior(mean)
    crops = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    assert torch.allclose(net.predict_maps(crops), mean.expand(2, -1, -1, -1), atol=1e-2)


def test_dense_error_is_similarity_invariant():
    from facerecon.prnet.train import dense_error_mm, nme68

    g = torch.randn(1, 100, 3, dtype=torch.float64) * 50
    R = euler_to_matrix(torch.tensor([[0.3, -0.5, 0.2]], dtype=torch.float64))
    p = 1.3 * g @ R.transpose(1, 2) + 7.0
    assert dense_error_mm(p, g)[0] < 1e-9
    lm = torch.rand(1, 68, 2, dtype=torch.float64) * 100
    shift = lm + torch.tensor([3.0, 4.0], dtype=torch.float64)
    wh = lm.max(1).values - lm.min(1).values
    assert nme68(shift, lm)[0] == pytest.approx(500.0 / float((wh[0, 0] * wh[0, 1]).sqrt()))


# -- the method ----------------------------------------------------------------------------------------

def test_missing_weights_is_an_asset_error(tmp_path, monkeypatch):
    from facerecon.errors import AssetError
    from facerecon.prnet import model as M

    monkeypatch.setattr(M, "default_weights_paths", lambda: [tmp_path / "none.pt"])
    with pytest.raises(AssetError, match="no PRNet weights"):
        M.load_prnet()
    (tmp_path / "bad.pt").write_bytes(b"not a file")
    with pytest.raises(AssetError, match="bad.pt"):
        M.load_prnet(tmp_path / "bad.pt")


def test_method_reconstructs_from_a_perfect_map(ict_model, tmp_path):
    """The method's decoding with a network stand-in that outputs the true map of a posed mean face."""
    from facerecon.align import Crop
    from facerecon.detect.base import Face
    from facerecon.methods import MethodContext, build_method
    from facerecon.prnet.model import PositionNet

    layout = U.uv_layout(ict_model, 128)
    v, _ = posed(ict_model, (0.0, 20.0, 0.0))
    true_map = U.render_map(layout, U.positions_from_world(v, CAM)).float()

    class Fixed(PositionNet):
        def predict_maps(self, crops):
            return true_map.expand(len(crops), -1, -1, -1)

    net = Fixed("mobilenetv2", 0.25, 128)
    ctx = MethodContext(ict_model, CAM, torch.device("cpu"))
    m = build_method("prnet", ctx, weights=net)
    img = np.full((224, 224, 3), 128, np.uint8)
    img[:, 112:] = 200
    crop = Crop(image=img, M=np.array([[1.0, 0, 0], [0, 1.0, 0]]), M_inv=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                lm5=None, lm68=None, original_shape=(224, 224), source="x.png")
    face = Face(box=np.array([50, 50, 170, 170], np.float32), score=1.0, lm5=np.zeros((5, 2), np.float32))
    r = m.reconstruct([crop], [face])[0]
    assert r.method == "prnet" and r.params is None
    assert r.pose_deg["yaw"] == pytest.approx(20.0, abs=0.5)
    assert r.vertices.shape == (ict_model.n_vertices, 3)
    lm = CAM.project(torch.as_tensor(r.vertices, dtype=torch.float64)[ict_model.landmarks68])[:, :2]
    assert np.abs(r.lm68_crop - lm.numpy()).mean() < 3.0  # the offsets move them by at most a few px
    # Colour from the photo through the map: vertices left of x = 111.5 read 128, right 200.
    x = U.positions_from_world(v, CAM)[0, :, 0].numpy()
    assert np.allclose(r.albedo[x < 100], 128 / 255, atol=0.02) and np.allclose(r.albedo[x > 124], 200 / 255, atol=0.02)
    paths = r.save(tmp_path, ["obj", "json"])
    assert any(p.suffix == ".obj" for p in paths)
    # 3-D landmarks for the 3-D NME: x, y are the 2-D landmarks; z the map's own z up to a shift
    # (the identity crop: the image camera is the crop camera).
    from facerecon.eval.methods import reconstruction_landmarks_3d

    l3 = reconstruction_landmarks_3d(r)
    assert np.abs(l3[:, :2] - r.lm68).max() < 0.01  # offsets: scaled by the fit in lm68, not here
    zmap = U.positions_from_world(torch.as_tensor(r.landmark_sets()["lm68"]["posed_mm"], dtype=torch.float64)[None],
                                  CAM)[0, :, 2].numpy()
    assert np.allclose(l3[:, 2] - l3[:, 2].mean(), zmap - zmap.mean(), atol=1e-6)


def test_nme3d_closed_form():
    from facerecon.eval.aflw2000 import nme3d

    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 100, (2, 68, 3))
    gt[:, :, :2] = gt[:, :, :2] * np.array([1.0, 0.64])  # box 100 x 64 (nearly): norm = sqrt(w h)
    pred = gt.copy()
    pred[..., 2] += 37.0  # a depth offset is free (z centred)
    assert np.allclose(nme3d(pred, gt), 0.0)
    pred[..., 0] += 3.0
    pred[0, :, 2] += np.where(np.arange(68) % 2, 4.0, -4.0)  # ±4 in z (mean 0): per point sqrt(3² + 4²) = 5
    wh = gt[..., :2].max(1) - gt[..., :2].min(1)
    norm = np.sqrt(wh[:, 0] * wh[:, 1])
    assert np.allclose(nme3d(pred, gt), [500.0 / norm[0], 300.0 / norm[1]])
