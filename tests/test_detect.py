"""Detectors and landmark backends: NMS, anchors, strict loading, RetinaFace/FaceBoxes on a real
AFLW2000-3D image, the 468->68 mapping file, optional-extra errors and the registry."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from facerecon.detect import nms as boxutil
from facerecon.errors import MissingExtraError
from facerecon.geometry.landmarks import lm5_from_lm68_contour
from facerecon.nets import faceboxes as fbnet
from facerecon.nets import retinaface as rfnet

from .conftest import need_asset, need_data

DEV_IMAGE = "image00014"  # near-frontal (yaw 6 deg), one face


# ----------------------------------------------------------------------------- box utilities


def _brute_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(boxutil.box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= thr for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (60, 2))
    wh = rng.uniform(5, 40, (60, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(size=60)
    scores[:5] = scores[5]  # ties must resolve by index, like the reference
    for thr in (0.0, 0.3, 0.5, 0.9):
        assert boxutil.nms(boxes, scores, thr).tolist() == _brute_nms(boxes, scores, thr)
    keep_t = boxutil.nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4)
    assert keep_t.tolist() == _brute_nms(boxes, scores, 0.4)


def test_box_iou_and_empty_nms():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(boxutil.box_iou(a, b)[0], [50 / 150, 0.0, 1.0])
    assert boxutil.nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    assert boxutil.decode_landmarks(np.zeros((0, 10)), np.zeros((0, 4)), (0.1, 0.2)).shape == (0, 5, 2)


def test_decode_zero_offsets_gives_anchor():
    pri = np.array([[0.5, 0.25, 0.2, 0.1]], np.float32)
    np.testing.assert_allclose(boxutil.decode_boxes(np.zeros((1, 4)), pri, (0.1, 0.2)), [[0.4, 0.2, 0.6, 0.3]])
    np.testing.assert_allclose(boxutil.decode_landmarks(np.zeros((1, 10)), pri, (0.1, 0.2))[0], [[0.5, 0.25]] * 5)


# ----------------------------------------------------------------------------- anchors vs nets


@pytest.mark.parametrize("hw", [(450, 450), (97, 130), (640, 480)])
def test_retinaface_prior_count_matches_net(hw):
    h, w = hw
    pri = rfnet.prior_boxes(h, w)
    expected = sum(math.ceil(h / s) * math.ceil(w / s) * 2 for s in rfnet.STEPS)
    assert pri.shape == (expected, 4)
    with torch.inference_mode():
        loc, cls, ldm = rfnet.RetinaFace().eval()(torch.zeros(1, 3, h, w))
    assert loc.shape == (1, expected, 4) and cls.shape == (1, expected, 2) and ldm.shape == (1, expected, 10)
    # First anchors: stride-8 cell (0, 0), sizes 10 and 20; last: stride-32 bottom-right, size 256.
    np.testing.assert_allclose(pri[0], [4 / w, 4 / h, 10 / w, 10 / h], rtol=1e-6)
    np.testing.assert_allclose(pri[1, 2:], [20 / w, 20 / h], rtol=1e-6)
    fh, fw = math.ceil(h / 32), math.ceil(w / 32)
    np.testing.assert_allclose(pri[-1], [(fw - 0.5) * 32 / w, (fh - 0.5) * 32 / h, 256 / w, 256 / h], rtol=1e-6)


def _two_faces():
    boxes = torch.tensor([[0.10, 0.20, 0.45, 0.60], [0.70, 0.70, 0.74, 0.745]])  # a large and a tiny face
    lm5 = torch.stack([b[:2] + (b[2:] - b[:2]) * torch.rand(5, 2, generator=torch.Generator().manual_seed(i))
                       for i, b in enumerate(boxes)])
    return boxes, lm5


def test_retinaface_targets_decode_back_to_the_boxes():
    """match_anchors encodes what decode_boxes / decode_landmarks decode (the detector's inverse), and
    every box gets a positive anchor, the tiny one too (its best anchor, whatever the IoU)."""
    pri = torch.from_numpy(rfnet.prior_boxes(160, 160))
    boxes, lm5 = _two_faces()
    pos, which, loc, lm = rfnet.match_anchors(boxes, lm5, pri)
    assert set(which[pos].tolist()) == {0, 1} and int(pos.sum()) > 2
    dec = boxutil.decode_boxes(loc[pos].numpy(), pri[pos].numpy(), rfnet.VARIANCES)
    np.testing.assert_allclose(dec, boxes[which[pos]].numpy(), atol=1e-5)
    np.testing.assert_allclose(boxutil.decode_landmarks(lm[pos].numpy(), pri[pos].numpy(), rfnet.VARIANCES),
                               lm5[which[pos]].numpy(), atol=1e-5)
    # the positives of the large face are exactly its anchors with IoU >= 0.35 (brute force)
    b = boxes[0].numpy()
    c = np.concatenate([pri[:, :2] - pri[:, 2:] / 2, pri[:, :2] + pri[:, 2:] / 2], 1)
    iw = np.clip(np.minimum(c[:, 2], b[2]) - np.maximum(c[:, 0], b[0]), 0, None)
    ih = np.clip(np.minimum(c[:, 3], b[3]) - np.maximum(c[:, 1], b[1]), 0, None)
    iou = iw * ih / ((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)
    assert set(np.flatnonzero((pos & (which == 0)).numpy())) == set(np.flatnonzero(iou >= 0.35))


def test_retinaface_multibox_loss_zero_at_the_targets_and_hard_negatives():
    pri = torch.from_numpy(rfnet.prior_boxes(160, 160))
    boxes, lm5 = _two_faces()
    pos, which, loc_t, lm_t = rfnet.match_anchors(boxes, lm5, pri)
    lm_w = torch.tensor([1.0, 0.0])
    cls = torch.stack([pos.float() * -20 + 10, pos.float() * 20 - 10], 1)[None]  # confident and right
    loss, parts = rfnet.multibox_loss(loc_t[None], cls, lm_t[None], [(pos, which, loc_t, lm_t, lm_w)])
    assert float(loss) < 1e-6 and parts["loc"] == 0 and parts["lm"] == 0
    # the second face's landmarks carry no weight: moving them costs nothing
    lm_p = lm_t.clone()
    lm_p[pos & (which == 1)] += 5
    assert rfnet.multibox_loss(loc_t[None], cls, lm_p[None], [(pos, which, loc_t, lm_t, lm_w)])[1]["lm"] == 0
    # undecided logits: the classification loss counts the positives and 7x as many hardest negatives
    cls0 = torch.zeros(1, len(pri), 2, requires_grad=True)
    cls0.data[0, :, 1] = torch.linspace(-1, 1, len(pri))  # negatives differ in difficulty
    loss, parts = rfnet.multibox_loss(loc_t[None], cls0, lm_t[None], [(pos, which, loc_t, lm_t, lm_w)])
    loss.backward()
    n = int(pos.sum())
    touched = cls0.grad[0].abs().sum(1) > 0
    assert int(touched.sum()) == n + 7 * n and bool(touched[pos].all())
    neg_scores = cls0.data[0, :, 1][touched & ~pos]
    assert float(neg_scores.min()) >= float(cls0.data[0, :, 1][~touched & ~pos].max())  # the hardest


@pytest.mark.parametrize("hw", [(450, 450), (300, 520)])
def test_faceboxes_prior_count_matches_net(hw):
    h, w = hw
    pri = fbnet.prior_boxes(h, w)
    expected = sum(math.ceil(h / s) * math.ceil(w / s) * n for s, n in zip(fbnet.STEPS, (21, 1, 1)))
    assert pri.shape == (expected, 4)
    with torch.inference_mode():
        loc, conf = fbnet.FaceBoxesNet().eval()(torch.zeros(1, 3, h, w))
    assert loc.shape == (1, expected, 4) and conf.shape == (1, expected, 2)
    # The 16 dense 32-px anchors of cell (0, 0) step by 8 px.
    np.testing.assert_allclose(pri[:4, 0] * w, [0, 8, 16, 24], atol=1e-4)
    np.testing.assert_allclose(pri[:16:4, 1] * h, [0, 8, 16, 24], atol=1e-4)


# ----------------------------------------------------------------------------- strict loading


@pytest.mark.assets
def test_retinaface_loads_strictly(tmp_path):
    from facerecon import assets

    need_asset("retinaface")
    f = assets.path("retinaface", "mobilenet0.25_Final.pth")
    net = rfnet.load_retinaface(f)
    sd = torch.load(f, map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(sd) and len(sd) == 300
    broken = dict(sd)
    broken.pop("LandmarkHead.2.conv1x1.bias")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        rfnet.load_retinaface(tmp_path / "broken.pth")


@pytest.mark.assets
def test_faceboxes_loads_strictly():
    from facerecon import assets

    need_asset("3ddfa-v2")
    f = assets.path("3ddfa-v2", "FaceBoxesProd.pth")
    sd = torch.load(f, map_location="cpu", weights_only=True)
    assert set(fbnet.load_faceboxes(f).state_dict()) == set(sd)


# ----------------------------------------------------------------------------- on a real image


@pytest.fixture(scope="module")
def dev_face():
    import scipy.io as sio

    from facerecon.io.image import load_image

    d = need_data("aflw2000-3d-dev") / "AFLW2000"
    gt = sio.loadmat(d / f"{DEV_IMAGE}.mat")["pt3d_68"][:2].T.astype(np.float32)
    return load_image(d / f"{DEV_IMAGE}.jpg").pixels, gt


def _gt_box(gt):
    return np.r_[gt.min(0), gt.max(0)]


def test_retinaface_weights_resolution(tmp_path, monkeypatch):
    """"wider" is the asset, a path is itself, "auto" the first fine-tuned file found, else "wider"."""
    from facerecon import assets
    from facerecon.detect import retinaface as rd

    monkeypatch.setattr(assets, "path", lambda name, filename, explicit=None: Path("/assets") / name / filename)
    assert rd.resolve_weights("wider") == Path("/assets/retinaface/mobilenet0.25_Final.pth")
    assert rd.resolve_weights(tmp_path / "x.pth") == tmp_path / "x.pth"
    tuned = tmp_path / "tuned.pth"
    tuned.write_bytes(b"")
    monkeypatch.setattr(rd, "default_weights_paths", lambda: [tmp_path / "missing.pth", tuned])
    assert rd.resolve_weights("auto") == tuned
    monkeypatch.setattr(rd, "default_weights_paths", lambda: [tmp_path / "missing.pth"])
    assert rd.resolve_weights("auto") == Path("/assets/retinaface/mobilenet0.25_Final.pth")


@pytest.mark.assets
def test_fine_tuned_retinaface_loads_strictly_and_finds_the_face(dev_face):
    """The shipped fine-tuned weights (weights/retinaface/) are a whole RetinaFace that still finds a
    frontal dev face with the original's box convention (the pipelines use their boxes only)."""
    from facerecon.detect import retinaface as rd

    path = next((p for p in rd.default_weights_paths() if p.is_file()), None)
    if path is None:
        pytest.skip("fine-tuned RetinaFace weights not present (weights/retinaface/retinaface_profiles.pth)")
    need_asset("retinaface")
    img, _ = dev_face
    tuned, wider = rd.RetinaFaceDetector("auto"), rd.RetinaFaceDetector("wider")
    assert tuned.weights == path
    a, b = tuned.detect(img), wider.detect(img)
    assert len(a) == 1 and a[0].score > 0.9
    assert boxutil.box_iou(a[0].box[None], b[0].box[None])[0, 0] > 0.8


def _nme(lm, gt):
    return float(np.linalg.norm(lm - gt, axis=1).mean() / np.sqrt(np.prod(gt.max(0) - gt.min(0))))


@pytest.fixture(scope="module")
def retinaface():
    need_asset("retinaface")
    from facerecon.detect.retinaface import RetinaFaceDetector

    return RetinaFaceDetector()


@pytest.mark.assets
def test_retinaface_finds_face(retinaface, dev_face):
    img, gt = dev_face
    faces = retinaface.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.9 and f.source == "retinaface"
    assert f.box.shape == (4,) and f.lm5.shape == (5, 2) and f.lm5.dtype == np.float32
    # The box covers the inner face (brows to chin) and nearly all 68 points (jaw ends may poke out).
    inside = (gt[:, 0] >= f.box[0] - 5) & (gt[:, 0] <= f.box[2] + 5) & (gt[:, 1] >= f.box[1]) & (gt[:, 1] <= f.box[3] + 5)
    assert inside.mean() >= 0.95
    assert boxutil.box_iou(f.box[None], _gt_box(gt)[None])[0, 0] > 0.6
    # 5 points within 5 % of the face size of the GT-derived ones (eye centres, nose tip, mouth corners),
    # in image-left/right order.
    err = np.linalg.norm(f.lm5 - lm5_from_lm68_contour(gt), axis=1) / np.sqrt(np.prod(gt.max(0) - gt.min(0)))
    assert err.max() < 0.05, err
    assert f.lm5[0, 0] < f.lm5[1, 0] and f.lm5[3, 0] < f.lm5[4, 0]


@pytest.mark.assets
def test_retinaface_downscale_maps_back(retinaface, dev_face):
    """A big image is shrunk to max_size before the net; boxes come back in original pixels."""
    from PIL import Image as PILImage

    from facerecon.detect.retinaface import RetinaFaceDetector

    img, _ = dev_face
    img640 = np.asarray(PILImage.fromarray(img).resize((640, 640), PILImage.BILINEAR))
    big = np.asarray(PILImage.fromarray(img640).resize((1600, 1600), PILImage.BILINEAR))
    ref = RetinaFaceDetector(max_size=None).detect(img640)[0]
    f_big = retinaface.detect(big)[0]  # max_size 640: shrunk by 0.4, i.e. back to ~img640
    k = 1600 / 640
    np.testing.assert_allclose(f_big.box, (ref.box + 0.5) * k - 0.5, atol=3 * k)
    np.testing.assert_allclose(f_big.lm5, (ref.lm5 + 0.5) * k - 0.5, atol=3 * k)


@pytest.mark.assets
def test_retinaface_blank_image_finds_nothing(retinaface):
    assert retinaface.detect(np.full((200, 300, 3), 128, np.uint8)) == []


@pytest.mark.assets
def test_faceboxes_finds_face(dev_face):
    need_asset("3ddfa-v2")
    from facerecon.detect.faceboxes import FaceBoxesDetector

    img, gt = dev_face
    faces = FaceBoxesDetector().detect(img)
    assert len(faces) >= 1
    assert boxutil.box_iou(faces[0].box[None], _gt_box(gt)[None])[0, 0] > 0.6
    assert faces[0].lm5_from_box and faces[0].lm5.shape == (5, 2)


# ----------------------------------------------------------------------------- mapping + extras


def test_mapping_json_well_formed():
    d = json.loads(resources.files("facerecon").joinpath("data", "mediapipe_468_to_68.json").read_text())
    assert len(d["nearest"]) == 68 and all(0 <= i < 468 for i in d["nearest"])
    sp = d["sparse"]
    idx = np.asarray(sp["index"])
    w = np.asarray(sp["weights"])
    assert idx.shape[0] == 68 and ((idx >= 0) & (idx < 468)).all()
    assert w.shape == (len(sp["yaw_centres"]), 68, idx.shape[1])
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)
    assert np.all(np.diff(sp["yaw_centres"]) > 0)


def test_mapping_is_affine_equivariant():
    from facerecon.detect.mediapipe import Mapping468To68

    m = Mapping468To68.load()
    rng = np.random.default_rng(0)
    mesh = rng.uniform(0, 100, (468, 3))
    out = m(mesh)
    assert out.shape == (68, 2)
    # Shift + uniform scale of the mesh moves the 68 points the same way (weights sum to 1; the
    # yaw proxy is invariant to both).
    np.testing.assert_allclose(m(mesh * 2 + 7)[:, :2], out * 2 + 7, rtol=1e-4, atol=1e-3)


def test_missing_mediapipe_names_extra(monkeypatch):
    from facerecon.detect import mediapipe as mpmod

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "facerecon\[mediapipe-legacy\]"') as e:
        mpmod.MediaPipeLandmarker(backend="mediapipe-legacy")
    assert "mediapipe-legacy backend" in str(e.value)


def test_missing_dlib_names_extra(monkeypatch):
    from facerecon.detect import dlib as dlibmod

    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(MissingExtraError, match=r'pip install "facerecon\[dlib\]"'):
        dlibmod.DlibLandmarker()


def test_mediapipe_on_dev_image(dev_face):
    need_asset("mediapipe-facemesh")
    from facerecon.detect.mediapipe import MediaPipeLandmarker

    img, gt = dev_face
    mp = MediaPipeLandmarker()
    try:
        faces = mp.detect(img)
        assert len(faces) == 1
        f = faces[0]
        assert f.dense.shape == (468, 3) and f.lm68.shape == (68, 2)
        assert _nme(f.lm68, gt) < 0.05
        g = mp.landmarks(img, _gt_box(gt))
        assert g is not None and _nme(g.lm68, gt) < 0.05
        assert mp.landmarks(np.zeros((200, 200, 3), np.uint8), [50, 50, 150, 150]) is None
    finally:
        mp.close()


def test_dlib_on_dev_image():
    pytest.importorskip("dlib", reason="optional extra 'dlib' (dlib-bin) not installed")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("optional extra 'dlib' (face-recognition-models) not installed")
    import scipy.io as sio

    from facerecon.detect.dlib import DlibLandmarker
    from facerecon.io.image import load_image

    # image00013 (yaw 1 deg): on DEV_IMAGE HOG's box sits low and the predictor misses (NME 10 %).
    d = need_data("aflw2000-3d-dev") / "AFLW2000"
    img = load_image(d / "image00013.jpg").pixels
    gt = sio.loadmat(d / "image00013.mat")["pt3d_68"][:2].T
    faces = DlibLandmarker().detect(img)
    assert len(faces) == 1 and faces[0].lm68.shape == (68, 2)
    assert _nme(faces[0].lm68, gt) < 0.04


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
    from facerecon.detect import registry

    assert set(registry.available()) >= {"retinaface", "faceboxes", "mediapipe", "dlib", "3ddfa", "default", "fast"}
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        registry.get_detector("nope")


@pytest.mark.assets
def test_registry_builds_backends():
    need_asset("retinaface")
    need_asset("3ddfa-v2")
    from facerecon.detect.faceboxes import FaceBoxesDetector
    from facerecon.detect.registry import get_detector
    from facerecon.detect.retinaface import RetinaFaceDetector

    r = get_detector("RetinaFace", score_threshold=0.7)
    assert isinstance(r, RetinaFaceDetector) and r.score_threshold == 0.7
    assert isinstance(get_detector("faceboxes"), FaceBoxesDetector)
    assert get_detector("tddfa").name == "3ddfa"


@pytest.mark.assets
def test_default_pipeline_on_dev_image(dev_face):
    need_asset("retinaface")
    need_asset("3ddfa-v2")
    from facerecon.detect.registry import get_detector

    img, gt = dev_face
    pl = get_detector("default")
    faces = pl.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.lm68.shape == (68, 2) and _nme(f.lm68, gt) < 0.04
    assert f.source.startswith("retinaface+") and f.pose is not None and f.yaw == f.pose.yaw
    assert f.tddfa is not None and f.lm68_3d.shape == (68, 3) and f.mediapipe_weight is not None
    assert f.detector_lm5 is not None and f.detector_lm5.shape == (5, 2)
    # FaceMesh's points ride along for the fitter (when MediaPipe is installed), around the face.
    if pl.mediapipe is not None:
        assert f.dense is not None and f.dense.shape[0] >= 468
        assert np.abs(np.median(f.dense[:, :2], 0) - np.median(f.lm68, 0)).max() < 0.1 * f.size
        np.testing.assert_allclose(pl.attach_dense(img, replace(f, dense=None)).dense, f.dense, atol=1e-3)
    fast = get_detector("fast")
    assert fast.detect(img)[0].dense is None
    assert fast.attach_dense(img, replace(f, dense=None)).dense is None
    # Padding retry: a face cut by the frame is still found, in original coordinates.
    crop = img[200:, 120:340]
    faces = pl.detect(crop)
    assert faces and faces[0].box[1] < 40


@pytest.mark.assets
def test_auto_detector_follows_method(dev_face):
    """'auto': the regressor alone gets the fast pipeline (one 3DDFA pass, no TTA confidences);
    fitting keeps the default's test-time augmentation."""
    need_asset("retinaface")
    need_asset("3ddfa-v2")
    need_asset("ict-facekit")
    from facerecon.api import FaceReconstructor
    from facerecon.detect.pipeline import DefaultPipeline, FastPipeline

    fast = FaceReconstructor(method="regress").detector
    assert isinstance(fast, FastPipeline) and not fast.tta
    for method in ("fit", "regress+refine"):
        d = FaceReconstructor(method=method).detector
        assert type(d) is DefaultPipeline and d.tta
    img, gt = dev_face
    f = fast.detect(img)[0]
    assert f.lm68_conf is None and _nme(f.lm68, gt) < 0.05


def test_bbox_from_roi_box_inverts_roi_rule():
    from facerecon.detect.crop import bbox_from_roi_box, roi_box_from_bbox

    for box in ([10.0, 20.0, 110.0, 120.0], [-5.0, 3.0, 45.5, 53.5], [100.0, 80.0, 400.0, 380.0]):
        back = bbox_from_roi_box(roi_box_from_bbox(box))
        # roi_box_from_bbox truncates its side to an integer: recovered within a pixel.
        assert np.abs(back - np.asarray(box)).max() < 1.0, (box, back)


def test_suppress_contained_drops_boxes_mostly_inside_or_around_a_better_face():
    from facerecon.detect.base import Face
    from facerecon.detect.pipeline import suppress_contained

    def face(box, score):
        return Face(box=np.array(box, np.float32), score=score, lm5=np.zeros((5, 2), np.float32))

    best = face([100, 100, 200, 200], 0.99)
    around = face([90, 90, 260, 230], 0.8)  # covers the face and background beside it
    inside = face([120, 120, 190, 190], 0.7)  # a part of the face
    other = face([300, 100, 380, 180], 0.95)  # another person, overlapping nothing
    edge = face([180, 100, 280, 200], 0.9)  # overlaps `best` by 20 % of its own area: kept
    kept = suppress_contained([around, inside, best, other, edge])
    assert {tuple(f.box) for f in kept} == {tuple(best.box), tuple(other.box), tuple(edge.box)}
    assert [f.score for f in kept] == [0.99, 0.9, 0.95]  # largest first (edge and best tie in size)


class _FakeBoxes:
    """A box detector returning fixed faces on images of one size (the pipeline's padded / upscaled
    retries see nothing), filtered by its score threshold like the real ones."""

    def __init__(self, faces, score_threshold=0.0, shape=(500, 500)):
        self.faces, self.score_threshold, self.shape = faces, score_threshold, shape

    def detect(self, pixels):
        if pixels.shape[:2] != self.shape:
            return []
        return [f for f in self.faces if f.score >= self.score_threshold]


def _fake_pipeline(retina, conf_of, faceboxes=()):
    """A DefaultPipeline whose detectors return `retina` / `faceboxes` faces and whose landmarks
    give each box the mean TTA confidence conf_of(box) (landmarks = a grid filling the box)."""
    from facerecon.detect.base import Face
    from facerecon.detect.pipeline import RESCUE_LIKENESS, DefaultPipeline

    pl = object.__new__(DefaultPipeline)
    pl.min_score, pl.rescue_score, pl.rescue_likeness, pl.tta = 0.9, 0.5, RESCUE_LIKENESS, True
    pl.retinaface = _FakeBoxes(retina, 0.5)
    pl._faceboxes = _FakeBoxes(list(faceboxes), 0.9)

    def landmarks(pixels, box, score=1.0, detector_face=None):
        b = np.asarray(box, np.float32)
        g = np.stack(np.meshgrid(np.linspace(b[0], b[2], 17), np.linspace(b[1], b[3], 4)), -1).reshape(-1, 2)
        lm = np.concatenate([g, g[:0], np.repeat(g[:1], 68 - len(g), 0)]).astype(np.float32)
        return Face(box=b, score=score, lm5=lm[:5], lm68=lm, lm68_conf=np.full(68, conf_of(tuple(b)), np.float32))

    pl.landmarks = landmarks
    return pl


def _box_face(box, score):
    from facerecon.detect.base import Face

    return Face(box=np.array(box, np.float32), score=score, lm5=np.zeros((5, 2), np.float32))


def test_pipeline_nested_boxes_resolved_by_face_likeness():
    """A false box around a profile face and the background (score 0.98, landmarks scattered:
    confidence 0.1) must not suppress the face inside it (0.92, confidence 0.6)."""
    img = np.zeros((500, 500, 3), np.uint8)
    big, face = _box_face([60, 10, 300, 270], 0.98), _box_face([90, 170, 170, 260], 0.92)
    conf = {tuple(big.box): 0.1, tuple(face.box): 0.6}
    pl = _fake_pipeline([big, face], conf.__getitem__)
    out = pl.detect(img)
    assert len(out) == 1 and tuple(out[0].box) == tuple(face.box)
    # boxes() (no landmarks) keeps the detector-score rule
    assert [tuple(f.box) for f in pl.boxes(img)] == [tuple(big.box)]
    # a consistent big box (a real face, confidence 0.6) still wins over a part of it
    conf[tuple(big.box)] = 0.6
    assert tuple(_fake_pipeline([big, face], conf.__getitem__).detect(img)[0].box) == tuple(big.box)


def test_pipeline_rescues_weak_boxes_only_when_face_like():
    from facerecon.detect.pipeline import RESCUE_LIKENESS

    img = np.zeros((500, 500, 3), np.uint8)  # >= 400 px: no 2x-upscale retry
    weak = _box_face([100, 100, 200, 220], 0.7)
    # landmarks agree (0.7 x 0.6 = 0.42 >= RESCUE_LIKENESS): rescued
    out = _fake_pipeline([weak], lambda b: 0.6).detect(img)
    assert len(out) == 1 and tuple(out[0].box) == tuple(weak.box) and out[0].score == 0.7
    # scattered landmarks: nothing
    assert _fake_pipeline([weak], lambda b: 0.9 * RESCUE_LIKENESS / 0.7).detect(img) == []
    # weak boxes from the padded retry are mapped back (x - pad) and deduplicated with the first pass's
    pl = _fake_pipeline([weak], lambda b: 0.6)
    pl.retinaface.shape = (750, 750)  # the image padded by 25 % per side: 125 px
    out = pl.detect(img)
    assert len(out) == 1
    np.testing.assert_allclose(out[0].box, weak.box - 125)
    # a smaller weak box beside a face-like strong one is never landmarked (it could not come first)
    strong = _box_face([300, 300, 360, 360], 0.95)
    seen = []
    pl = _fake_pipeline([weak, strong], lambda b: seen.append(b) or 0.6)
    pl.retinaface.faces[1] = _box_face([300, 300, 460, 460], 0.95)  # larger than the weak box
    assert [tuple(f.box) for f in pl.detect(img)] == [(300, 300, 460, 460)] and len(seen) == 1
    # a larger weak box (a profile RetinaFace scores 0.7) beside a smaller frontal face: rescued, and
    # first when face-like (0.7 x 0.8 = 0.56 >= FACE_LIKENESS), second when only rescue-worthy (0.42)
    out = _fake_pipeline([weak, strong], {tuple(weak.box): 0.8, tuple(strong.box): 0.95}.__getitem__).detect(img)
    assert [tuple(f.box) for f in out] == [tuple(weak.box), tuple(strong.box)]
    out = _fake_pipeline([weak, strong], {tuple(weak.box): 0.6, tuple(strong.box): 0.95}.__getitem__).detect(img)
    assert [tuple(f.box) for f in out] == [tuple(strong.box), tuple(weak.box)]
    # ... unless its landmarks scatter
    out = _fake_pipeline([weak, strong], {tuple(weak.box): 0.2, tuple(strong.box): 0.95}.__getitem__).detect(img)
    assert [tuple(f.box) for f in out] == [tuple(strong.box)]
    # FaceBoxes' boxes count as strong ones
    out = _fake_pipeline([], lambda b: 0.6, faceboxes=[strong]).detect(img)
    assert [tuple(f.box) for f in out] == [tuple(strong.box)]


def test_pipeline_ranks_face_like_faces_by_size():
    """A profile (likeness 0.55) larger than a frontal face (0.96) comes first; a larger false box
    (0.1) never does; among non-face-like boxes size x likeness decides."""
    from facerecon.detect.pipeline import FACE_LIKENESS

    img = np.zeros((500, 500, 3), np.uint8)
    profile, frontal = _box_face([20, 20, 150, 150], 0.99), _box_face([300, 300, 390, 390], 1.0)
    false = _box_face([200, 0, 480, 250], 0.99)
    conf = {tuple(profile.box): 0.56, tuple(frontal.box): 0.96, tuple(false.box): 0.1}
    out = _fake_pipeline([profile, frontal, false], conf.__getitem__).detect(img)
    assert [tuple(f.box) for f in out] == [tuple(profile.box), tuple(frontal.box), tuple(false.box)]
    assert 0.99 * 0.56 >= FACE_LIKENESS > 0.99 * 0.1
    # the old rule (size x likeness) would have picked the frontal face: 130 x 0.55 < 90 x 0.96
    assert 130 * 0.99 * 0.56 < 90 * 0.96


def test_head_size_ignores_head_turns_and_ranks_a_profile_by_its_head():
    """head_size is the 3-D landmarks' RMS radius: unchanged by any rotation. A profile whose box is
    narrower than a frontal face's (box sizes 110 vs 120) but whose head is larger (3-D radius 60 vs
    50) comes first; without 3-D landmarks the box size decides."""
    from dataclasses import replace

    import torch

    from facerecon.detect.pipeline import head_size
    from facerecon.geometry.rotations import euler_to_matrix

    rng = np.random.default_rng(0)
    head = rng.normal(size=(68, 3)) * [1.0, 1.2, 0.6]
    head *= 50.0 / np.sqrt(((head - head.mean(0)) ** 2).sum(1).mean())
    f = _box_face([0, 0, 10, 10], 0.99)
    assert head_size(replace(f, lm68_3d=head.astype(np.float32))) == pytest.approx(50.0, rel=1e-5)
    R = euler_to_matrix(torch.tensor([0.3, 1.4, -0.2], dtype=torch.float64)).numpy()
    turned = head @ R.T + [200.0, 100.0, 7.0]
    assert head_size(replace(f, lm68_3d=turned.astype(np.float32))) == pytest.approx(50.0, rel=1e-5)

    img = np.zeros((500, 500, 3), np.uint8)
    profile, frontal = _box_face([20, 20, 110, 154], 0.99), _box_face([300, 300, 420, 420], 0.99)
    radius = {tuple(profile.box): 60.0, tuple(frontal.box): 50.0}
    pl = _fake_pipeline([profile, frontal], lambda b: 0.9)
    plain = pl.landmarks
    pl.landmarks = lambda pixels, box, score=1.0, detector_face=None: replace(
        plain(pixels, box, score, detector_face), lm68_3d=(head * radius[tuple(np.asarray(box, np.float32))] / 50.0
                                                           ).astype(np.float32))
    assert profile.size < frontal.size
    assert [tuple(f.box) for f in pl.detect(img)] == [tuple(profile.box), tuple(frontal.box)]
    assert [tuple(f.box) for f in _fake_pipeline([profile, frontal], lambda b: 0.9).detect(img)] == [
        tuple(frontal.box), tuple(profile.box)]


def test_pipeline_overlapping_boxes_are_one_face():
    """Two face-like boxes on one profile, the shifted one a few pixels larger (intersection 45 % of
    the smaller): the more face-like one is returned, the other dropped."""
    img = np.zeros((500, 500, 3), np.uint8)
    true, shifted = _box_face([197, 93, 290, 252], 0.99), _box_face([247, 87, 348, 247], 0.97)
    conf = {tuple(true.box): 0.91, tuple(shifted.box): 0.71}
    out = _fake_pipeline([true, shifted], conf.__getitem__).detect(img)
    assert [tuple(f.box) for f in out] == [tuple(true.box)]
    # two faces side by side (overlap 20 % of the smaller) are both kept, larger first
    other = _box_face([272, 93, 380, 252], 0.99)
    conf[tuple(other.box)] = 0.6
    out = _fake_pipeline([true, other], conf.__getitem__).detect(img)
    assert [tuple(f.box) for f in out] == [tuple(other.box), tuple(true.box)]


def test_pipeline_without_tta_never_rescues():
    """FastPipeline (no TTA) has no landmark confidence: a weak box is never returned."""
    img = np.zeros((500, 500, 3), np.uint8)
    weak, strong = _box_face([100, 100, 300, 300], 0.7), _box_face([350, 350, 400, 400], 0.95)
    pl = _fake_pipeline([weak, strong], lambda b: 0.6)
    pl.tta = False
    assert [tuple(f.box) for f in pl.detect(img)] == [tuple(strong.box)]
    assert pl.detect(np.zeros((500, 500, 3), np.uint8)) and _fake_pipeline([weak], lambda b: 0.6).detect(img)
    pl = _fake_pipeline([weak], lambda b: 0.6)
    pl.tta = False
    assert pl.detect(img) == []


def test_pipeline_refine_roi_landmarks_again_on_the_landmark_roi():
    """refine_roi: the second 3DDFA_V2 pass gets the roi around the first pass's landmarks (as a roi,
    not a detector box); without it, one pass on the detector box."""
    from facerecon.detect.base import Face
    from facerecon.detect.crop import roi_box_from_landmarks
    from facerecon.detect.pipeline import DefaultPipeline

    calls = []
    lm = np.stack(np.meshgrid(np.linspace(40, 120, 17), np.linspace(60, 160, 4)), -1).reshape(-1, 2)[:68]
    lm = np.concatenate([lm, np.repeat(lm[:1], 68 - len(lm), 0)]).astype(np.float32)

    class FakeTDDFA:
        def landmarks_tta(self, pixels, boxes, box_is_roi=False, scores=None):
            calls.append((np.asarray(boxes[0], np.float64), box_is_roi))
            return [Face(box=np.asarray(boxes[0], np.float32), score=1.0, lm5=lm[:5], lm68=lm + len(calls))]

    img = np.zeros((200, 200, 3), np.uint8)
    for refine in (False, True):
        calls.clear()
        pl = object.__new__(DefaultPipeline)
        pl.tta, pl.refine_roi, pl.tddfa, pl.mediapipe, pl.dense = True, refine, FakeTDDFA(), None, False
        pl.mediapipe_weight = lambda yaw: 0.0
        face = pl.landmarks(img, [50, 50, 150, 150])
        assert len(calls) == (2 if refine else 1) and calls[0][1] is False
        np.testing.assert_allclose(calls[0][0], [50, 50, 150, 150])
        if refine:
            np.testing.assert_allclose(calls[1][0], roi_box_from_landmarks(lm + 1))
            assert calls[1][1] is True
        np.testing.assert_allclose(face.lm68, lm + len(calls))
        np.testing.assert_allclose(face.box, [50, 50, 150, 150])  # the detector's box is kept
