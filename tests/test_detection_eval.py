"""The detection benchmark's match rule, NME and per-bin counts (facerecon.eval.detection), and the
benchmark's canvas placement (benchmarks/detection.py): pasted landmarks land on the pasted pixels."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from facerecon.detect.base import Face
from facerecon.eval import detection as D

ROOT = Path(__file__).resolve().parents[1]


def _pts(cx=100.0, cy=100.0, size=80.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.5, 0.5, (68, 2)) * size + [cx, cy]
    p[0] = [cx - size / 2, cy - size / 2]  # pin the box: exactly size x size
    p[1] = [cx + size / 2, cy + size / 2]
    return p.astype(np.float32)


def _face(pts, box=None) -> Face:
    pts = np.asarray(pts, np.float32)
    if box is None:
        box = np.concatenate([pts.min(0) - 5, pts.max(0) + 5])
    return Face(box=np.asarray(box, np.float32), score=1.0, lm5=pts[:5], lm68=pts)


def test_points_box_ignores_nan_and_iou_closed_form():
    p = _pts()
    p[5:20] = np.nan
    np.testing.assert_allclose(D.points_box(p), [60, 60, 140, 140])
    assert D.iou(np.array([0, 0, 10, 10.0]), np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)
    assert D.iou(np.array([0, 0, 1, 1.0]), np.array([2, 2, 3, 3.0])) == 0.0
    with pytest.raises(ValueError):
        D.points_box(np.full((68, 2), np.nan))


def test_match_rule():
    gt = _pts()
    assert D.matches(_face(gt), gt)
    assert not D.matches(_face(gt + [200, 0]), gt)  # a face beside it
    # box around the GT centre but landmarks collapsed on one eye: IoU of the 68-point boxes < 0.3
    tiny = (gt - gt.mean(0)) * 0.3 + gt.mean(0)
    assert not D.matches(_face(tiny, box=[60, 60, 140, 140]), gt)
    # right landmarks in a box that misses the GT centre (a box beside, landmarks copied)
    assert not D.matches(_face(gt, box=[150, 60, 230, 140]), gt)
    # IoU threshold: a 68-point box shifted by s of 80 px has IoU (80-s)/(80+s) -> 0.3 at s = 43.08
    assert D.matches(_face(gt + [40, 0], box=[55, 55, 200, 145]), gt)
    assert not D.matches(_face(gt + [46, 0], box=[55, 55, 200, 145]), gt)
    # no landmarks (LFW): the centre rule
    assert D.matches(_face(gt), None, centre=(100, 100))
    assert not D.matches(_face(gt + [200, 0]), None, centre=(100, 100))


def test_nme_closed_form_and_nan_points():
    gt = _pts()
    gt[30:40] = np.nan  # self-occluded: left out of the mean, not of the box (pins stay)
    assert D.nme(np.nan_to_num(gt) + [3.0, 4.0], gt) == pytest.approx(5 / 80 * 100)


def test_classify_and_summarize():
    gt = _pts()
    right, other = _face(gt), _face(gt + [300, 0])
    s = D.Sample("a", np.zeros((10, 10, 3), np.uint8), gt, 10.0)
    assert D.classify([], s)[:2] == ("missed", False)
    st, anym, e = D.classify([other, right], s)
    assert (st, anym) == ("wrong", True) and e > 100
    st, anym, e = D.classify([right, other], s)
    assert (st, anym, e) == ("found", True, 0.0)
    recs = D.run(lambda im: [right], [s]) + D.run(lambda im: [], [D.Sample("b", s.image, gt, 45.0)]) + \
        D.run(lambda im: [other, right], [D.Sample("c", s.image, gt, -75.0)]) + \
        D.run(lambda im: [other], [D.Sample("d", s.image, gt, 95.0)])
    rows = {r.label: r for r in D.summarize(recs)}
    assert (rows["[0,30]"].found, rows["(30,60]"].missed, rows[">60"].wrong, rows[">60"].pick_error) == (1, 1, 2, 1)
    assert rows[">60"].wrong_pct == 100.0 and rows["all"].n == 4 and rows["all"].miss_pct == 25.0
    assert rows["[0,30]"].nme == 0.0 and math.isnan(rows[">60"].nme) and rows[">60"].nme_picked > 100
    assert "| >60 | 2 | 0 | 2 (1) |" in D.markdown(list(rows.values()), "t")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_detection", ROOT / "benchmarks" / "detection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("where", ["pad", "lfw"])
def test_placement_maps_landmarks_onto_the_pasted_pixels(where):
    """A crop with bright dots at its 'landmarks': after a placement each mapped point is on a dot."""
    B = _bench()
    crop = np.full((120, 120, 3), 40, np.uint8)
    pts = np.float32([[30, 40], [85, 42], [60, 70], [45, 95], [75, 96]])
    for x, y in pts.astype(int):
        crop[y - 1:y + 2, x - 1:x + 2] = 255
    lm = np.full((68, 2), np.nan, np.float32)
    lm[:5] = pts
    rng = np.random.default_rng(3)
    for _ in range(3):
        if where == "pad":
            s = B.place_pad(("x", crop, lm, 10.0), rng)
        else:
            s = B.place_lfw(("x", crop, lm, 10.0), np.full((250, 250, 3), 90, np.uint8), rng)
        g = s.image.mean(axis=2)
        for p in s.pts68[:5]:
            x, y = np.rint(p).astype(int)
            assert g[y, x] > 150, (where, p)  # on the dot (resized: spread, still bright at its centre)
        assert np.isnan(s.pts68[5:]).all()
