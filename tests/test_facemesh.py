"""Our FaceMesh: the TFLite reader (on a hand-built flatbuffer), strict weight loading, the graph's
pieces (anchors, weighted NMS, ROI, OpenCV-exact warp) and agreement with mediapipe's legacy API."""

from __future__ import annotations

import math
import struct
import sys

import numpy as np
import pytest
import torch
from torch import nn

from facerecon import assets
from facerecon.detect import facemesh as fm
from facerecon.nets import tflite
from facerecon.nets.blazeface import BlazeFaceShortRange, conv_names, load_tflite
from facerecon.nets.facemesh import FaceMeshNet

from .conftest import need_asset, need_data

ASSET = "mediapipe-facemesh"
LANDMARK = "face_landmark/face_landmark.tflite"
SHORT = "face_detection/face_detection_short_range.tflite"


# ----------------------------------------------------------------------------- a tiny flatbuffer writer


class _FB:
    """Writes FlatBuffers front to back (every offset points forward, as uoffset_t requires)."""

    def __init__(self) -> None:
        self.buf = bytearray(b"\0\0\0\0TFL3")

    def _align(self, n: int, extra: int = 0) -> None:
        while (len(self.buf) + extra) % n:
            self.buf.append(0)

    def _patch(self, slot: int, target: int) -> None:
        struct.pack_into("<I", self.buf, slot, target - slot)

    def table(self, fields: dict) -> int:
        """fields: index -> (struct format, value) | ("obj", writer returning the child position)."""
        n = max(fields) + 1 if fields else 0
        layout, off = {}, 4
        for i in sorted(fields):
            size = 4 if fields[i][0] == "obj" else struct.calcsize("<" + fields[i][0])
            off = -(-off // size) * size
            layout[i] = off
            off += size
        self._align(2)
        vt = len(self.buf)
        self.buf += struct.pack("<HH", 4 + 2 * n, off) + b"".join(
            struct.pack("<H", layout.get(i, 0)) for i in range(n))
        self._align(8)
        pos = len(self.buf)
        self.buf += bytes(-(-off // 8) * 8)
        struct.pack_into("<i", self.buf, pos, pos - vt)
        for i, (fmt, val) in fields.items():
            if fmt != "obj":
                struct.pack_into("<" + fmt, self.buf, pos + layout[i], val)
        for i, (fmt, val) in fields.items():
            if fmt == "obj":
                self._patch(pos + layout[i], val())
        return pos

    def vector(self, fmt: str, values) -> int:
        self._align(8, 4)
        pos = len(self.buf)
        self.buf += struct.pack("<I", len(values)) + b"".join(struct.pack("<" + fmt, v) for v in values)
        return pos

    def bytes_vector(self, data: bytes) -> int:
        self._align(16, 4)
        pos = len(self.buf)
        self.buf += struct.pack("<I", len(data)) + data
        return pos

    def string(self, s: str) -> int:
        self._align(4)
        pos = len(self.buf)
        self.buf += struct.pack("<I", len(s)) + s.encode() + b"\0"
        return pos

    def tables(self, writers) -> int:
        self._align(4)
        pos = len(self.buf)
        self.buf += struct.pack("<I", len(writers)) + bytes(4 * len(writers))
        for k, w in enumerate(writers):
            self._patch(pos + 4 + 4 * k, w())
        return pos

    def finish(self, root_writer) -> bytes:
        struct.pack_into("<I", self.buf, 0, root_writer())
        return bytes(self.buf)


def _model_bytes(tensors, ops, op_codes=(6, 3), inputs=(0,), outputs=(3,)) -> bytes:
    """A TFLite model: tensors [(name, shape, type, data bytes | None)], ops [(opcode index,
    inputs, outputs, options fields | None)] with builtin codes `op_codes` (default DEQUANTIZE, CONV_2D)."""
    fb = _FB()
    buffers = [b""] + [t[3] for t in tensors if t[3] is not None]
    buf_index, k = [], 1
    for t in tensors:
        buf_index.append(k if t[3] is not None else 0)
        k += t[3] is not None

    def tensor(i):
        name, shape, ttype, _ = tensors[i]
        return lambda: fb.table({0: ("obj", lambda: fb.vector("i", shape)), 1: ("b", ttype),
                                 2: ("I", buf_index[i]), 3: ("obj", lambda: fb.string(name))})

    def op(o):
        code, ins, outs, opts = o
        f = {0: ("I", code), 1: ("obj", lambda: fb.vector("i", ins)), 2: ("obj", lambda: fb.vector("i", outs))}
        if opts is not None:
            f[3] = ("B", 1)
            f[4] = ("obj", lambda: fb.table(opts))
        return lambda: fb.table(f)

    def subgraph():
        return fb.table({0: ("obj", lambda: fb.tables([tensor(i) for i in range(len(tensors))])),
                         1: ("obj", lambda: fb.vector("i", inputs)), 2: ("obj", lambda: fb.vector("i", outputs)),
                         3: ("obj", lambda: fb.tables([op(o) for o in ops]))})

    def model():
        return fb.table({
            0: ("I", 3),
            1: ("obj", lambda: fb.tables([(lambda c=c: fb.table({0: ("b", min(c, 127)), 3: ("i", c)}))
                                          for c in op_codes])),
            2: ("obj", lambda: fb.tables([subgraph])),
            4: ("obj", lambda: fb.tables([(lambda b=b: fb.table({0: ("obj", lambda: fb.bytes_vector(b))} if b else {}))
                                          for b in buffers])),
        })

    return fb.finish(model)


KERNEL = (np.arange(6, dtype=np.float32).reshape(3, 1, 1, 2) - 2.5) / 4  # exact in float16
BIAS = np.array([0.5, -1.0, 2.0], np.float32)
CONV_OPTS = {0: ("b", 1), 1: ("i", 1), 2: ("i", 1), 3: ("b", 3)}  # VALID, stride 1, RELU6


def _conv_model(extra_weight: bool = False) -> bytes:
    tensors = [
        ("input", (1, 4, 4, 2), 0, None),
        ("c/Kernel", (3, 1, 1, 2), 1, KERNEL.astype("<f2").tobytes()),
        ("c/Bias", (3,), 0, BIAS.astype("<f4").tobytes()),
        ("out", (1, 4, 4, 3), 0, None),
        ("c/Kernel_dequantize", (3, 1, 1, 2), 0, None),
    ]
    ops = [(0, (1,), (4,), None), (1, (0, 4, 2), (3,), CONV_OPTS)]
    if extra_weight:
        tensors += [("d/Bias", (3,), 0, BIAS.tobytes()), ("out2", (1, 4, 4, 3), 0, None)]
        ops.append((2, (3, 5), (6,), None))
    return _model_bytes(tensors, ops, op_codes=(6, 3, 0))


def test_tflite_reader_on_known_tensors():
    m = tflite.parse(_conv_model())
    assert m.names == ("input", "c/Kernel", "c/Bias", "out", "c/Kernel_dequantize")
    assert m.shapes[0] == (1, 4, 4, 2) and m.inputs == (0,) and m.outputs == (3,)
    # The float16 kernel comes back as float32, also under the DEQUANTIZE output the conv reads.
    np.testing.assert_array_equal(m.tensor("c/Kernel"), KERNEL)
    np.testing.assert_array_equal(m.constants[4], KERNEL)
    assert m.constants[4].dtype == np.float32
    np.testing.assert_array_equal(m.tensor("c/Bias"), BIAS)
    assert len(m.ops) == 1  # the constant's DEQUANTIZE is folded away
    op = m.ops[0]
    assert op.name == "CONV_2D" and op.inputs == (0, 4, 2) and op.outputs == (3,)
    assert op.options == {"padding": "VALID", "stride_w": 1, "stride_h": 1, "activation": "RELU6",
                          "dilation_w": 1, "dilation_h": 1}


def test_tflite_reader_rejects_other_files(tmp_path):
    with pytest.raises(tflite.TFLiteError, match="TFL3"):
        tflite.parse(b"\0" * 64)
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(_conv_model()[:40])
    with pytest.raises(tflite.TFLiteError, match="cut.tflite"):
        tflite.read(bad)


class _OneConv(nn.Module):
    def __init__(self, two: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        if two:
            self.conv2 = nn.Conv2d(3, 3, 1)


def test_strict_loading_synthetic(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(_conv_model())
    net = load_tflite(_OneConv(), f, conv_names("conv", "c"), {})
    np.testing.assert_array_equal(net.conv.weight.detach().numpy(), KERNEL.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(net.conv.bias.detach().numpy(), BIAS)
    # A weight in the file that the network does not use: error naming it.
    f.write_bytes(_conv_model(extra_weight=True))
    with pytest.raises(tflite.TFLiteError, match=r"unused in the file \['d/Bias'\]"):
        load_tflite(_OneConv(), f, conv_names("conv", "c"), {})
    # A network weight the file lacks: error naming it.
    f.write_bytes(_conv_model())
    names = conv_names("conv", "c") | conv_names("conv2", "e")
    with pytest.raises(tflite.TFLiteError, match=r"missing from the file \['e/Bias', 'e/Kernel'\]"):
        load_tflite(_OneConv(two=True), f, names, {})
    # A state-dict key without a source.
    with pytest.raises(tflite.TFLiteError, match="conv2.weight"):
        load_tflite(_OneConv(two=True), f, conv_names("conv", "c"), {})


@pytest.mark.assets
def test_strict_loading_real_files():
    root = need_asset(ASSET)
    net = FaceMeshNet.from_tflite(root / LANDMARK)
    assert sum(p.numel() for p in net.parameters()) > 500_000
    with pytest.raises(tflite.TFLiteError, match="weights do not match FaceMeshNet"):
        FaceMeshNet.from_tflite(root / SHORT)
    names = FaceMeshNet.tflite_names()
    del names["face_flag.out.bias"]
    with pytest.raises(tflite.TFLiteError, match=r"conv2d_31/Bias"):
        load_tflite(FaceMeshNet(), root / LANDMARK, names, {f"channel_padding_{j}": 16 * 2 ** (j - 1) for j in (1, 2, 3)})
    # A wrong channel padding (the architecture disagrees with the file's PAD op).
    with pytest.raises(tflite.TFLiteError, match="channel padding"):
        load_tflite(FaceMeshNet(), root / LANDMARK, FaceMeshNet.tflite_names(), {"channel_padding_1": 8,
                    "channel_padding_2": 32, "channel_padding_3": 64})
    det = BlazeFaceShortRange.from_tflite(root / SHORT)
    reg, logit = det(torch.zeros(2, 3, 128, 128))
    assert reg.shape == (2, 896, 16) and logit.shape == (2, 896)


# ----------------------------------------------------------------------------- graph pieces


def test_ssd_anchors_short_range():
    a = fm.ssd_anchors(128, (8, 16, 16, 16), interpolated=True)
    assert a.shape == (896, 2)
    # Stride 8: 16×16 cells, 2 anchors each, row-major; then stride 16: 8×8 cells, 6 each.
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[32], [0.5 / 16, 1.5 / 16])
    np.testing.assert_allclose(a[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_weighted_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 2, 2]], float)
    kps = boxes[:, None, :2] + np.zeros((4, 2, 2))
    scores = np.array([0.9, 0.6, 0.7, 0.8])
    out = fm.weighted_nms(boxes, kps, scores, 0.3)
    assert [round(s, 3) for _, _, s in out] == [0.9, 0.8, 0.7]
    # Boxes 0 and 1 (IoU 9/11) merge, weighted 0.9 : 0.6; box 3 (IoU 0.04) and box 2 stay alone.
    np.testing.assert_allclose(out[0][0], [0.6 * 1 / 1.5, 0, 10 + 0.6 / 1.5, 10])
    np.testing.assert_allclose(out[0][1][0], [0.4, 0])
    np.testing.assert_allclose(out[1][0], boxes[3])
    np.testing.assert_allclose(out[2][0], boxes[2])


def test_roi_from_detection_levels_the_eyes():
    kp = np.zeros((6, 2))
    kp[0], kp[1] = [0.4, 0.4], [0.6, 0.4]
    d = fm.Detection(np.array([0.3, 0.3, 0.7, 0.8]), kp, 0.9)
    r = fm.roi_from_detection(d, 200, 100)
    assert r.rotation == pytest.approx(0.0)
    # Square on the longer pixel side (0.4 * 200 = 80 px vs 0.5 * 100 = 50 px), × 1.5.
    assert (r.width * 200, r.height * 100) == pytest.approx((120, 120))
    assert (r.xc, r.yc) == pytest.approx((0.5, 0.55))
    kp[1] = [0.6, 0.4 + 0.2 * 200 / 100]  # right eye 45° lower on screen: rotate by +45°
    r = fm.roi_from_detection(fm.Detection(d.box, kp, 0.9), 200, 100)
    assert r.rotation == pytest.approx(math.pi / 4)


def test_warp_axis_aligned_closed_form():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    # A 20×20 window at scale 1: dst (u, v) reads src (u + 10, v + 5) exactly.
    out = fm.warp(img, (20.0, 15.0, 20.0, 20.0, 0.0), 20, "zero")[0].numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(out, img[5:25, 10:30])
    # Half-pixel positions average two pixels, rounding half up (OpenCV's fixed point).
    out = fm.warp(img, (20.5, 15.0, 20.0, 20.0, 0.0), 20, "zero")[0].numpy().transpose(1, 2, 0)
    ref = (img[5:25, 10:30].astype(int) + img[5:25, 11:31] + 1) // 2
    np.testing.assert_array_equal(out, ref)
    # Outside the image: zeros or the replicated edge.
    z = fm.warp(img, (-100.0, -100.0, 10.0, 10.0, 0.0), 4, "zero")
    assert float(z.abs().max()) == 0.0
    e = fm.warp(img, (-100.0, -100.0, 10.0, 10.0, 0.0), 4, "replicate")[0].numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(e, np.broadcast_to(img[0, 0], (4, 4, 3)))


def test_warp_matches_opencv():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (comes with mediapipe-legacy) not installed")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
    for roi, size, border in [((85.0, 75.0, 170.0, 170.0, 0.0), 128, "zero"), ((85.0, 75.0, 150.0, 150.0, 0.0), 128, "zero"),
                              ((80.3, 70.7, 90.2, 90.2, 0.35), 192, "replicate"),
                              ((30.0, 20.0, 120.0, 120.0, -1.2), 64, "zero")]:
        cx, cy, w, h, rot = roi
        src = cv2.boxPoints(cv2.RotatedRect((cx, cy), (w, h), rot * 180 / math.pi))
        dst = np.float32([[0, size], [0, 0], [size, 0], [size, size]])
        ref = cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT)
        ours = fm.warp(img, roi, size, border)[0].numpy().transpose(1, 2, 0)
        # Bit-identical, also where coordinates sit on 1/32-pixel rounding ties (170 -> 128: x·32 = 42.5·j).
        np.testing.assert_array_equal(ours, ref)


# ----------------------------------------------------------------------------- assets


def test_asset_found_inside_an_installed_package(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg_fm"
    (pkg / "modules").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert assets.package_paths(("fakepkg_fm", "modules")) == [pkg / "modules"]
    assert "fakepkg_fm" not in sys.modules
    assert assets.package_paths(("no_such_package_fm", "modules")) == []
    a = assets.REGISTRY[ASSET]
    assert a.package_dir == ("mediapipe", "modules") and a.licence == "Apache-2.0"
    monkeypatch.setitem(assets.REGISTRY, ASSET, assets.Asset(
        a.name, a.description, a.licence, a.obtain, (("x.bin", None),), package_dir=("fakepkg_fm", "modules")))
    (pkg / "modules" / "x.bin").write_bytes(b"1")
    monkeypatch.setenv("FACERECON_ASSETS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.find(ASSET) == pkg / "modules"


# ----------------------------------------------------------------------------- against mediapipe


def _dev_faces(n: int):
    from facerecon.io.image import load_image

    root = need_data("aflw2000-3d-dev")
    files = sorted((root / "AFLW2000").glob("*.jpg"))[:n]
    boxes = np.load(root / "protocol" / "AFLW2000-3D_crop.roi_box.npy")[:n, :4]
    return [(load_image(f).pixels, b) for f, b in zip(files, boxes)]


@pytest.mark.assets
def test_points_match_mediapipe_legacy():
    """Our graph + networks against mediapipe 0.10's `mp.solutions.face_mesh` on dev faces: the
    fit's path (FaceMesh on a crop around a box) and FaceMesh on the whole image."""
    pytest.importorskip("mediapipe", reason="reference needs the optional extra 'mediapipe-legacy'")
    import mediapipe as mp

    if not hasattr(mp, "solutions"):
        pytest.skip("installed mediapipe has no legacy mp.solutions API")
    need_asset(ASSET)
    from facerecon.detect.mediapipe import MediaPipeLandmarker

    ours, ref = MediaPipeLandmarker(), MediaPipeLandmarker(backend="mediapipe-legacy")
    try:
        compared = 0
        for pixels, box in _dev_faces(4):
            for a, b in [(ref.mesh_in_box(pixels, box), ours.mesh_in_box(pixels, box)),
                         (ref.mesh(pixels), ours.mesh(pixels))]:
                assert (a is None) == (b is None)
                if a is None:
                    continue
                d = np.hypot(*(a[:, :2] - b[:, :2]).T)
                assert d.mean() < 0.01 and d.max() < 0.05, (d.mean(), d.max())
                np.testing.assert_allclose(b[:, 2], a[:, 2], atol=0.1)
                np.testing.assert_allclose(ours.mapping(b), ref.mapping(a), atol=0.1)
                compared += 1
        assert compared >= 6
        # No face: both say so.
        blank = np.full((192, 192, 3), 128, np.uint8)
        assert ours.mesh(blank) is None and ref.mesh(blank) is None
    finally:
        ref.close()
