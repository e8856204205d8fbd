"""VRN: voxelisation against closed forms, marching cubes, the network's shapes, the loss, a training
smoke run on a synthetic engine folder, weights round trip, ICP, and the method's registration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from facerecon.errors import AssetError, FaceReconError
from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.mesh import icosphere
from facerecon.vrn import data as vdata
from facerecon.vrn.mesh import icp_similarity, marching_cubes, sample_surface, surface_error, volume_to_mesh
from facerecon.vrn.nets import VRN, VRNConfig, count_parameters
from facerecon.vrn.train import VRNTrainConfig, export_weights, train_vrn, vrn_loss
from facerecon.vrn.voxel import (
    REDUCED,
    VoxelSpec,
    flip_volume,
    iou,
    visible_vertices,
    voxelize,
    voxelize_sample,
)

skimage = pytest.importorskip("skimage", reason="VRN meshing needs scikit-image (extra 'vrn' / 'dev')")


def sphere(subdiv: int = 5) -> tuple[np.ndarray, np.ndarray]:
    v, f = icosphere(subdiv, 1.0, dtype=torch.float64)
    return v.numpy(), f.numpy().astype(np.int64)


SPEC = VoxelSpec(96, 96)
C = np.array([47.3, 48.1, 47.7])  # off the voxel centres on purpose


@pytest.mark.parametrize("axes", [(30.0, 30.0, 30.0), (36.0, 24.0, 18.0)])
def test_voxelised_sphere_and_ellipsoid_volume(axes):
    """Counted voxels ≈ 4/3 π a b c within 1 % at radii of 18-36 voxels (a closed mesh, 'surface' fill)."""
    v, f = sphere()
    vol = voxelize(v * np.array(axes) + C, f, SPEC, fill="surface")
    exact = 4.0 / 3.0 * math.pi * np.prod(axes)
    assert vol.dtype == np.uint8 and vol.shape == (96, 96, 96)
    assert abs(vol.sum() / exact - 1) < 0.01


def test_plane_fill_of_a_hemisphere_is_its_solid():
    """An open front hemisphere filled to the plane through its deepest point: 2/3 π r³ within 2 %."""
    v, f = sphere()
    front = v[:, 2] <= 1e-9  # z grows away from the camera: the front half is z <= 0
    keep = front[f].all(1)
    r = 30.0
    vol = voxelize(v * r + C, f[keep], SPEC, fill="plane")
    assert abs(vol.sum() / (2.0 / 3.0 * math.pi * r ** 3) - 1) < 0.02


def test_marching_cubes_area_and_winding():
    """Marching cubes of the (σ = 1 voxel smoothed) sphere volume: area 4πr² within 2 %, normals outward;
    the binary volume's staircase overestimates the area by < 10 %."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import mesh_surface_area

    from facerecon.geometry.mesh import vertex_normals

    v, f = sphere(4)
    r = 30.0
    vol = voxelize(v * r + C, f, SPEC, fill="surface").astype(np.float32)
    g, tri = marching_cubes(gaussian_filter(vol, 1.0))
    area = mesh_surface_area(g, tri)
    assert abs(area / (4 * math.pi * r ** 2) - 1) < 0.02
    assert abs(np.linalg.norm(g - C, axis=1).mean() - r) < 0.3
    gb, tb = marching_cubes(vol)
    assert 1.0 < mesh_surface_area(gb, tb) / (4 * math.pi * r ** 2) < 1.10
    # World axes (y up, z towards the camera) = grid with y and z negated.
    w = g * np.array([1.0, -1.0, -1.0])
    n = vertex_normals(torch.from_numpy(w)[None], torch.from_numpy(tri))[0].numpy()
    assert ((n * (w - C * np.array([1.0, -1.0, -1.0]))).sum(1) > 0).mean() > 0.999


def test_mesh_volume_mesh_round_trip_px():
    """Sphere -> volume -> marching cubes: every recovered vertex within 0.6 px of the true surface,
    mean < 0.15 px; and crop <-> grid coordinates invert exactly."""
    from scipy.ndimage import gaussian_filter

    v, f = sphere(4)
    r = 25.0
    vol = voxelize(v * r + C, f, SPEC, fill="surface").astype(np.float32)
    g, _ = marching_cubes(gaussian_filter(vol, 0.7))
    d = np.abs(np.linalg.norm(g - C, axis=1) - r)
    assert d.mean() < 0.15 and d.max() < 0.6
    rng = np.random.default_rng(0)
    px = np.c_[rng.uniform(0, 223, (50, 2)), rng.uniform(900, 1000, 50)]
    grid, front = REDUCED.to_grid(px)
    assert np.allclose(REDUCED.to_crop(grid, front), px)
    assert np.isclose(grid[:, 2].min(), REDUCED.margin)


def test_flip_and_augmented_grid_are_consistent():
    """Mirroring the mesh mirrors the volume exactly; the identity augmentation is `to_grid`."""
    v, f = sphere(3)
    g = v * np.array([20.0, 25.0, 15.0]) + np.array([40.2, 50.7, 30.0])
    a = voxelize(g, f, SPEC, fill="plane")
    m = g.copy()
    m[:, 0] = SPEC.size - 1 - m[:, 0]
    assert np.array_equal(voxelize(m, f, SPEC, fill="plane"), flip_volume(a))
    px = np.c_[np.random.default_rng(1).uniform(0, 223, (20, 2)), np.linspace(950, 1050, 20)]
    ga, _ = vdata.grid_vertices(px, vdata.crop_to_grid(REDUCED), REDUCED)
    assert np.allclose(ga, REDUCED.to_grid(px)[0])
    assert iou(a, a) == 1.0 and iou(a, np.zeros_like(a)) == 0.0


def test_visible_vertices_of_a_sphere():
    """The front half of a sphere is visible, the back half hidden."""
    v, f = sphere(3)
    px = v * np.array([60.0, 60.0, 60.0]) + np.array([111.5, 111.5, 1000.0])
    vis = visible_vertices(px, f)
    assert vis[v[:, 2] < -0.2].all() and not vis[v[:, 2] > 0.2].any()


def test_network_shapes_full_and_reduced():
    full = VRN(VRNConfig.full())
    assert 6e6 < count_parameters(full) < 8e6
    with torch.device("meta"):
        out = VRN(VRNConfig.full())(torch.empty(1, 3, 192, 192))
    assert len(out) == 2 and tuple(out[-1].shape) == (1, 200, 192, 192)
    small = VRN(VRNConfig(size=32, slices=10, features=16, stacks=2, depth=2)).eval()
    with torch.no_grad():
        o = small(torch.rand(2, 3, 32, 32))
    assert [tuple(t.shape) for t in o] == [(2, 10, 32, 32)] * 2
    with pytest.raises(ValueError):
        small(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError):
        VRN(VRNConfig(size=40, depth=4))


def test_loss_closed_form():
    """Zero logits: ln 2 per voxel per stack; confident correct logits: ~0."""
    vol = (torch.rand(2, 4, 8, 8) > 0.5).to(torch.uint8)
    z = torch.zeros(2, 4, 8, 8)
    assert torch.isclose(vrn_loss([z, z], vol), torch.tensor(2 * math.log(2)))
    good = (vol.float() * 2 - 1) * 30
    assert vrn_loss([good], vol) < 1e-6


def write_engine(root, n: int = 6) -> None:
    """A synthetic data-engine folder: spheres/ellipsoids ("model" = sphere) with crops and manifest."""
    from PIL import Image

    v, _f = sphere(3)
    (root / "images").mkdir(parents=True)
    (root / "samples").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    cam = PerspectiveCamera.deep3d()
    for i in range(n):
        ax = rng.uniform(50, 70, 3)
        px = v * ax + np.array([111.5 + rng.uniform(-5, 5), 111.5, 1000.0])
        world = cam.unproject(torch.from_numpy(px[:, :2]), torch.from_numpy(px[:, 2])).numpy()
        img = np.zeros((224, 224, 3), np.uint8)
        yy, xx = np.mgrid[:224, :224]
        img[((xx - px[:, 0].mean()) / ax[0]) ** 2 + ((yy - 111.5) / ax[1]) ** 2 < 1] = (200, 150, 120)
        Image.fromarray(img).save(root / "images" / f"s{i}.jpg")
        np.savez(root / "samples" / f"s{i}.npz", vertices_px=px.astype(np.float32),
                 vertices_world=world.astype(np.float32), model=np.str_("sphere"),
                 camera=np.array([cam.focal, cam.cx, cam.cy, 224, 224, cam.distance, cam.near]))
        rows.append({"status": "ok", "sample": f"samples/s{i}.npz", "image": f"images/s{i}.jpg",
                     "split": "val" if i >= n - 2 else "train", "yaw": 0.0})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def engine(tmp_path, monkeypatch):
    _, f = sphere(3)
    monkeypatch.setattr(vdata, "model_faces", lambda name: f)
    root = tmp_path / "engine"
    write_engine(root)
    return root


def test_engine_dataset_items(engine):
    ds = vdata.EngineVolumes([engine], "train", VoxelSpec(32, 32), augment=True)
    assert len(ds) == 4
    it = ds[0]
    assert it["image"].shape == (3, 32, 32) and it["image"].dtype == torch.float32
    assert it["volume"].shape == (32, 32, 32) and it["volume"].dtype == torch.uint8
    assert 0 < it["volume"].float().mean() < 1
    with pytest.raises(FaceReconError, match="no manifest"):
        vdata.EngineVolumes([engine / "images"], "train")


def test_training_smoke_resume_export_and_load(engine, tmp_path):
    """3 steps, resume to 4, export float16 weights, load them; the predictor's volume is the net's."""
    from facerecon.vrn.predict import load_vrn

    net = VRNConfig(size=32, slices=32, features=16, stacks=1, depth=2)
    cfg = VRNTrainConfig(engine=[str(engine)], out=str(tmp_path / "run"), net=net, steps=3, batch=2, val_every=3,
                         val_limit=2, val_surface=1, ckpt_every=2)
    res = train_vrn(cfg)
    assert res["step"] == 3 and np.isfinite(res["loss"]) and 0 <= res["val"]["iou"] <= 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 3 and "val_iou" in lines[-1]
    res = train_vrn(VRNTrainConfig(**{**cfg.__dict__, "steps": 4}), resume=True)
    assert res["step"] == 4
    w = export_weights(tmp_path / "run" / "last.pt", tmp_path / "w.pt")
    pred = load_vrn(w)
    assert pred.spec.size == 32 and pred.spec.depth == 32 and 900 < pred.front_mm < 1000
    crop = np.zeros((1, 224, 224, 3), np.uint8)
    vol = next(pred.predict_volumes(crop))
    assert vol.shape == (32, 32, 32) and vol.dtype == np.uint8
    with pytest.raises(FaceReconError, match="no checkpoint"):
        train_vrn(VRNTrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "none")}), resume=True)


def test_cli_train_smoke(engine, tmp_path):
    from facerecon.cli.main import main

    rc = main(["-q", "vrn", "train", "--engine", str(engine), "--out", str(tmp_path / "r"), "--size", "32",
               "--slices", "16", "--features", "16", "--depth", "2", "--steps", "3", "--batch", "2",
               "--val-every", "0", "--export", str(tmp_path / "w.pt")])
    assert rc == 0 and (tmp_path / "w.pt").is_file()


def test_missing_weights_is_an_asset_error(tmp_path, monkeypatch):
    from facerecon.vrn.predict import load_vrn

    monkeypatch.setenv("FACERECON_VRN", str(tmp_path / "nope.pt"))
    monkeypatch.setenv("FACERECON_ASSETS", str(tmp_path))
    monkeypatch.setattr("facerecon.vrn.predict.default_weights_paths", lambda: [tmp_path / "nope.pt"])
    with pytest.raises(AssetError, match="no VRN weights"):
        load_vrn()
    bad = tmp_path / "bad.pt"
    torch.save({"x": 1}, bad)
    with pytest.raises(AssetError, match="not a facerecon VRN"):
        load_vrn(bad)


def test_icp_and_surface_error_closed_forms():
    """ICP recovers a known similarity; a sphere of radius r + 1 (rigid ICP) is 1 mm from radius r."""
    v, f = sphere(4)
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("xyz", [2, -3, 1.5], degrees=True).as_matrix()  # ICP is local: a small start error
    # An egg with a bump: no symmetry for ICP to slide along.
    egg = v * np.array([40.0, 50.0, 30.0]) + 10.0 * np.c_[v[:, 1] ** 2, v[:, 2] * v[:, 0], np.zeros(len(v))]
    dst = 1.05 * egg @ R.T + np.array([3.0, -2.0, 1.0])
    src = sample_surface(egg, f, per_face=8)  # the dense side (see icp_similarity)
    s, Rr, _t = icp_similarity(src, dst, iters=100)
    assert abs(s - 1.05) < 2e-3 and np.abs(Rr - R).max() < 5e-3
    big = v * 51.0 + np.array([0, 0, 500.0])
    small = v * 50.0 + np.array([0, 0, 500.0])
    e = surface_error(big, f, small, front_only=False, scale=False)
    assert abs(e - 1.0) < 0.05
    assert surface_error(small + rng.normal(0, 0.01, small.shape) * 0, f, small, front_only=False) < 0.05


def test_volume_to_mesh_is_in_the_crop_cameras_mm():
    """A voxelised sphere sample meshes back to the sphere in world mm (mean radius error < 0.3 mm)."""
    from scipy.ndimage import gaussian_filter

    v, f = sphere(4)
    cam = PerspectiveCamera.deep3d()
    centre_px = np.array([111.5, 100.0, 1000.0])
    px = v * 40.0 + centre_px  # depth in mm, x, y in px: a ~40 mm sphere at 1 m (1.015 px/mm)
    world_c = cam.unproject(torch.tensor(centre_px[:2]), torch.tensor(centre_px[2])).numpy()
    spec = VoxelSpec(112, 112)
    vol, front = voxelize_sample(px, f, spec, fill="surface")
    verts, _ = volume_to_mesh(gaussian_filter(vol.astype(np.float32), 1.0), spec, front, cam)
    rad = np.linalg.norm(verts - world_c, axis=1)
    # x, y in px map to mm at ~1/1.015 mm per px; z slices to mm exactly: radius ≈ 40 mm (within perspective).
    assert abs(rad.mean() - 40.0) < 1.0 and rad.std() < 1.0


def test_method_registration_recovers_pose_and_landmarks(ict_model):
    """The 'vrn' method on the true volume of a posed model face: the registration finds the pose
    (< 4°) and the 68 landmarks (< 2.5 px) back; the result carries the note and the correspondence."""
    from scipy.ndimage import gaussian_filter

    from facerecon.align import Crop
    from facerecon.detect.base import Face
    from facerecon.geometry.rotations import euler_to_matrix
    from facerecon.methods import MethodContext, build_method

    model, cam = ict_model, PerspectiveCamera.deep3d()
    p = model.zeros(1)
    rot = torch.tensor([[0.1, 0.5, -0.05]], dtype=p.rotation.dtype)
    p = p.replace(rotation=rot, translation=torch.tensor([[2.0, 5.0, 0.0]], dtype=p.rotation.dtype))
    with torch.no_grad():
        world = model(p).vertices_world[0]
        px = cam.project(world).double().numpy()
        lm = model.project_landmarks(p, cam)[0].double().numpy()
    faces = model.faces.numpy()

    class TrueVolume:
        spec = REDUCED
        front_mm = float(px[:, 2].min())

        def predict_volumes(self, crops):
            for _ in crops:
                vol, _ = voxelize_sample(px, faces, REDUCED)
                yield (gaussian_filter(vol.astype(np.float32), 1.0) * 255 + 0.5).astype(np.uint8)

    M = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    crop = Crop(np.full((224, 224, 3), 128, np.uint8), M, M, lm68=lm.astype(np.float32), original_shape=(224, 224),
                source="synthetic.jpg")
    face = Face(np.array([0, 0, 224, 224], np.float32), 1.0, np.zeros((5, 2), np.float32), lm.astype(np.float32))
    method = build_method("vrn", MethodContext(model, cam, torch.device("cpu")), weights=TrueVolume(), steps=20)
    rec = method.reconstruct([crop], [face])[0]
    assert rec.method == "vrn" and "registered" in rec.notes["vrn"] and rec.correspondence is not None
    assert np.abs(rec.lm68_crop - lm).mean() < 2.5
    R = euler_to_matrix(torch.tensor([[math.radians(rec.pose_deg[k]) for k in ("pitch", "yaw", "roll")]], dtype=torch.float64))[0]
    cos = (torch.trace(R.T @ euler_to_matrix(rot.double())[0]) - 1) / 2
    assert math.degrees(math.acos(float(cos.clamp(-1, 1)))) < 4.0
    assert rec.topology.name == "vrn-volume" and rec.vertices.shape[1] == 3 and len(rec.triangles) > 1000
    assert np.allclose(rec.to_trimesh().visual.vertex_colors[:, :3], 128, atol=2)
