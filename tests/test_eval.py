"""AFLW2000-3D evaluator: metric, bins, failures, reports, method registry and the CLI, on a tiny
synthetic dataset (plus a check of the real dev protocol files when present)."""

from __future__ import annotations

import argparse
import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerecon.eval import aflw2000 as bench
from facerecon.eval import methods

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = (Path(os.environ["FACERECON_DATA"]) if os.environ.get("FACERECON_DATA")
            else REPO.parent / "shared" / "data") / "aflw2000-3d-dev"


def _gt(n=1, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 100, (n, 68, 2)) + 50).astype(np.float32)


def test_nme_perfect_is_zero_and_shift_has_closed_form():
    gt = _gt(3)
    assert np.allclose(bench.nme(gt, gt), 0)
    dx, dy = 3.0, 4.0
    wh = gt.max(1) - gt.min(1)
    expected = 5.0 / np.sqrt(wh[:, 0] * wh[:, 1]) * 100
    np.testing.assert_allclose(bench.nme(gt + [dx, dy], gt), expected, rtol=1e-6)
    # Square GT box of side 100 shifted by 1 px along x: 1 %.
    sq = np.zeros((1, 68, 2), np.float32)
    sq[0, 1] = [100, 100]
    np.testing.assert_allclose(bench.nme(sq + [1, 0], sq), [1.0])


def test_yaw_bins_boundaries_and_raw_angles_beyond_90():
    yaw = np.array([0, 30, -30, 30.01, 60, -60, 60.5, 89, -95, 188, -351])
    assert bench.yaw_bins(yaw).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]


def test_summary_counts_failures_per_bin():
    nmes = np.array([2.0, 4.0, np.nan, 3.0, 5.0, np.nan])
    yaw = np.array([10, 20, 25, 45, 70, 120])
    s = bench.summarize(nmes, yaw, failure_nme=10.0)
    b0, b1, b2 = s.bins
    assert (b0.n, b0.failed, b1.n, b1.failed, b2.n, b2.failed) == (3, 1, 1, 0, 2, 1)
    assert b0.nme == pytest.approx(3.0) and b0.nme_failures_counted == pytest.approx(16 / 3)
    assert b2.nme == pytest.approx(5.0) and b2.nme_failures_counted == pytest.approx(7.5)
    assert s.mean == pytest.approx((3 + 3 + 5) / 3)
    assert s.mean_failures_counted == pytest.approx((16 / 3 + 3 + 7.5) / 3)
    assert s.failed == 2 and s.n == 6
    # A bin with only failures has no "detected" NME but still a failures-counted one.
    s2 = bench.summarize(np.array([np.nan]), np.array([5.0]))
    assert math.isnan(s2.bins[0].nme) and s2.bins[0].nme_failures_counted == bench.DEFAULT_FAILURE_NME


def test_ced_never_counts_failures():
    c = bench.ced(np.array([1.0, 2.0, np.nan, 5.0]), np.array([0.5, 2.0, 100.0]))
    np.testing.assert_allclose(c, [0.0, 0.5, 0.75])


# ----------------------------------------------------------------------------- a tiny dataset


def _make_dataset(root: Path, n: int = 4, gt_rows: int | None = None) -> np.ndarray:
    (root / "AFLW2000").mkdir(parents=True)
    (root / "protocol").mkdir()
    names = [f"image{i:05d}.jpg" for i in range(n)]
    for nm in names:
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "AFLW2000" / nm)
    (root / "protocol" / bench.LIST_FILE).write_text("\n".join(names) + "\n")
    rows = n if gt_rows is None else gt_rows
    pts = _gt(rows, seed=1).transpose(0, 2, 1)  # (N, 2, 68) as stored
    np.save(root / "protocol" / bench.GT_FILES["original"], np.concatenate([pts, np.zeros((rows, 1, 68))], 1))
    np.save(root / "protocol" / bench.GT_FILES["reannotated"], pts + 1)
    np.save(root / "protocol" / bench.ROI_FILE, np.tile([0, 0, 40, 40], (n, 1)).astype(np.float32))
    np.save(root / "protocol" / bench.POSE_FILE, np.array([5, 45, 75, -120][:n] + [0] * (n - 4), np.float32))
    return pts.transpose(0, 2, 1)


def _oracle(gt_pts, fail=(2,)):
    """A method that returns the GT (so NME 0), fails on listed calls, and checks its inputs."""
    calls = {"i": -1}

    def method(image, box):
        assert image.dtype == np.uint8 and image.shape == (40, 40, 3)
        calls["i"] += 1
        i = calls["i"] - 1  # the first call is the untimed warm-up of image 0
        i = max(i, 0)
        return None if i in fail else gt_pts[i]

    return method


def test_load_checks_files(tmp_path):
    _make_dataset(tmp_path / "d")
    data = bench.load_aflw2000(tmp_path / "d", "reannotated")
    assert len(data) == 4 and data.pts68.shape == (4, 68, 2)
    with pytest.raises(bench.DatasetError, match="no_such"):
        bench.load_aflw2000(tmp_path / "no_such")
    (tmp_path / "d" / "protocol" / bench.ROI_FILE).unlink()
    with pytest.raises(bench.DatasetError, match="AFLW2000-3D_crop.roi_box.npy"):
        bench.load_aflw2000(tmp_path / "d")
    _make_dataset(tmp_path / "e", gt_rows=5)
    with pytest.raises(bench.DatasetError, match="5 rows but"):
        bench.load_aflw2000(tmp_path / "e")


def test_evaluate_reports_failures_and_writes_outputs(tmp_path):
    gt_pts = _make_dataset(tmp_path / "d")
    data = bench.load_aflw2000(tmp_path / "d")
    res = bench.evaluate(_oracle(gt_pts), data, method_name="oracle")
    assert res.failed.tolist() == [False, False, True, False]
    assert np.allclose(res.nme[~res.failed], 0)
    s = res.summary
    assert [b.failed for b in s.bins] == [0, 0, 1] and s.bins[2].n == 2
    assert s.bins[2].nme == pytest.approx(0) and s.bins[2].nme_failures_counted == pytest.approx(5.0)
    paths = bench.write_reports(res, tmp_path / "out")
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["failed"] for r in rows] == ["0", "0", "1", "0"] and rows[2]["nme_pct"] == ""
    assert rows[3]["bin"] == ">60" and float(rows[0]["latency_ms"]) >= 0
    md = paths["markdown"].read_text()
    assert "failures counted" in md and "3DDFA_V2 (Guo et al. 2020) | 2.74 | 3.48 | 4.54 | 3.59" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert paths["ced"] is None
    else:
        assert paths["ced"].stat().st_size > 0


def test_evaluate_scores_the_landmarks_a_method_started_from(tmp_path):
    gt_pts = _make_dataset(tmp_path / "d")
    data = bench.load_aflw2000(tmp_path / "d")
    oracle = _oracle(gt_pts, fail=())

    def refiner(image, box):  # returns the GT, "started" from the GT shifted by 2 px in x
        out = oracle(image, box)
        refiner.last_input = out + np.float32([2.0, 0.0])
        return out

    res = bench.evaluate(refiner, data, method_name="refiner")
    inp = res.meta["input_summary"]
    assert res.summary.mean == pytest.approx(0) and inp.mean > 0
    # 2 px over each face's size sqrt(w·h), in %, averaged per bin: the closed form.
    size = np.sqrt(np.prod(gt_pts.max(1) - gt_pts.min(1), axis=1))
    assert inp.bins[0].nme == pytest.approx(200.0 / size[0], rel=1e-4)  # yaw 5°: image 0 alone
    assert inp.bins[2].nme == pytest.approx(float(np.mean(200.0 / size[[2, 3]])), rel=1e-4)
    assert "refiner started from" in bench.markdown_table(res)
    assert "input_summary" not in bench.markdown_table(res)
    assert "input_summary" not in bench.evaluate(_oracle(gt_pts, fail=()), data).meta


def test_evaluate_rejects_bad_shapes(tmp_path):
    _make_dataset(tmp_path / "d")
    data = bench.load_aflw2000(tmp_path / "d")
    with pytest.raises(ValueError, match="expected \\(68, 2\\)"):
        bench.evaluate(lambda img, box: np.zeros((5, 2)), data)


def test_registry_names_paths_and_errors():
    def factory(**kw):
        return lambda img, box: None

    methods.register_method("_test_dummy", factory, "dummy")
    assert "_test_dummy" in methods.available_methods() and "3ddfa" in methods.available_methods()
    assert methods.get_method("_test_dummy")(None, None) is None
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("_test_dummy", lambda **kw: None)
    methods.register_method("_test_lazy", "facerecon.eval.methods:make_3ddfa")
    assert methods.get_factory("_test_lazy") is methods.make_3ddfa
    assert methods.get_factory("facerecon.eval.methods:make_3ddfa") is methods.make_3ddfa
    from facerecon.errors import FaceReconError

    with pytest.raises(FaceReconError, match="unknown evaluation method 'nope'"):
        methods.get_method("nope")


def _parse(argv):
    from facerecon.cli import eval_cmd

    p = argparse.ArgumentParser()
    eval_cmd.add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def test_cli_runs_a_registered_method_and_reports_bad_root(tmp_path, capsys):
    from facerecon.cli import eval_cmd

    gt_pts = _make_dataset(tmp_path / "d")
    methods.register_method("_test_oracle", lambda **kw: _oracle(gt_pts), "oracle", overwrite=True)
    args = _parse(["eval", "aflw2000", "--root", str(tmp_path / "d"), "--method", "_test_oracle",
                   "-o", str(tmp_path / "out"), "--no-plot", "--limit", "3"])
    assert eval_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "failed=  1" in out and "aflw2000__test_oracle_original_gt.csv" in out
    args = _parse(["eval", "aflw2000", "--root", str(tmp_path / "missing"), "-o", str(tmp_path / "o2")])
    with pytest.raises(bench.DatasetError, match="missing"):
        eval_cmd.run(args)


@pytest.mark.assets
@pytest.mark.skipif(not (DATA_DIR / "protocol").is_dir(), reason=f"AFLW2000-3D dev data not found at {DATA_DIR}")
def test_dev_protocol_arrays_follow_list_order():
    """The dev protocol arrays are already subset to the 200 images in list order."""
    import scipy.io as sio

    data = bench.load_aflw2000(DATA_DIR)
    for i in range(0, len(data), 7):
        mat = sio.loadmat(str(data.image_path(i).with_suffix(".mat")))
        np.testing.assert_allclose(mat["pt3d_68"][:2].T, data.pts68[i], atol=1e-3)
        assert math.degrees(mat["Pose_Para"][0, 1]) == pytest.approx(float(data.yaw[i]), abs=1e-3)


@pytest.mark.assets
@pytest.mark.skipif(not (DATA_DIR / "protocol").is_dir(), reason=f"AFLW2000-3D dev data not found at {DATA_DIR}")
def test_training_validator_scores_a_regressor(tmp_path):
    """`eval.validation.AflwValidator` (the training loop's validation): crops cached once, then the
    regressor's projected landmarks scored like `facerecon eval aflw2000 --method regress`."""
    from facerecon import assets
    from facerecon.regress.predict import default_weights_paths, load_regressor

    if any(assets.find(a) is None for a in ("ict-facekit", "retinaface", "3ddfa-v2")):
        pytest.skip("assets ict-facekit / retinaface / 3ddfa-v2 not found")
    if not any(p.is_file() for p in default_weights_paths()):
        pytest.skip("regressor weights absent (weights/README.md)")
    from facerecon.eval.validation import AflwValidator
    from facerecon.models import load_model

    model = load_model("ict")
    val = AflwValidator(DATA_DIR, tmp_path / "crops.npz", model, limit=3)
    res = val(load_regressor())
    assert set(res) == {"nme", "nme_0_30", "nme_30_60", "nme_60_90", "failed"} and res["failed"] == 0
    assert 0 < res["nme"] < 15
    again = AflwValidator(DATA_DIR, tmp_path / "crops.npz", model, limit=3)  # from the cache
    np.testing.assert_array_equal(again.crops, val.crops)
