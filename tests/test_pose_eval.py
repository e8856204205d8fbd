"""The AFLW2000 head-pose benchmark (`facerecon.eval.pose`): its rotation convention (closed forms
and the proof on the data), the scoring, and the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerecon.eval import pose
from facerecon.geometry.rotations import euler_to_matrix

from .conftest import need_asset, need_data


def test_aflw_matrix_is_the_transposed_deep3d_composition_and_euler_inverts_it():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, y, r = rng.uniform(-1.4, 1.4, 3) * np.array([1, 1, 1])
        R = pose.aflw_matrix(p, y, r)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        # R_gt = Rx(-p) Ry(-y) Rz(-r) = (Rz(r) Ry(y) Rx(p))^T: facerecon's composition, transposed.
        ours = euler_to_matrix(torch.tensor([p, y, r], dtype=torch.float64)).numpy()
        np.testing.assert_allclose(R, ours.T, atol=1e-12)
        np.testing.assert_allclose(pose.aflw_euler(R), [p, y, r], atol=1e-9)
    # Signs: a pure positive yaw in AFLW's angles is a rotation by -yaw about y.
    c, s = math.cos(-0.3), math.sin(-0.3)
    np.testing.assert_allclose(pose.aflw_matrix(0, 0.3, 0), [[c, 0, s], [0, 1, 0], [-s, 0, c]], atol=1e-12)


def test_score_pose_closed_forms():
    """Exact estimates score 0; a 5° turn about the vertical axis is 5° of yaw and 5° geodesic."""
    eul = np.array([[3.0, 10.0, -4.0], [-8.0, 45.0, 2.0], [5.0, -70.0, 1.0]])  # pitch, yaw, roll
    R = np.stack([pose.aflw_matrix(*np.radians(e)) for e in eul])
    from facerecon.eval.aflw2000 import AFLW2000Set

    data = pose.PoseSet(AFLW2000Set(None, "original", ("a", "b", "c"), np.zeros((3, 4), np.float32),
                                    np.zeros((3, 68, 2), np.float32), eul[:, 1].astype(np.float32)), eul, R)
    res = pose.score_pose(R, data)
    assert res.overall.mean == pytest.approx(0, abs=1e-9) and res.overall.geodesic == pytest.approx(0, abs=1e-5)
    assert [b.n for b in res.bins] == [1, 1, 1]
    # Turn the first face by 5° more about y (R = Rx(-p) Ry(-y) Rz(-r): yaw sits between the others,
    # so pre-multiply the pitch-free part): rebuild from the angles with yaw + 5.
    R2 = R.copy()
    R2[0] = pose.aflw_matrix(*np.radians(eul[0] + [0, 5, 0]))
    R2[2] = np.nan  # a failure: left out of the MAE, counted
    res = pose.score_pose(R2, data)
    np.testing.assert_allclose(res.err[0], [5, 0, 0], atol=1e-9)
    assert res.geodesic[0] == pytest.approx(5.0, abs=1e-6)
    assert res.overall.failed == 1 and res.bins[2].failed == 1 and math.isnan(res.bins[2].mean)
    assert res.overall.mae[0] == pytest.approx(2.5)
    # Angle differences wrap: 179 vs -179 is 2 degrees.
    assert pose.wrap_deg(179 - (-179)) == pytest.approx(-2)


def test_convention_is_proved_by_the_data():
    """On the dev images the rebuilt R_gt matches a Procrustes fit of BFM's mean landmarks to the
    image's own 3-D landmarks; facerecon's own composition with the same angles does not."""
    need_asset("3ddfa-v2")
    root = need_data("aflw2000-3d-dev")
    data = pose.load_aflw2000_pose(root, limit=40)
    chk = pose.convention_check(data.data)
    assert chk["n"] == len(data) and chk["median_deg"] < 2.5 and chk["p90_deg"] < 5
    from scipy.io import loadmat

    X = pose.bfm_mean_landmarks()
    wrong = []
    for nm in data.data.names:
        m = loadmat(data.data.root / "AFLW2000" / nm.replace(".jpg", ".mat"))
        p = m["Pose_Para"].reshape(-1)[:3]
        Y = m["pt3d_68"].T.astype(np.float64) * np.array([1.0, -1.0, 1.0])
        alt = euler_to_matrix(torch.tensor(p, dtype=torch.float64)).numpy()  # not transposed
        wrong.append(float(pose.geodesic_deg(pose.procrustes_rotation(X, Y), alt)))
    assert np.median(wrong) > 2 * chk["median_deg"]


def test_model_frame_offset_and_cli(tmp_path, capsys):
    need_asset("3ddfa-v2")
    need_asset("ict-facekit")
    root = need_data("aflw2000-3d-dev")
    from facerecon.models import load_model

    Q = pose.model_to_bfm_rotation(load_model("ict"))
    np.testing.assert_allclose(Q @ Q.T, np.eye(3), atol=1e-9)
    assert pose.geodesic_deg(Q, np.eye(3)) < 10  # the two face frames nearly agree (ICT ~4° of pitch)
    # The package data (models.frames, what the fitter reads) is the landmark fit it documents.
    np.testing.assert_allclose(Q, pose.landmark_frame_rotation(load_model("ict")), atol=1e-8)
    from facerecon.cli.main import main

    assert main(["eval", "aflw2000-pose", "--root", str(root), "--method", "3ddfa", "--limit", "4",
                 "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all: n=   4 failed=  0" in out and "geodesic" in out
    rows = (tmp_path / "aflw2000_pose_3ddfa_gt.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("name,gt_yaw")
    assert "DSFNet-f (published)" in (tmp_path / "aflw2000_pose_3ddfa_gt.md").read_text()


def test_eval_method_options_parse_and_reject():
    from types import SimpleNamespace

    from facerecon.cli.eval_cmd import method_options
    from facerecon.errors import FaceReconError

    args = SimpleNamespace(detector="retinaface", option=["w_rotation_prior=0.3", "steps_pose=10", "photometric=False",
                                                          "model=ict"])
    assert method_options(args) == {"detector": "retinaface", "w_rotation_prior": 0.3, "steps_pose": 10,
                                    "photometric": False, "model": "ict"}
    for bad in ("w_rotation_prior", "1x=2"):
        with pytest.raises(FaceReconError, match="KEY=VALUE"):
            method_options(SimpleNamespace(detector=None, option=[bad]))
