"""Video: PyAV decode/encode round trips, the sequence files (CSV, NPZ, Live Link CSV, animated
GLB), the windowing (identity carried, overlap cross-faded, order kept), and the end-to-end file
path through the API and the CLI on a synthetic clip."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from facerecon.errors import FaceReconError, InputImageError
from facerecon.io import sequence as seqio

from .conftest import need_asset

av = pytest.importorskip("av", reason="PyAV (the 'video' extra) is not installed")

from facerecon.io.video import VideoWriter, frame_name, iter_frames, probe, read_frames


def _clip(path, n=12, size=(48, 64), fps=25.0):
    """A synthetic clip: frame i has red = 10 i and a fixed green square (values checkable after
    lossy coding)."""
    frames = []
    with VideoWriter(path, fps, crf=10) as w:
        for i in range(n):
            f = np.zeros((*size, 3), np.uint8)
            f[..., 0] = 10 * i
            f[8:24, 8:24, 1] = 200
            w.write(f)
            frames.append(f)
    return frames


def test_writer_and_streaming_reader_round_trip(tmp_path):
    p = tmp_path / "clip.mp4"
    frames = _clip(p)
    info = probe(p)
    assert (info.width, info.height, info.frames) == (64, 48, 12) and info.fps == pytest.approx(25.0)
    got = list(iter_frames(p))
    assert [f.index for f in got] == list(range(12))
    np.testing.assert_allclose([f.time for f in got], np.arange(12) / 25.0, atol=1e-6)
    for f, ref in zip(got, frames):
        assert f.pixels.shape == (48, 64, 3) and f.pixels.dtype == np.uint8
        assert abs(int(f.pixels[40, 50, 0]) - int(ref[40, 50, 0])) <= 4
        assert abs(int(f.pixels[15, 15, 1]) - 200) <= 6 and int(f.pixels[40, 50, 1]) <= 6
    # start / stride / max_frames select by the frame's number in the video, which frames keep.
    sub = list(iter_frames(p, start=2, stride=3, max_frames=3))
    assert [f.index for f in sub] == [2, 5, 8] and [f.name for f in sub] == ["frame000002", "frame000005",
                                                                              "frame000008"]
    np.testing.assert_allclose([f.time for f in sub], [0.08, 0.2, 0.32], atol=1e-6)
    assert [a.shape for a in read_frames(p, max_frames=2)] == [(48, 64, 3)] * 2
    assert frame_name(7) == "frame000007"


def test_writer_pads_odd_sizes_and_is_atomic(tmp_path):
    p = tmp_path / "odd.mp4"
    with VideoWriter(p, 10) as w:
        w.write(np.full((31, 45, 3), 128, np.uint8))
        assert not p.exists()  # written beside, renamed on close
    assert probe(p).width == 46 and probe(p).height == 32
    q = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError), VideoWriter(q, 10) as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
        raise RuntimeError("boom")
    assert not q.exists() and not list(tmp_path.glob(".failed*"))
    with pytest.raises(ValueError, match="frame 1 is"), VideoWriter(tmp_path / "sizes.mp4", 10) as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
        w.write(np.zeros((16, 32, 3), np.uint8))


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(InputImageError, match="nope.mp4: no such video file"):
        next(iter_frames(tmp_path / "nope.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputImageError, match="bad.mp4"):
        next(iter_frames(bad))
    p = tmp_path / "short.mp4"
    _clip(p, n=3)
    with pytest.raises(InputImageError, match="no decodable frames from frame 5"):
        next(iter_frames(p, start=5))


def test_reader_memory_is_flat_in_clip_length(tmp_path):
    """The reader holds one frame: its resident memory after 150 frames of 256² is what it is after 15
    (a list of the frames would be 28 MB)."""
    import resource

    p = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(p, 25, crf=30) as w:
        for _ in range(150):
            w.write(rng.integers(0, 255, (256, 256, 3), np.uint8))
    for f in iter_frames(p, max_frames=15):
        pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = sum(1 for _ in iter_frames(p))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert n == 150 and grown_mb < 12


# -- the sequence files ------------------------------------------------------------------------

def _sequence(T=5, names=("eyeBlink_L", "eyeBlink_R", "browInnerUp_L", "browInnerUp_R", "jawOpen")):
    rng = np.random.default_rng(1)
    from scipy.spatial.transform import Rotation

    ang = rng.uniform(-0.3, 0.3, (T, 3))
    R = Rotation.from_euler("xyz", ang).as_matrix()
    return seqio.FaceSequence(
        frame=np.arange(T) * 2 + 3, time=(np.arange(T) * 2 + 3) / 25.0, pose_deg=np.degrees(ang), rotation=R,
        translation_mm=rng.normal(0, 20, (T, 3)), blendshapes=rng.uniform(0, 1, (T, len(names))).astype(np.float32),
        blendshape_names=names, lm68=rng.uniform(0, 300, (T, 68, 2)).astype(np.float32),
        camera={"focal_px": 900.0, "cx": 199.5, "cy": 149.5, "width": 400, "height": 300, "distance_mm": 1000.0},
        fps=25.0, source="clip.mp4", method="fit", model="ict-face")


def test_sequence_csv_and_npz_round_trip(tmp_path):
    seq = _sequence()
    seqio.write_sequence_csv(tmp_path / "s.csv", seq)
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[0][:8] == ["frame", "time_s", "yaw_deg", "pitch_deg", "roll_deg", "tx_mm", "ty_mm", "tz_mm"]
    assert rows[0][8:13] == list(seq.blendshape_names) and rows[0][-1] == "lm67_y" and len(rows) == 6
    body = np.array(rows[1:], float)
    np.testing.assert_array_equal(body[:, 0], seq.frame)
    np.testing.assert_allclose(body[:, 2:5], seq.pose_deg, atol=1e-3)
    np.testing.assert_allclose(body[:, -136:].reshape(5, 68, 2), seq.lm68, atol=1e-2)
    seqio.write_sequence_npz(tmp_path / "s.npz", seq)
    back = seqio.read_sequence_npz(tmp_path / "s.npz")
    for k in ("frame", "time", "pose_deg", "rotation", "translation_mm", "blendshapes", "lm68"):
        np.testing.assert_allclose(getattr(back, k), getattr(seq, k), rtol=1e-6)
    assert back.blendshape_names == seq.blendshape_names and back.camera == seq.camera
    with np.load(tmp_path / "s.npz") as z:
        assert z["K"][0, 0] == 900.0 and z["world_to_camera_cv"][2, 3] == 1000.0
    with pytest.raises(ValueError, match="lm68"):
        seqio.FaceSequence(**{**seq.__dict__, "lm68": seq.lm68[:, :5]})


def test_live_link_csv_layout(tmp_path):
    seq = _sequence()
    seqio.write_live_link_csv(tmp_path / "ll.csv", seq)
    rows = list(csv.reader((tmp_path / "ll.csv").open()))
    assert rows[0][:4] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft"]
    assert len(rows[0]) == 63 and rows[0][-1] == "RightEyeRoll" and len(rows) == 6
    col = {n: i for i, n in enumerate(rows[0])}
    r = rows[2]
    assert r[col["BlendShapeCount"]] == "61"
    assert float(r[col["EyeBlinkRight"]]) == pytest.approx(seq.blendshapes[1, 1], abs=1e-6)
    assert float(r[col["JawOpen"]]) == pytest.approx(seq.blendshapes[1, 4], abs=1e-6)
    # ICT splits BrowInnerUp into left and right: the Live Link column is their mean.
    assert float(r[col["BrowInnerUp"]]) == pytest.approx(seq.blendshapes[1, 2:4].mean(), abs=1e-6)
    assert float(r[col["MouthPucker"]]) == 0.0
    assert float(r[col["HeadYaw"]]) == pytest.approx(np.radians(seq.pose_deg[1, 0]), abs=1e-6)
    assert seqio.live_link_timecode(3725.5, 30) == "01:02:05:15.000"
    assert r[0] == seqio.live_link_timecode(5 / 25.0, 25.0) == "00:00:00:05.000"


def test_animated_glb_accessors_and_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    seq = _sequence(T=4, names=("a", "b"))
    v = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], np.float64)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    deltas = np.zeros((2, 4, 3))
    deltas[0, 1, 0], deltas[1, 3, 2] = 10.0, -5.0
    weights = seq.blendshapes.astype(np.float64)
    data = seqio.animated_glb(v, f, np.full((4, 3), 0.5), ("a", "b"), deltas, weights, seq)
    gltf, blob = seqio.read_glb(data)
    # Every accessor lies inside its buffer view and the buffer; POSITION min/max are the data's.
    assert gltf["buffers"][0]["byteLength"] == len(blob)
    for i, acc in enumerate(gltf["accessors"]):
        a = seqio.accessor_array(gltf, blob, i)
        if "min" in acc:
            np.testing.assert_allclose(acc["min"], a.min(0), rtol=1e-6)
            np.testing.assert_allclose(acc["max"], a.max(0), rtol=1e-6)
    prim = gltf["meshes"][0]["primitives"][0]
    np.testing.assert_allclose(seqio.accessor_array(gltf, blob, prim["attributes"]["POSITION"]), v / 1000, rtol=1e-6)
    np.testing.assert_allclose(seqio.accessor_array(gltf, blob, prim["targets"][0]["POSITION"]), deltas[0] / 1000,
                               atol=1e-9)
    assert gltf["meshes"][0]["extras"]["targetNames"] == ["a", "b"]
    anim = gltf["animations"][0]
    paths = {c["target"]["path"]: anim["samplers"][c["sampler"]] for c in anim["channels"]}
    assert set(paths) == {"weights", "rotation", "translation"}
    times = seqio.accessor_array(gltf, blob, paths["weights"]["input"])[:, 0]
    np.testing.assert_allclose(times, seq.time - seq.time[0], atol=1e-6)
    w = seqio.accessor_array(gltf, blob, paths["weights"]["output"])
    np.testing.assert_allclose(w.reshape(4, 2), weights, rtol=1e-6)
    q = seqio.accessor_array(gltf, blob, paths["rotation"]["output"])
    from scipy.spatial.transform import Rotation

    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), seq.rotation, atol=1e-5)
    np.testing.assert_allclose(seqio.accessor_array(gltf, blob, paths["translation"]["output"]),
                               seq.translation_mm / 1000, rtol=1e-5)
    p = tmp_path / "a.glb"
    p.write_bytes(data)
    scene = trimesh.load(p)
    geoms = list(scene.geometry.values())
    assert len(geoms) == 1 and len(geoms[0].faces) == 4
    cam = gltf["cameras"][0]["perspective"]
    assert cam["yfov"] == pytest.approx(2 * np.arctan(150 / 900.0))


# -- windows -----------------------------------------------------------------------------------

class Scripted:
    """A method that returns a scripted expression per frame plus an offset per call (each window
    sees a different estimate), and records every request."""

    name = "scripted"
    needs_landmarks = False
    detector = "fast"

    def __init__(self, context):
        self.context, self.calls = context, []

    def reconstruct(self, crops, faces, request):
        from facerecon.methods import from_params

        m, cam = self.context.model, self.context.camera
        self.calls.append((len(crops), request))
        p = m.zeros(len(crops))
        k = len(self.calls)
        frame = torch.tensor([float(f.score) for f in faces], dtype=p.expression.dtype)
        exp = p.expression.clone()
        exp[:, 0] = frame * 0.01 + 0.1 * k  # the truth + this window's offset
        ident = torch.full_like(p.identity, float(k))  # each window would pick its own identity, but
        if request.keep_identity:  # keeps the one it is given, as the built-in methods do
            ident = request.start.identity.clone()
        p = p.replace(expression=exp, identity=ident, translation=p.translation + torch.tensor([0.0, 0.0, 0.0]))
        with torch.no_grad():
            lm = m.project_landmarks(p, cam)
        return from_params(m, cam, p, lm, crops, faces, self.name)


def _items(n, breaks=()):
    from facerecon.align import Crop
    from facerecon.detect.base import Face
    from facerecon.methods.video import BREAK

    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    for i in range(n):
        if i in breaks:
            yield BREAK
        crop = Crop(np.zeros((224, 224, 3), np.uint8), eye, eye, original_shape=(224, 224), source=f"f{i}")
        yield crop, Face(np.zeros(4, np.float32), float(i), np.zeros((5, 2), np.float32)), i


def test_windows_carry_identity_and_crossfade_the_overlap(ict_model):
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.methods import MethodContext, Request
    from facerecon.methods.video import Windows, reconstruct_windows

    ctx = MethodContext(ict_model, PerspectiveCamera.deep3d(), torch.device("cpu"))
    method = Scripted(ctx)
    out = list(reconstruct_windows(method, ctx, _items(20), Request(temporal=1.0), Windows(8, 3)))
    assert [t for t, _ in out] == list(range(20))  # every frame once, in order
    # Windows of 8 = 3 re-fitted + 5 new; the last holds what is left.
    assert [n for n, _ in method.calls] == [8, 8, 8, 5]
    first, later = method.calls[0][1], [r for _, r in method.calls[1:]]
    assert first.shared_identity and first.start is None and not first.keep_identity
    assert all(r.keep_identity and r.start is not None and r.temporal == 1.0 for r in later)
    # The first window's identity is every later window's start, and every frame's result.
    assert all(torch.all(r.start.identity == 1.0) for r in later)
    assert all(torch.all(rec.params.identity == 1.0) for _, rec in out)
    # Window 2 starts its 3 overlap frames from window 1's results (frames 5, 6, 7), and its new frames
    # from the last of them.
    s = method.calls[1][1].start.expression[:, 0]
    np.testing.assert_allclose(s[:3].numpy(), [0.05 + 0.1, 0.06 + 0.1, 0.07 + 0.1], atol=1e-6)
    np.testing.assert_allclose(s[3:].numpy(), 0.07 + 0.1, atol=1e-6)
    e = np.array([rec.params.expression[0, 0].item() for _, rec in out])
    truth = np.arange(20) * 0.01
    # Frames 0-4: window 1 alone (+0.1); 5-7: cross-faded from window 1 (+0.1) to 2 (+0.2).
    np.testing.assert_allclose(e[:5], truth[:5] + 0.1, atol=1e-6)
    np.testing.assert_allclose(e[5:8], truth[5:8] + 0.1 + 0.1 * np.array([1, 2, 3]) / 4, atol=1e-6)
    np.testing.assert_allclose(e[8:10], truth[8:10] + 0.2, atol=1e-6)
    # A window's change of estimate (0.1) is spread over the overlap: no step larger than a quarter of it.
    assert np.abs(np.diff(e - truth)).max() <= 0.1 / 4 + 1e-6
    # Landmarks are the blended parameters' own.
    with torch.no_grad():
        lm = ict_model.project_landmarks(out[6][1].params, ctx.camera)[0].numpy()
    np.testing.assert_allclose(out[6][1].lm68_crop, lm, atol=1e-3)


def test_windows_whole_clip_breaks_and_no_overlap(ict_model):
    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.methods import MethodContext, Request
    from facerecon.methods.video import Windows, reconstruct_windows

    ctx = MethodContext(ict_model, PerspectiveCamera.deep3d(), torch.device("cpu"))
    m = Scripted(ctx)
    out = list(reconstruct_windows(m, ctx, _items(7), Request(), Windows(0, 0)))
    assert [n for n, _ in m.calls] == [7] and [t for t, _ in out] == list(range(7))
    m = Scripted(ctx)
    out = list(reconstruct_windows(m, ctx, _items(10, breaks=(4,)), Request(), Windows(3, 1)))
    tags = [t for t, _ in out]
    # A gap ends the run: frames 0-3 are given back (then a (None, None) marker) before frame 4 is read.
    assert tags == [0, 1, 2, 3, None, 4, 5, 6, 7, 8, 9]
    assert [n for n, _ in m.calls] == [3, 2, 3, 3, 2]  # after the gap no overlap: 4,5,6 then 6..8 ...
    with pytest.raises(FaceReconError, match="overlap"):
        Windows(4, 4)


# -- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_clip(tmp_path_factory, astronaut_path):
    """6 frames (25 fps) of the astronaut photo cropped around the face, shifted by a pixel a frame."""
    from PIL import Image

    img = np.asarray(Image.open(astronaut_path).convert("RGB"))[:300, 60:340]
    p = tmp_path_factory.mktemp("vid") / "astro.mp4"
    with VideoWriter(p, 25.0, crf=18) as w:
        for i in range(6):
            w.write(np.ascontiguousarray(np.roll(img, i, axis=1)))
    return p


@pytest.fixture(scope="module")
def regressor():
    for a in ("ict-facekit", "retinaface", "3ddfa-v2"):
        need_asset(a)
    from facerecon.api import FaceReconstructor
    from facerecon.regress.predict import default_weights_paths

    if not any(p.is_file() for p in default_weights_paths()):
        pytest.skip("regressor weights absent (weights/README.md)")
    return FaceReconstructor("ict", method="regress")


def test_api_video_file_writes_five_files(regressor, face_clip, tmp_path):
    from facerecon.api import video_outputs

    det, calls = regressor.detector, []

    class Counting:  # the detector runs on the first frame; the landmarker tracks the face after it
        def detect(self, pixels):
            calls.append("detect")
            return det.detect(pixels)

        def landmarks(self, pixels, box, score=1.0):
            calls.append("track")
            return det.landmarks(pixels, box, score=score)

    regressor._detector = Counting()
    try:
        s = regressor.reconstruct_video_file(face_clip, tmp_path, window=4, overlap=2, progress=False)
    finally:
        regressor._detector = det
    assert calls == ["detect"] + ["track"] * 5
    assert (s.frames, s.faces, s.skipped) == (6, 6, [])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["astro.glb", "astro_livelink.csv", "astro_overlay.mp4", "astro_sequence.csv",
                     "astro_sequence.npz"]
    assert set(video_outputs()) == {"mp4", "sequence", "glb", "livelink"}
    assert probe(tmp_path / "astro_overlay.mp4").frames == 6
    seq = seqio.read_sequence_npz(tmp_path / "astro_sequence.npz")
    assert list(seq.frame) == list(range(6)) and seq.time[-1] == pytest.approx(0.2)
    assert len(seq.blendshape_names) == 53 and seq.method == "regress"
    # One camera for the clip: the model's landmarks posed with the sequence's R, t project onto the
    # sequence's 2-D landmarks (each frame's own camera followed its crop).
    recs = regressor.reconstruct_video([f.pixels for f in iter_frames(face_clip)], window=4, overlap=2)
    K = seq.camera
    for i, r in enumerate(recs):
        lm3d = r.landmarks3d[0]
        posed = lm3d @ seq.rotation[i].T + seq.translation_mm[i]
        d = K["distance_mm"] - posed[:, 2]
        uv = np.stack([K["cx"] + K["focal_px"] * posed[:, 0] / d, K["cy"] - K["focal_px"] * posed[:, 1] / d], 1)
        assert np.abs(uv - seq.lm68[i]).max() < 1.0
    # The face moves right one pixel a frame; the landmarks follow.
    dx = np.diff(seq.lm68[:, :, 0].mean(1))
    assert np.all(np.abs(dx - 1.0) < 0.6)
    gltf, _ = seqio.read_glb((tmp_path / "astro.glb").read_bytes())
    assert len(gltf["meshes"][0]["primitives"][0]["targets"]) == 53
    assert gltf["accessors"][gltf["animations"][0]["samplers"][0]["input"]]["count"] == 6


def test_cli_video_per_frame_meshes_and_names(regressor, face_clip, tmp_path, capsys):
    from facerecon.cli.main import main

    out = tmp_path / "o"
    rc = main(["-q", "reconstruct", "--video", str(face_clip), "-o", str(out), "--method", "regress",
               "--stride", "2", "--window", "3", "--overlap", "1", "--per-frame-meshes", "--outputs",
               "sequence,json"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["astro_sequence.csv", "astro_sequence.npz", "frames"]
    assert sorted(p.name for p in (out / "frames").iterdir()) == [
        f"frame{i:06d}.{ext}" for i in (0, 2, 4) for ext in ("json", "obj")]
    meta = json.loads((out / "frames" / "frame000004.json").read_text())
    assert meta["source"] == "frame000004"
    captured = capsys.readouterr()
    assert "%|" not in captured.err  # -q: no progress bar
    assert main(["reconstruct", "--video", str(tmp_path / "missing.mp4"), "-o", str(out)]) == 2
    assert "missing.mp4: no such video file" in capsys.readouterr().err


def test_progress_bars_follow_quiet():
    import logging

    from facerecon import log

    root = logging.getLogger("facerecon")
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        log.configure(-1)
        assert log.progress(total=3).disable
        log.configure(0)
        assert not log.progress(total=3).disable and log.progress(total=3, show=False).disable
        log.set_progress(False)
        assert log.progress(total=3).disable
    finally:
        log.set_progress(None)
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
