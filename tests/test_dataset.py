"""The face-profiling data engine: a synthetic round trip with known truth, visibility against a
brute-force ray cast, and the build's determinism, resume and bad-input handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerecon.geometry.camera import PerspectiveCamera
from facerecon.geometry.mesh import vertex_normals


def _truth_scene(model, yaw_deg=10.0):
    """A model face rendered with a distinctive per-vertex colour code (PNCC) over a textured
    background: the 'photo' and its exact parameters (the crop is the identity similarity)."""
    from facerecon.dataset import Profiler, SourceView
    from facerecon.render import MeshRenderer, pncc_code

    g = torch.Generator().manual_seed(3)
    p = model.random_params(1, generator=g, exp_scale=0.2)
    rot = torch.tensor([[0.05, np.radians(yaw_deg), -0.03]], dtype=torch.float32)
    p = p.replace(rotation=rot, translation=torch.tensor([[2.0, -3.0, 10.0]]))
    cam = PerspectiveCamera.deep3d(224)
    code = pncc_code(model.mean_shape)
    with torch.no_grad():
        geo = model(p)
        ys, xs = torch.meshgrid(torch.linspace(0, 1, 224), torch.linspace(0, 1, 224), indexing="ij")
        bg = torch.stack([xs, ys, 0.5 + 0.5 * torch.sin(12 * xs)], -1)
        out = MeshRenderer(cam, model.faces, outputs=("overlay", "pncc"))(
            geo.vertices_world, geo.albedo, p.light, background=bg, pncc=code)
        photo = (out.pncc[0] * out.overlay[0, ..., 3:] + bg * (1 - out.overlay[0, ..., 3:]))
    photo = (photo.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    src = SourceView(photo=photo, M=np.array([[1.0, 0, 0], [0, 1.0, 0]]), camera=cam,
                     vertices_model=geo.vertices[0].double().numpy(), rotation=rot[0].double().numpy(),
                     translation=p.translation[0].double().numpy(), fallback_rgb=np.full((model.n_vertices, 3), 0.5))
    return Profiler.of_model(model, cam), src, p, code


def _ray_cast_visible(points, vertex_ids, verts, faces, cam, tol_mm=2.0):
    """Brute force: a point is visible when no triangle (not touching its vertex) crosses the segment
    camera -> point more than `tol_mm` before it, and its vertex normal faces the camera."""
    C = np.array([0.0, 0.0, cam.distance])
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    normals = vertex_normals(torch.as_tensor(verts)[None], torch.as_tensor(faces))[0].numpy()
    out = []
    for pt, vid in zip(points, vertex_ids):
        d = pt - C
        L = np.linalg.norm(d)
        d = d / L
        h = np.cross(d, e2)
        a = (e1 * h).sum(1)
        ok = np.abs(a) > 1e-12
        f = np.where(ok, 1.0 / np.where(ok, a, 1), 0)
        s = C - v0
        u = f * (s * h).sum(1)
        q = np.cross(s, e1)
        v = f * (q * d).sum(1)
        t = f * (e2 * q).sum(1)
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & (t < L - tol_mm)
        hit &= ~(faces == vid).any(1)
        facing = float(normals[vid] @ (C - pt)) > 0
        out.append(facing and not hit.any())
    return np.array(out)


@pytest.mark.parametrize("target_yaw", [45.0, 80.0])
def test_profiled_view_matches_a_direct_render_of_the_rotated_truth(ict_model, target_yaw):
    """Profile a known face to a new yaw: the stored labels are the truth re-posed, the face pixels
    textured from the photo carry the colour code a direct render of the rotated truth has there, the
    crop has no holes, and the landmark visibility agrees with a brute-force ray cast."""
    from facerecon.render import MeshRenderer

    model = ict_model
    prof, src, p, code = _truth_scene(model)
    scene = prof.scene(src)
    rot = np.array([0.1, np.radians(target_yaw), 0.05])
    view = prof.render(src, scene, rot)
    # Labels = the truth re-posed at the new rotation, seen by the view's (re-aligned) camera.
    truth = p.replace(rotation=torch.as_tensor(rot, dtype=torch.float32)[None])
    with torch.no_grad():
        geo = model(truth)
        lm_world = model.pose(model.landmarks(geo.vertices), truth.rotation, truth.translation)
        lm_truth = view.camera.project(lm_world.double())[0, :, :2].numpy()
        v_truth = view.camera.project(geo.vertices_world.double())[0].numpy()
        direct = MeshRenderer(view.camera, model.faces, outputs=("pncc", "mask"))(
            geo.vertices_world, geo.albedo, pncc=code)
    np.testing.assert_allclose(view.lm68, lm_truth, atol=1e-2)
    np.testing.assert_allclose(view.vertices_px, v_truth, atol=1e-2, rtol=1e-5)
    # The re-aligned crop puts the 5 points where the pipeline puts the mean face's.
    from facerecon.geometry.landmarks import lm5_from_lm68_corners

    lm5 = lm5_from_lm68_corners(view.lm68)
    assert np.abs(lm5.mean(0) - prof.lm5_ref_px.mean(0)).max() < 1.0
    # Face pixels: same coverage as the direct render, and the photo's colour code where textured.
    truth_mask = direct.mask[0].numpy() > 0.5
    iou = (view.mask & truth_mask).sum() / (view.mask | truth_mask).sum()
    assert iou > 0.97, iou
    assert view.texture_from_photo > 0.6
    err = np.abs(view.image.astype(float) / 255 - direct.pncc[0].numpy())[view.mask & truth_mask].max(-1)
    # Most face pixels: right code; a minority (mirror texture of the unseen side, silhouettes) differ.
    assert np.median(err) < 0.03, np.median(err)
    assert (err < 0.08).mean() > 0.6 if target_yaw > 60 else (err < 0.08).mean() > 0.8
    assert view.image.shape == (224, 224, 3) and (view.image.reshape(-1, 3).max(1) > 0).all()  # no black holes
    # Visibility flags against a brute-force ray cast over every triangle.
    verts = geo.vertices_world[0].double().numpy()
    lm_v = model.landmarks68.numpy()
    brute = _ray_cast_visible(verts[lm_v], lm_v, verts, model.faces.numpy(), view.camera)
    flags = view.vis68 == 1
    inside = view.vis68 != 0
    assert (flags[inside] == brute[inside]).mean() >= 0.95, (flags, brute)
    if target_yaw > 60:
        assert (view.vis68 == -1).sum() >= 5  # the far jaw/eye turn away at a near-profile


def test_mirror_map_is_an_involution_on_the_mean_face(ict_model):
    from facerecon.dataset import mirror_map

    ms = ict_model.mean_shape.double().numpy()
    m = mirror_map(ms)
    err = np.linalg.norm(ms[m] * [-1, 1, 1] - ms, axis=1)
    assert np.median(err) < 1.0  # mm: the model's face is symmetric
    assert (m[m] == np.arange(len(m))).mean() > 0.9


def test_rotations_are_stratified_and_seeded():
    from facerecon.dataset import BuildConfig, sample_rotations
    from facerecon.dataset.build import photo_rng

    cfg = BuildConfig(views=4, max_yaw_deg=90)
    a = sample_rotations(np.array([0.1, 0.3, 0.0]), cfg, photo_rng(0, "x.jpg"))
    b = sample_rotations(np.array([0.1, 0.3, 0.0]), cfg, photo_rng(0, "x.jpg"))
    c = sample_rotations(np.array([0.1, 0.3, 0.0]), cfg, photo_rng(1, "x.jpg"))
    assert np.array_equal(np.array(a), np.array(b)) and not np.array_equal(np.array(a), np.array(c))
    yaws = np.degrees(np.abs([r[1] for r in a]))
    for k, y in enumerate(yaws):
        assert 22.5 * k <= y <= 22.5 * (k + 1)
    assert all(abs(np.degrees(r[0]) - np.degrees(0.1)) <= 16.0 + 1e-9 for r in a)


def test_split_keeps_an_identity_together():
    from facerecon.dataset import split_of

    assert split_of("Bill_Gates", 0.5) == split_of("Bill_Gates", 0.5)
    fr = np.mean([split_of(f"id{i}", 0.2) == "val" for i in range(2000)])
    assert 0.17 < fr < 0.23


def test_list_photos_identity_by_folder(tmp_path):
    from facerecon.dataset import list_photos

    for who in ("A", "B"):
        (tmp_path / "set" / who).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "set" / who / f"{who}_{i}.jpg").write_bytes(b"x")
    photos = list_photos([tmp_path / "set"], split_by="folder")
    assert [p.key for p in photos] == ["set/A/A_0.jpg", "set/A/A_1.jpg", "set/B/B_0.jpg", "set/B/B_1.jpg"]
    assert [p.identity for p in photos] == ["A", "A", "B", "B"]
    assert photos[0].photo_id == "set__A__A_0"
    assert {p.identity for p in list_photos([tmp_path / "set"])} == {p.key for p in photos}


@pytest.fixture(scope="module")
def small_photos(astronaut_path, tmp_path_factory):
    """Two small photos (the astronaut and its mirror image, 256²) and a broken file."""
    from PIL import Image

    need = pytest.importorskip("facerecon.assets")
    for a in ("3ddfa-v2", "retinaface", "ict-facekit"):
        if need.find(a) is None:
            pytest.skip(f"asset '{a}' not found")
    d = tmp_path_factory.mktemp("photos")
    im = Image.open(astronaut_path).convert("RGB").crop((96, 0, 352, 256))
    im.save(d / "a.png")
    im.transpose(Image.FLIP_LEFT_RIGHT).save(d / "b.png")
    (d / "c_broken.jpg").write_bytes(b"not an image")
    return d


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.jsonl"}


def _assert_same_samples(out1, out2):
    """Same files; labels equal up to the fitter's run-to-run floating-point noise (docs/dataset.md)."""
    from facerecon.dataset import load_sample

    f1, f2 = _files(out1), _files(out2)
    assert f1.keys() == f2.keys()
    for name in f1:
        if name.endswith(".npz"):
            a, b = load_sample(out1 / name), load_sample(out2 / name)
            assert a.keys() == b.keys()
            for k in a:
                if isinstance(a[k], np.ndarray) and a[k].dtype.kind == "f":
                    np.testing.assert_allclose(a[k], b[k], atol=1.0, rtol=1e-3, err_msg=f"{name}:{k}")
                elif k not in ("quality", "photo_error", "texture_from_photo", "mirror_fraction", "mask", "vis68"):
                    assert np.array_equal(a[k], b[k]), (name, k)


def test_profiling_is_bit_exact_given_the_fit(ict_model, tmp_path):
    """Everything after the fit is deterministic: the same source and rotation give the same view,
    and a sample written twice has the same bytes (fixed zip timestamps)."""
    from facerecon.dataset.store import write_jpeg, write_npz

    prof, src, _, _ = _truth_scene(ict_model)
    rot = np.array([0.0, 0.9, 0.1])
    v1 = prof.render(src, prof.scene(src), rot)
    v2 = prof.render(src, prof.scene(src), rot)
    assert np.array_equal(v1.image, v2.image) and np.array_equal(v1.vertices_px, v2.vertices_px)
    arrays = {"lm68": v1.lm68.astype(np.float32), "vis68": v1.vis68, "mask": v1.mask, "name": np.str_("x")}
    write_npz(tmp_path / "a.npz", arrays)
    write_jpeg(tmp_path / "a.jpg", v1.image)
    import time

    time.sleep(1.1)  # a zip member's default timestamp has 2-s resolution: cross a tick
    write_npz(tmp_path / "b.npz", arrays)
    write_jpeg(tmp_path / "b.jpg", v2.image)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (tmp_path / "a.jpg").read_bytes() == (tmp_path / "b.jpg").read_bytes()


@pytest.mark.slow
def test_build_deterministic_resumable_and_reports_bad_files(small_photos, tmp_path):
    from facerecon.dataset import BuildConfig, build_dataset, load_sample, read_manifest
    from facerecon.errors import FaceReconError

    cfg = BuildConfig(views=2, seed=7)
    out1, out2 = tmp_path / "one", tmp_path / "two"
    s1 = build_dataset([small_photos], out1, cfg, progress=False)
    assert (s1.ok, s1.failed, s1.samples) == (2, 1, 6)
    assert "c_broken.jpg" in s1.errors[0][1]
    # Same seed, another run split into two resumed halves (other processes, other order).
    s2a = build_dataset([small_photos], out2, cfg, progress=False, limit=1)
    assert s2a.ok == 1
    with pytest.raises(FaceReconError, match="--resume"):
        build_dataset([small_photos], out2, cfg, progress=False)
    with pytest.raises(FaceReconError, match="other settings"):
        build_dataset([small_photos], out2, BuildConfig(views=2, seed=8), progress=False, resume=True)
    s2b = build_dataset([small_photos], out2, cfg, progress=False, resume=True, workers=2)
    assert (s2b.skipped, s2b.ok, s2b.failed) == (1, 1, 1)
    _assert_same_samples(out1, out2)
    rows = read_manifest(out1)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(r["view"] for r in ok) == [0, 0, 1, 1, 2, 2]
    assert all(r["split"] in ("train", "val") for r in ok)
    s = load_sample(out1 / ok[0]["sample"])
    assert s["vertices_px"].shape == s["vertices_world"].shape == (9409, 3) and s["mask"].shape == (224, 224)
    assert s["params"].shape == (int(s["layout"].sum()) + 33,) and s["vis68"].dtype == np.int8
    # Another seed: other poses.
    out3 = tmp_path / "three"
    build_dataset([small_photos], out3, BuildConfig(views=2, seed=8), progress=False)
    y1 = sorted(r["yaw"] for r in read_manifest(out1) if r.get("view", -1) > 0)
    y3 = sorted(r["yaw"] for r in read_manifest(out3) if r.get("view", -1) > 0)
    assert not np.allclose(y1, y3)


@pytest.mark.slow
def test_build_reports_bad_file_and_redoes_a_killed_photo(small_photos, tmp_path):
    """One photo + one broken file: the broken one is reported and skipped; a photo whose manifest
    lines were lost (killed before they were written, plus a torn line) is redone on --resume into
    the same samples (other process); finished and failed photos are not redone."""
    from facerecon.dataset import BuildConfig, build_dataset, load_sample, read_manifest

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "c_broken.jpg"):
        (src / name).write_bytes((small_photos / name).read_bytes())
    out = tmp_path / "ds"
    cfg = BuildConfig(views=1, seed=3)
    s = build_dataset([src], out, cfg, progress=False)
    assert (s.ok, s.failed, s.samples) == (1, 1, 2) and "c_broken.jpg" in s.errors[0][1]
    rows = read_manifest(out)
    assert {r["status"] for r in rows} == {"ok", "failed"}
    smp = load_sample(out / next(r["sample"] for r in rows if r.get("view") == 1))
    assert smp["view"] == 1 and smp["lm68"].shape == (68, 2) and set(np.unique(smp["vis68"])) <= {-1, 0, 1}
    assert abs(np.degrees(smp["rotation"][1])) <= 90.0
    snapshot = tmp_path / "snapshot"
    import shutil

    shutil.copytree(out, snapshot)
    kept = [json.dumps(r) for r in rows if r["status"] == "failed"]
    (out / "manifest.jsonl").write_text("\n".join(kept) + '\n{"source": "torn')
    s2 = build_dataset([src], out, cfg, progress=False, resume=True)
    assert (s2.ok, s2.failed, s2.skipped) == (1, 0, 1)
    _assert_same_samples(snapshot, out)
    assert len(read_manifest(out)) == 3  # the torn line stays unreadable and alone


def test_bad_source_is_a_failed_row_naming_the_file(ict_model, tmp_path):
    """A broken or missing file becomes one 'failed' manifest row with the file and the reason,
    written through the same append as real rows (and a torn last line is closed, not glued)."""
    from facerecon.dataset import BuildConfig, read_manifest
    from facerecon.dataset.build import Engine, Photo
    from facerecon.dataset.store import append_manifest

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    eng = Engine(BuildConfig(views=1))
    rows = []
    for p in (Photo(str(bad), "broken.jpg", "broken.jpg"), Photo(str(tmp_path / "gone.png"), "gone.png", "gone.png")):
        res = eng.process(p, tmp_path / "out")
        assert len(res["rows"]) == 1 and res["rows"][0]["status"] == "failed"
        assert p.path in res["error"]
        rows += res["rows"]
    assert "not a readable image" in rows[0]["error"] and "no such file" in rows[1]["error"]
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "manifest.jsonl").write_text('{"key": "x"}\n{"key": "tor')
    append_manifest(tmp_path / "out", rows)
    assert [r["key"] for r in read_manifest(tmp_path / "out")] == ["x", "broken.jpg", "gone.png"]
    assert not (tmp_path / "out" / "samples").exists()
