"""The exporter registry (`facerecon.io.export`) and, with the ICT asset, its equivalence with the
writer it replaced (`facerecon.outputs.write_reconstruction`, deleted)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image as PILImage

from facerecon.errors import FaceReconError
from facerecon.geometry.mesh import icosphere
from facerecon.io import ExportItem, available_exporters, images_needed, register_exporter
from facerecon.io.atomic import atomic_path
from facerecon.io.export import ALL, EXPORTERS, camera_json, export, exporter

from .conftest import need_asset

S = 32  # crop size of the synthetic item


@pytest.fixture
def registry():
    """Restore the registry after a test that registers exporters."""
    saved = dict(EXPORTERS)
    yield EXPORTERS
    EXPORTERS.clear()
    EXPORTERS.update(saved)


def _item(**kw) -> ExportItem:
    """A 20 mm sphere with per-vertex UVs and stand-in images (distinct constant colours)."""
    v, f = icosphere(2, radius=20.0, dtype=torch.float64)
    v = v.numpy().astype(np.float32)
    f = f.numpy()
    V = len(v)
    rng = np.random.default_rng(0)
    uv = np.stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5, v[:, 1] / 40.0 + 0.5], 1).astype(np.float32)
    img = lambda c, n=3, h=S, w=S: np.full((h, w, n), c, np.uint8)
    cam = SimpleNamespace(focal=1015.0, cx=111.5, cy=111.5, width=224, height=224, distance=1000.0)
    base = {
        "vertices": v, "vertices_posed": v + np.float32([0, 0, 5]), "faces": f,
        "colors": rng.uniform(0, 1, (V, 3)).astype(np.float32),
        "albedo": rng.uniform(0, 1, (V, 3)).astype(np.float32),
        "crop_image": img(10), "lm68_crop": rng.uniform(0, S, (68, 2)).astype(np.float32),
        "lm5_crop": rng.uniform(0, S, (5, 2)).astype(np.float32),
        "lm68_image": rng.uniform(0, 99, (68, 2)).astype(np.float32),
        "pose_deg": {"yaw": 10.5, "pitch": -3.0, "roll": 1.25}, "translation_mm": np.float32([1, 2, 3]),
        "camera": camera_json(cam), "box": np.float32([1, 2, 30, 40]), "uv": uv, "uv_faces": f,
        "coeff": np.arange(12, dtype=np.float32)[None], "detector": "test", "blendshapes": {"jawOpen": 0.5},
        "times": {"fit": 1.234567}, "source": "x.jpg", "model": "sphere",
        "vertices_neutral": v * np.float32(1.1), "landmarks3d": v[:68] * np.float32(0.9),
        "landmarks3d_posed": v[:68] + np.float32([0, 0, 5]),
        "images": {"recon_crop": img(20, 4), "geometry_crop": img(30), "landmarks_crop": img(40),
                   "overlay": img(50, h=40, w=60), "texture": img(60, h=16, w=16), "geometry_side": img(70),
                   "depth_crop": np.full((S, S), 9876, np.uint16), "normals_crop": img(80), "pncc_crop": img(90)},
    }
    return ExportItem(**{**base, **kw})


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".")]


def test_export_writes_every_format(tmp_path):
    import trimesh

    it = _item()
    out = tmp_path / "new" / "dir"
    paths = export(it, out, "f")
    names = [p.name for p in paths]
    assert names == ["f.mat", "f.npz", "f.obj", "f_textured.obj", "f_textured.mtl", "f_textured.png", "f.ply",
                     "f.json", "f_panel.png", "f_overlay.png", "f.glb", "f_posed.obj", "f_neutral.obj",
                     "f_landmarks3d.json", "f_depth.png", "f_normals.png", "f_pncc.png"]
    assert all(p.is_file() for p in paths) and sorted(p.name for p in out.iterdir()) == sorted(names)
    assert _no_temp_files(out)

    # .mat and .npz: Deep3D's fields, in the documented dtypes.
    mat = {k: v for k, v in sio.loadmat(out / "f.mat").items() if not k.startswith("__")}
    with np.load(out / "f.npz") as z:
        npz = dict(z)
    for d in (mat, npz):
        assert set(d) == {"cropped_img", "recon_img", "coeff", "face_shape", "face_shape_posed", "face_texture",
                          "face_color", "lm_68p", "lm_5p", "lm_68p_image", "pose_deg", "trans_mm"}
        assert np.array_equal(d["cropped_img"], it.crop_image) and d["recon_img"].shape == (S, S, 4)
        assert np.array_equal(d["recon_img"], it.images["recon_crop"]) and d["recon_img"].dtype == np.uint8
        assert np.array_equal(d["coeff"], it.coeff) and d["coeff"].dtype == np.float32
        assert np.array_equal(d["face_shape"], it.vertices)
        assert np.array_equal(d["face_shape_posed"], it.vertices_posed)
        assert np.array_equal(d["face_texture"], it.albedo * np.float32(255))
        assert np.array_equal(d["face_color"], it.colors * np.float32(255))
        assert np.array_equal(d["lm_68p"], it.lm68_crop) and np.array_equal(d["lm_5p"], it.lm5_crop)
        assert np.array_equal(d["lm_68p_image"], it.lm68_image)
        assert np.allclose(np.ravel(d["pose_deg"]), [10.5, -3.0, 1.25])
        assert np.array_equal(np.ravel(d["trans_mm"]), [1, 2, 3])

    # Meshes: geometry, topology and colours survive a round trip through trimesh.
    for name in ("f.obj", "f.ply"):
        m = trimesh.load(out / name, process=False)
        assert np.allclose(m.vertices, it.vertices, atol=1e-5) and np.array_equal(m.faces, it.faces)
        assert np.abs(m.visual.vertex_colors[:, :3] / 255.0 - it.colors).max() <= 1 / 255 + 1e-6
    t = trimesh.load(out / "f_textured.obj", process=False)
    assert len(t.faces) == len(it.faces) and t.visual.uv is not None
    assert np.array_equal(np.asarray(t.visual.material.image.convert("RGB")), it.images["texture"])
    assert "map_Kd f_textured.png" in (out / "f_textured.mtl").read_text()

    # The posed and neutral meshes: their own vertices, the same triangles and colours.
    for name, verts in (("f_posed.obj", it.vertices_posed), ("f_neutral.obj", it.vertices_neutral)):
        m = trimesh.load(out / name, process=False)
        assert np.allclose(m.vertices, verts, atol=1e-5) and np.array_equal(m.faces, it.faces), name
        assert np.abs(m.visual.vertex_colors[:, :3] / 255.0 - it.colors).max() <= 1 / 255 + 1e-6

    info = json.loads((out / "f.json").read_text())
    conv = info.pop("camera_convention")
    assert "OpenCV" in conv and "y down" in conv
    assert info == {"source": "x.jpg", "model": "sphere", "pose_deg": {"yaw": 10.5, "pitch": -3.0, "roll": 1.25},
                    "translation_mm": [1.0, 2.0, 3.0],
                    "camera": {"focal_px": 1015.0, "cx": 111.5, "cy": 111.5, "width": 224, "height": 224,
                               "distance_mm": 1000.0},
                    "box": [1.0, 2.0, 30.0, 40.0], "detector": "test", "blendshapes": {"jawOpen": 0.5},
                    "times_s": {"fit": 1.2346}, "schema_version": 2,
                    "intrinsics_K": [[1015.0, 0.0, 111.5], [0.0, 1015.0, 111.5], [0.0, 0.0, 1.0]],
                    "world_to_camera": [[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1000.0],
                                        [0.0, 0.0, 0.0, 1.0]],
                    "depth_png_unit_mm": 0.1}

    panel = np.asarray(PILImage.open(out / "f_panel.png"))
    assert panel.shape == (S, 5 * S, 3)
    for i, c in enumerate((10, 20, 30, 40, 70)):  # crop | overlay RGB | geometry | landmarks | side view
        assert (panel[:, i * S:(i + 1) * S] == c).all()
    depth = np.asarray(PILImage.open(out / "f_depth.png"))
    assert depth.dtype in (np.uint16, np.int32) and (depth == 9876).all()  # 16-bit survives
    for name, c in (("f_normals.png", 80), ("f_pncc.png", 90)):
        im = np.asarray(PILImage.open(out / name))
        assert im.shape == (S, S, 3) and (im == c).all(), name
    assert np.array_equal(np.asarray(PILImage.open(out / "f_overlay.png")), it.images["overlay"])


def test_export_subset_in_fixed_order(tmp_path):
    paths = export(_item(), tmp_path, "g", ["json", "obj", "json"])  # caller's order and repeats don't matter
    assert [p.name for p in paths] == ["g.obj", "g.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "g.obj"]
    assert [p.name for p in export(_item(), tmp_path, "h", "ply")] == ["h.ply"]  # one name as a string


def test_no_coeff_no_field(tmp_path):
    export(_item(coeff=None), tmp_path, "n", ("mat", "npz"))
    assert "coeff" not in sio.loadmat(tmp_path / "n.mat")
    with np.load(tmp_path / "n.npz") as z:
        assert "coeff" not in z.files and "face_shape" in z.files


def test_unknown_formats_name_the_valid_ones(tmp_path):
    with pytest.raises(FaceReconError, match=r"'stl'.*mat, npz, obj, textured, ply, json, panel, overlay, glb, "
                                             r"posed, neutral, landmarks3d, maps"):
        export(_item(), tmp_path / "o", "f", ("obj", "stl"))
    assert not (tmp_path / "o").exists()  # nothing written, not even the folder
    with pytest.raises(FaceReconError, match="choose from mat, npz"):
        exporter("stl")
    with pytest.raises(FaceReconError, match="'x'"):
        images_needed(["x"])
    assert exporter("obj").name == "obj" and exporter("panel").needs == ("recon_crop", "geometry_crop",
                                                                         "landmarks_crop", "geometry_side")


def test_images_needed():
    assert images_needed(("obj", "ply", "json")) == set()
    assert images_needed(("mat",)) == images_needed("npz") == {"recon_crop"}
    assert images_needed(("panel", "overlay")) == {"recon_crop", "geometry_crop", "landmarks_crop", "overlay",
                                                   "geometry_side"}
    assert images_needed(("glb",)) == {"texture"}  # wanted, not needed: rendered when it can be
    assert images_needed(("maps", "posed", "neutral", "landmarks3d")) == {"depth_crop", "normals_crop", "pncc_crop"}
    assert images_needed(ALL) == images_needed() == {"recon_crop", "geometry_crop", "landmarks_crop", "overlay",
                                                     "texture", "geometry_side", "depth_crop", "normals_crop",
                                                     "pncc_crop"}
    assert tuple(available_exporters())[:len(ALL)] == ALL
    assert all(available_exporters()[k] for k in ALL)


def test_missing_images_skip_their_formats(tmp_path):
    it = _item()
    # No photo: no overlay, no texture -> those two formats are skipped, the others written.
    crop_only = {k: v for k, v in it.images.items() if k not in ("overlay", "texture")}
    paths = export(replace(it, images=crop_only), tmp_path / "a", "f")
    assert [p.name for p in paths] == ["f.mat", "f.npz", "f.obj", "f.ply", "f.json", "f_panel.png", "f.glb",
                                       "f_posed.obj", "f_neutral.obj", "f_landmarks3d.json", "f_depth.png",
                                       "f_normals.png", "f_pncc.png"]
    # No UV layout: no textured output even with a texture image.
    no_uv = replace(it, uv=np.zeros((0, 2), np.float32), uv_faces=np.zeros((0, 3), np.int64))
    assert export(no_uv, tmp_path / "b", "f", ("textured", "obj")) == [tmp_path / "b" / "f.obj"]
    # No images at all: the geometry-only formats still work.
    assert len(export(replace(it, images={}), tmp_path / "c", "f")) == 7
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["f.glb", "f.json", "f.obj", "f.ply",
                                                                   "f_landmarks3d.json", "f_neutral.obj",
                                                                   "f_posed.obj"]
    # No model parameters / 3-D landmarks / PNCC: those decline, the rest is written.
    bare = replace(it, vertices_neutral=None, landmarks3d=None, landmarks3d_posed=None,
                   images={k: v for k, v in it.images.items() if k != "pncc_crop"})
    assert [p.name for p in export(bare, tmp_path / "d", "f", ("neutral", "landmarks3d", "maps"))] == [
        "f_depth.png", "f_normals.png"]
    assert _no_temp_files(tmp_path)


def test_custom_exporter(tmp_path, registry):
    calls = []

    def xyz(item, out, stem):
        calls.append((item, out, stem))
        p = out / f"{stem}.xyz"
        with atomic_path(p) as tmp:
            np.savetxt(tmp, item.vertices, fmt="%.3f")
        return [p]

    register_exporter("xyz", xyz, needs=("depth",), description="points")
    assert available_exporters()["xyz"] == "points" and list(available_exporters())[-1] == "xyz"
    assert images_needed(["xyz", "obj"]) == {"depth"}
    it = _item()
    assert export(it, tmp_path, "f", ["xyz"]) == []  # its image is missing: skipped
    assert calls == []
    it = replace(it, images={**it.images, "depth": np.zeros((4, 4), np.uint8)})
    paths = export(it, tmp_path, "f", ["xyz", "json"])
    assert [p.name for p in paths] == ["f.json", "f.xyz"]  # registered formats come after the built-ins
    assert len(calls) == 1 and calls[0][0] is it and calls[0][1] == tmp_path and calls[0][2] == "f"
    assert np.loadtxt(tmp_path / "f.xyz").shape == it.vertices.shape
    assert "xyz" not in ALL and "xyz" not in [p.suffix for p in export(it, tmp_path / "d", "f")]

    with pytest.raises(FaceReconError, match="already registered"):
        register_exporter("xyz", xyz)
    with pytest.raises(FaceReconError, match="already registered"):
        register_exporter("obj", xyz)
    register_exporter("obj", lambda item, out, stem: [], overwrite=True)  # replaced in place
    assert list(EXPORTERS)[2] == "obj" and export(it, tmp_path / "e", "f", ["obj"]) == []


def test_failing_exporter_leaves_no_temp_file(tmp_path, registry):
    def broken(item, out, stem):
        with atomic_path(out / f"{stem}.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk on fire")

    register_exporter("broken", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export(_item(), tmp_path, "f", ["obj", "broken"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.obj"]


def test_item_checks_shapes_and_images():
    with pytest.raises(ValueError, match="colors"):
        _item(colors=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="faces"):
        _item(faces=np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match="uint8"):
        _item(images={"overlay": np.zeros((4, 4, 3), np.float32)})
    with pytest.raises(ValueError, match="vertices_neutral"):
        _item(vertices_neutral=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="landmarks3d"):
        _item(landmarks3d=np.zeros((68, 2), np.float32))


def _load_glb(path):
    import trimesh

    return trimesh.load(path, force="mesh", process=False)


def test_glb_textured_splits_vertices_at_uv_seams(tmp_path):
    """A layout with a seam: each corner's position and UV survive the round trip through glTF."""
    it = _item()
    f = it.faces
    # Per-corner UVs (every corner its own UV, like a layout cut everywhere) - a vertex has several.
    rng = np.random.default_rng(5)
    uv = rng.uniform(0, 1, (f.size, 2)).astype(np.float32)
    uv_faces = np.arange(f.size).reshape(-1, 3)
    uv[uv_faces[:, 0]] = uv[uv_faces[0, 0]]  # share a few UVs: not every corner is its own vertex
    tex = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    it = replace(it, uv=uv, uv_faces=uv_faces, images={**it.images, "texture": tex})
    assert [p.name for p in export(it, tmp_path, "f", "glb")] == ["f.glb"] and _no_temp_files(tmp_path)
    m = _load_glb(tmp_path / "f.glb")
    assert len(m.faces) == len(f)
    assert len(it.vertices) < len(m.vertices) <= f.size  # split at seams, no more than one per corner
    for fi in (0, 1, 17, len(f) - 1):
        for k in range(3):
            assert np.allclose(m.vertices[m.faces[fi, k]], it.vertices[f[fi, k]], atol=1e-5)
            assert np.allclose(m.visual.uv[m.faces[fi, k]], uv[uv_faces[fi, k]], atol=1e-6)
    assert np.array_equal(np.asarray(m.visual.material.baseColorTexture.convert("RGB")), tex)
    # The same vertex with the same UV is one glTF vertex (corners sharing a pair share the vertex).
    pairs = {(int(f[i, k]), int(uv_faces[i, k])) for i in range(len(f)) for k in range(3)}
    assert len(m.vertices) == len(pairs)
    # Per-vertex UVs (no uv_faces): no split at all.
    per_vertex = replace(it, uv=_item().uv, uv_faces=np.zeros((0, 3), np.int64))
    export(per_vertex, tmp_path / "pv", "f", "glb")
    assert len(_load_glb(tmp_path / "pv" / "f.glb").vertices) == len(it.vertices)


def test_glb_without_texture_has_vertex_colours(tmp_path):
    it = _item()
    it = replace(it, images={k: v for k, v in it.images.items() if k != "texture"})
    export(it, tmp_path, "f", "glb")
    m = _load_glb(tmp_path / "f.glb")
    assert np.allclose(m.vertices, it.vertices, atol=1e-5) and np.array_equal(m.faces, it.faces)
    assert np.abs(m.visual.vertex_colors[:, :3] / 255.0 - it.colors).max() <= 1 / 255 + 1e-6


def test_json_camera_matrices_project_like_the_camera(tmp_path):
    """K @ (world_to_camera @ [v, 1])[:3] reproduces PerspectiveCamera.project to < 1e-3 px."""
    from facerecon.geometry.camera import PerspectiveCamera

    cam = PerspectiveCamera(1234.5, 321.25, 201.75, 640, 400, distance=870.0)
    export(_item(camera=camera_json(cam)), tmp_path, "f", "json")
    info = json.loads((tmp_path / "f.json").read_text())
    K, Rt = np.array(info["intrinsics_K"]), np.array(info["world_to_camera"])
    assert info["schema_version"] == 2 and K.shape == (3, 3) and Rt.shape == (4, 4)
    rng = np.random.default_rng(2)
    pts = rng.normal(0, 40, (50, 3)) + [5, -8, 30]
    uvw = (K @ (Rt @ np.c_[pts, np.ones(len(pts))].T)[:3]).T
    ref = cam.project(torch.tensor(pts, dtype=torch.float64)).numpy()
    assert np.abs(uvw[:, :2] / uvw[:, 2:] - ref[:, :2]).max() < 1e-3
    assert np.allclose(uvw[:, 2], ref[:, 2])  # and z is the camera's depth (mm, > 0 in front)


def test_landmarks3d_json(tmp_path):
    it = _item()
    export(it, tmp_path, "f", "landmarks3d")
    lm = json.loads((tmp_path / "f_landmarks3d.json").read_text())
    assert np.allclose(lm["model_mm"], it.landmarks3d, atol=1e-5)
    assert np.allclose(lm["posed_mm"], it.landmarks3d_posed, atol=1e-5)
    cv = np.array(lm["camera_cv_mm"])
    p = np.asarray(it.landmarks3d_posed, np.float64)
    assert np.allclose(cv, np.c_[p[:, 0], -p[:, 1], 1000.0 - p[:, 2]], atol=1e-4)
    assert np.allclose(lm["crop_px"], it.lm68_crop) and np.allclose(lm["image_px"], it.lm68_image)
    assert np.array(lm["model_mm"]).shape == (68, 3) and "OpenCV" in lm["convention"]


# --------------------------------------------------------------------------- Reconstruction.save

def _reconstruction(model, photo_shape=(300, 400)):
    """A random ICT face in front of the Deep3D crop camera, packed as an `api.Reconstruction`
    (the attributes write_reconstruction reads) with a synthetic crop of a synthetic photo."""
    from facerecon.align import Crop
    from facerecon.detect.base import Face
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.methods import Reconstruction, Topology, camera_for_original

    g = torch.Generator().manual_seed(3)
    p = model.random_params(1, generator=g)
    dt = model.mean_shape.dtype
    p = p.replace(rotation=torch.tensor([[0.1, -0.3, 0.05]], dtype=dt),
                  translation=torch.tensor([[2.0, -5.0, 30.0]], dtype=dt),
                  light=torch.randn(1, 27, generator=g, dtype=dt) * 0.2)
    with torch.no_grad():
        geo = model(p)
    cam = PerspectiveCamera.deep3d(224)
    rng = np.random.default_rng(1)
    H, W = photo_shape
    photo = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    s = 1.4  # the crop: a pure scale + shift of the photo
    M = np.array([[s, 0, -60.0], [0, s, -40.0]])
    M_inv = np.array([[1 / s, 0, 60.0 / s], [0, 1 / s, 40.0 / s]])
    crop_img = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    with torch.no_grad():
        lm_world = model.pose(model.landmarks(geo.vertices), p.rotation, p.translation)
    lm_crop = cam.project(lm_world)[0, :, :2].numpy().astype(np.float32)
    crop = Crop(crop_img, M, M_inv, lm5=rng.uniform(50, 170, (5, 2)).astype(np.float32),
                lm68=lm_crop + rng.normal(0, 2, lm_crop.shape).astype(np.float32), original_shape=(H, W),
                source="photo.jpg")
    face = Face(box=np.float32([10, 20, 200, 220]), score=0.9, lm5=np.zeros((5, 2), np.float32), source="synthetic")
    pitch, yaw, roll = (math.degrees(float(a)) for a in p.rotation[0])
    bs = {n: float(w) for n, w in zip(model.expression_names, p.expression[0])}
    rec = Reconstruction(params=p, layout=model.layout, geometry=geo, topology=Topology.of_model(model),
                         lm68=crop.crop_to_original(lm_crop).astype(np.float32), lm68_crop=lm_crop,
                         pose_deg={"yaw": yaw, "pitch": pitch, "roll": roll},
                         translation_mm=p.translation[0].numpy(), camera_crop=cam,
                         camera=camera_for_original(cam, crop), face=face, crop=crop, method="test",
                         model_name=model.name, blendshapes=bs, times={"detect": 0.123456, "fit_total": 1.5},
                         source="photo.jpg", image=photo, model=model)
    return rec, photo


def _item_from(rec, model, photo, formats):
    """The glue the API will use: Reconstruction + model -> ExportItem with its images."""
    from facerecon.io.export import images_needed
    from facerecon.render.views import render_images, shaded_colors

    g, p = rec.geometry, rec.params
    images = render_images(images_needed(formats), vertices_world=g.vertices_world, albedo=g.albedo,
                           light=p.light, faces=model.faces, camera_crop=rec.camera_crop,
                           crop_image=rec.crop.image, lm68_crop=rec.lm68_crop, lm68_detected_crop=rec.crop.lm68,
                           camera_photo=rec.camera, photo=photo, uv=model.uv, uv_faces=model.uv_faces,
                           pncc_reference=model.mean_shape)
    np_ = lambda t: t.detach().cpu().numpy()
    with torch.no_grad():
        neutral = model.shape(p.identity, torch.zeros_like(p.expression))[0]
        lm3d = model.landmarks(g.vertices)
        lm3d_posed = model.pose(lm3d, p.rotation, p.translation)
    return ExportItem(
        vertices=np_(g.vertices[0]), vertices_posed=np_(g.vertices_world[0]), faces=np_(model.faces),
        colors=shaded_colors(g.albedo, g.normals, p.light), albedo=np_(g.albedo[0]),
        uv=np_(model.uv), uv_faces=np_(model.uv_faces), coeff=np_(model.layout.join(p)).astype(np.float32),
        crop_image=rec.crop.image, lm68_crop=rec.lm68_crop, lm5_crop=rec.crop.lm5, lm68_image=rec.lm68,
        lm68_detected_crop=rec.crop.lm68, pose_deg=rec.pose_deg, translation_mm=np_(p.translation[0]),
        rotation=rec.rotation_matrix,  # added to the JSON since the equivalence check (issue 22)
        camera=camera_json(rec.camera), box=rec.face.box, detector=rec.face.source, blendshapes=rec.blendshapes,
        times=rec.times, source=rec.source, model=rec.model_name, images=images,
        vertices_neutral=np_(neutral) if "neutral" in formats else None,
        landmarks3d=np_(lm3d[0]) if "landmarks3d" in formats else None,
        landmarks3d_posed=np_(lm3d_posed[0]) if "landmarks3d" in formats else None,
        **(_head_fields(rec, model) if "head" in formats else {}))


def _head_fields(rec, model):
    """The full ICT head decoded independently of `Reconstruction.head` (the variant loaded by name)."""
    from facerecon.geometry.mesh import vertex_normals
    from facerecon.models import load_model
    from facerecon.render.views import shaded_colors

    head = load_model("ict", variant="head").to(model.mean_shape)
    p = rec.params
    with torch.no_grad():
        v = head.shape(p.identity, p.expression)
        posed = head.pose(v, p.rotation, p.translation)
        albedo = head.albedo_mean.expand_as(v).clone()
        albedo[:, :model.n_vertices] = rec.geometry.albedo
        colors = shaded_colors(albedo, vertex_normals(posed, head.faces), p.light)
    return {"head_vertices": v[0].numpy(), "head_vertices_posed": posed[0].numpy(), "head_faces": head.faces.numpy(),
            "head_colors": colors}


#: Files per format of a reconstruction with a photo, UVs and model parameters.
N_FILES = {"textured": 3, "maps": 3, "head": 2}


@pytest.mark.assets
@pytest.mark.parametrize("photo_shape, formats, dtype", [
    ((300, 400), ALL, torch.float32),
    ((1300, 900), ("overlay",), torch.float32),  # downscaled for the overlay
    ((300, 400), ("mat", "obj", "textured", "json"), torch.float64),  # a float64 reconstruction
])
def test_reconstruction_save_writes_the_exporters_files(tmp_path, ict_model, photo_shape, formats, dtype):
    """`Reconstruction.save` writes what the exporters write from the glue below, which was checked
    byte for byte (mat/npz: array for array) against the writer it replaced (outputs.py) before
    that was deleted."""
    need_asset("ict-facekit")
    model = ict_model if dtype == torch.float32 else copy.deepcopy(ict_model).to(dtype)
    rec, photo = _reconstruction(model, photo_shape)
    assert rec.geometry.vertices.dtype == dtype
    old = export(_item_from(rec, model, photo, formats), tmp_path / "old", "f", formats)
    new = rec.save(tmp_path / "new", formats, stem="f")
    assert [p.name for p in old] == [p.name for p in new]
    assert sorted(p.name for p in old) == sorted(p.name for p in new)
    assert len(new) == sum(N_FILES.get(f, 1) for f in formats)  # textured: .obj, .mtl, .png; maps: 3 PNGs
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == sorted(p.name for p in (tmp_path / "new").iterdir())
    for p in old:
        q = tmp_path / "new" / p.name
        if p.suffix in (".obj", ".ply", ".json", ".mtl", ".glb"):
            assert p.read_bytes() == q.read_bytes(), p.name
        elif p.suffix == ".png":
            a, b = np.asarray(PILImage.open(p)), np.asarray(PILImage.open(q))
            assert a.shape == b.shape and np.array_equal(a, b), p.name
        elif p.suffix == ".mat":
            a, b = sio.loadmat(p), sio.loadmat(q)
            keys = [k for k in a if not k.startswith("__")]
            assert keys == [k for k in b if not k.startswith("__")]
            for k in keys:
                assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        else:
            with np.load(p) as za, np.load(q) as zb:
                assert za.files == zb.files
                for k in za.files:
                    assert za[k].dtype == zb[k].dtype and np.array_equal(za[k], zb[k]), k
    # The PNGs decode to the same pixels; with the same encoder they are the same bytes too.
    for p in old:
        if p.suffix == ".png":
            assert p.read_bytes() == (tmp_path / "new" / p.name).read_bytes(), p.name
    if formats == ALL:  # the face is in view: the comparison is not between two empty renders
        assert (sio.loadmat(tmp_path / "new" / "f.mat")["recon_img"][..., 3] > 0).mean() > 0.3
    if formats == ALL:
        _check_new_formats(rec, model, tmp_path / "new")
    if formats == ALL:  # without a photo both skip 'textured' and 'overlay'
        few = ("obj", "textured", "overlay")
        old = export(_item_from(rec, model, None, few), tmp_path / "old2", "f", few)
        new = rec.with_image(None).save(tmp_path / "new2", few, stem="f")
        assert [p.name for p in old] == [p.name for p in new] == ["f.obj"]


def _check_new_formats(rec, model, out):
    """The ICT face's new files hold what they say (with a real camera, UV layout and renders)."""
    import trimesh

    # JSON: K @ [R|t] projects the posed vertices exactly like the original photo's camera.
    info = json.loads((out / "f.json").read_text())
    K, Rt = np.array(info["intrinsics_K"]), np.array(info["world_to_camera"])
    v = rec.vertices.astype(np.float64)[::50]
    uvw = (K @ (Rt @ np.c_[v, np.ones(len(v))].T)[:3]).T
    ref = rec.camera.project(torch.tensor(v))[:, :2].numpy()
    assert np.abs(uvw[:, :2] / uvw[:, 2:] - ref).max() < 1e-3
    # GLB: the model-space mesh with the photo texture, split at the model's UV seams.
    m = trimesh.load(out / "f.glb", force="mesh", process=False)
    f, uvf, uv = rec.triangles, model.uv_faces.numpy(), model.uv.numpy()
    assert len(m.faces) == len(f) and len(m.vertices) >= model.n_vertices
    for fi in (0, len(f) // 3, len(f) - 1):
        for k in range(3):
            assert np.allclose(m.visual.uv[m.faces[fi, k]], uv[uvf[fi, k]], atol=1e-5)
            assert np.allclose(m.vertices[m.faces[fi, k]], rec.vertices_model[f[fi, k]], atol=1e-3)
    # posed / neutral: face_shape_posed's vertices; the neutral face differs from the expressive one.
    posed = trimesh.load(out / "f_posed.obj", process=False)
    assert np.allclose(posed.vertices, rec.vertices, atol=1e-4)
    neutral = trimesh.load(out / "f_neutral.obj", process=False).vertices
    with torch.no_grad():
        ref_n = model.shape(rec.params.identity, torch.zeros_like(rec.params.expression))[0].numpy()
    assert np.allclose(neutral, ref_n, atol=1e-4) and np.abs(neutral - rec.vertices_model).max() > 0.5
    # 3-D landmarks project onto the 2-D ones.
    lm = json.loads((out / "f_landmarks3d.json").read_text())
    posed_lm = torch.tensor(lm["posed_mm"], dtype=torch.float64)
    assert np.abs(rec.camera_crop.project(posed_lm)[:, :2].numpy() - np.array(lm["crop_px"])).max() < 0.05
    assert np.abs(rec.camera.project(posed_lm)[:, :2].numpy() - np.array(lm["image_px"])).max() < 0.05
    # Maps: depth in 0.1 mm where the face is (about the camera distance), normals facing the camera.
    depth = np.asarray(PILImage.open(out / "f_depth.png")).astype(np.float64)
    fg = depth > 0
    assert 0.2 < fg.mean() < 0.95
    d_mm = depth[fg] * info["depth_png_unit_mm"]
    assert (np.abs(d_mm - rec.camera_crop.distance) < 200).all()
    normals = np.asarray(PILImage.open(out / "f_normals.png")).astype(np.float64) / 255 * 2 - 1
    assert np.median(normals[fg][:, 2]) > 0.5 and (normals[~fg] == -1).all()
    pncc = np.asarray(PILImage.open(out / "f_pncc.png"))
    assert pncc.shape == (224, 224, 3) and pncc[fg].std(0).min() > 10
    # Panel: five tiles; the side view shows a face-sized grey shape on white.
    panel = np.asarray(PILImage.open(out / "f_panel.png"))
    assert panel.shape == (224, 5 * 224, 3)
    side = panel[:, 4 * 224:]
    assert 0.05 < (side.min(-1) < 250).mean() < 0.9 and not np.array_equal(side, panel[:, 2 * 224:3 * 224])
