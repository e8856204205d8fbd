"""The method interface: a method registered from this test module (a trivial "mean face") is
reached by name through the API, the CLI and the evaluator, none of which knows it; and
`Reconstruction.save` writes what the CLI writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerecon.cli.main import main
from facerecon.errors import FaceReconError
from facerecon.methods import METHODS, MethodContext, Request, build_method, from_params, register_method

from .conftest import need_asset, need_data

pytest.importorskip("skimage")


class MeanFace:
    """The model's mean face, frontal, at the origin of the crop camera: no fitting at all."""

    name = "meanface"
    needs_landmarks = False
    detector = "fast"

    def __init__(self, context: MethodContext, scale: float = 1.0):
        self.context = context
        self.scale = scale

    def reconstruct(self, crops, faces, request: Request):
        model, cam = self.context.model, self.context.camera
        p = model.zeros(len(crops))
        with torch.no_grad():
            lm = model.project_landmarks(p, cam)
        return from_params(model, cam, p, lm, crops, faces, self.name, {"meanface": 0.0})


@pytest.fixture(scope="module")
def meanface():
    for a in ("ict-facekit", "retinaface", "3ddfa-v2"):
        need_asset(a)
    register_method("meanface", MeanFace, "test: the mean face", overwrite=True)
    yield "meanface"
    METHODS.unregister("meanface")


def test_api_reconstructs_with_a_registered_method(meanface, astronaut_path):
    from facerecon.api import FaceReconstructor, available_methods

    assert "meanface" in available_methods()
    rec = FaceReconstructor(method="meanface")
    r = rec.reconstruct(astronaut_path)[0]
    assert r.method == "meanface" and float(r.params.identity.abs().sum()) == 0
    # The crop is aligned to the mean face's 5 points: its landmarks land near the detector's.
    err = np.linalg.norm(r.lm68 - r.face.lm68, axis=1).mean() / r.face.size
    assert err < 0.1
    assert r.vertices.shape == (r.vertices_model.shape[0], 3) and r.triangles.shape[1] == 3
    assert set(r.times) >= {"detect", "align", "meanface"}
    # Options go to the method's factory; one it does not take is a clear error.
    assert FaceReconstructor(method="meanface", scale=2.0).method.scale == 2.0
    with pytest.raises(FaceReconError, match="method 'meanface' takes no option 'regressor'"):
        FaceReconstructor(method="meanface", regressor="x.pt")
    with pytest.raises(FaceReconError, match="unknown reconstruction method 'nope'"):
        FaceReconstructor(method="nope")


def test_cli_reconstructs_with_a_registered_method_and_save_matches_it(meanface, astronaut_path, tmp_path, capsys):
    from facerecon.api import FaceReconstructor

    cli_out = tmp_path / "cli"
    assert main(["reconstruct", str(astronaut_path), "-o", str(cli_out), "--method", "meanface"]) == 0
    assert "reconstructed 1 face(s)" in capsys.readouterr().out
    api_out = tmp_path / "api"
    r = FaceReconstructor(method="meanface").reconstruct(astronaut_path)[0]
    written = r.save(api_out)
    cli_files = sorted(p.name for p in cli_out.iterdir())
    assert sorted(p.name for p in written) == cli_files == sorted(p.name for p in api_out.iterdir())
    assert {"astronaut.obj", "astronaut.mat", "astronaut_overlay.png", "astronaut_textured.png"} <= set(cli_files)
    assert {"astronaut.glb", "astronaut_posed.obj", "astronaut_neutral.obj", "astronaut_landmarks3d.json",
            "astronaut_depth.png", "astronaut_normals.png", "astronaut_pncc.png"} <= set(cli_files)
    for name in ("astronaut.obj", "astronaut.ply", "astronaut_textured.obj", "astronaut_panel.png",
                 "astronaut_overlay.png", "astronaut.glb", "astronaut_posed.obj", "astronaut_neutral.obj",
                 "astronaut_landmarks3d.json", "astronaut_depth.png", "astronaut_normals.png", "astronaut_pncc.png"):
        assert (cli_out / name).read_bytes() == (api_out / name).read_bytes(), name
    a, b = (json.loads((d / "astronaut.json").read_text()) for d in (cli_out, api_out))
    a.pop("times_s"), b.pop("times_s")
    assert a == b
    # The JSON's rotation: a matrix with its Euler angles and the convention named (mean face: frontal).
    np.testing.assert_allclose(a["rotation"]["matrix"], np.eye(3), atol=1e-6)
    assert "Rz(roll) Ry(yaw) Rx(pitch)" in a["rotation"]["convention"]
    with np.load(cli_out / "astronaut.npz") as za, np.load(api_out / "astronaut.npz") as zb:
        assert set(za.files) == set(zb.files)
        for k in za.files:
            np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    # to_trimesh: the posed mesh with the model's triangles.
    m = r.to_trimesh()
    assert m.vertices.shape == r.vertices.shape and len(m.faces) == len(r.triangles)


def test_evaluator_runs_a_registered_method(meanface, tmp_path, capsys):
    root = need_data("aflw2000-3d-dev")
    from facerecon.eval import get_method
    from facerecon.eval.aflw2000 import evaluate, load_aflw2000

    data = load_aflw2000(root).subset(3)
    res = evaluate(get_method("meanface"), data, boxes="gt", method_name="meanface")
    assert res.pred.shape == (3, 68, 2) and np.isfinite(res.nme).all() and res.nme.max() < 25
    assert main(["eval", "aflw2000", "--root", str(root), "--method", "meanface", "--limit", "2",
                 "--no-plot", "-o", str(tmp_path / "ev")]) == 0
    assert "method=meanface" in capsys.readouterr().out
    assert main(["eval", "aflw2000", "--list-methods"]) == 0
    assert "meanface" in capsys.readouterr().out


def test_build_method_checks_the_protocol():
    class NotAMethod:
        def __init__(self, context):
            pass

    register_method("_broken", NotAMethod, overwrite=True)
    try:
        with pytest.raises(FaceReconError, match="has no 'reconstruct'"):
            build_method("_broken", None)
    finally:
        METHODS.unregister("_broken")


def test_regress_pose_fusion_turns_the_head_in_place(ict_model):
    """fuse_rotation: weight 0 keeps the regressed pose, 1 takes the detection's (read through the
    model's BFM frame), 0.5 lies halfway; the mean face's landmark centroid stays where it was."""
    from types import SimpleNamespace

    from facerecon.eval.pose import geodesic_deg
    from facerecon.geometry.rotations import euler_to_matrix
    from facerecon.methods.regress import fuse_rotation
    from facerecon.models.frames import bfm_frame

    m = ict_model
    p = m.random_params(2, generator=torch.Generator().manual_seed(5))
    p = p.replace(rotation=torch.tensor([[0.1, 0.3, 0.0], [-0.1, -0.9, 0.05]]), translation=torch.tensor(
        [[2.0, -3.0, 10.0], [0.0, 1.0, -5.0]]))
    Q = bfm_frame(m.name)
    target = euler_to_matrix(torch.tensor([[0.0, 0.5, 0.1], [0.1, -0.7, 0.0]], dtype=torch.float64)).numpy()
    faces = [SimpleNamespace(rotation=target[b] @ Q.T) for b in range(2)]  # what a detection would carry
    assert fuse_rotation(m, p, faces, Q, 0.0) is p
    assert fuse_rotation(m, p, [SimpleNamespace(rotation=None)] * 2, Q, 0.75) is p
    R0 = euler_to_matrix(p.rotation.double()).numpy()
    c = m.landmarks(m.mean_shape[None])[0].double().mean(0).numpy()
    for w in (1.0, 0.5):
        q = fuse_rotation(m, p, faces, Q, w)
        R = euler_to_matrix(q.rotation.double()).numpy()
        for b in range(2):
            full = geodesic_deg(R0[b], target[b])
            assert geodesic_deg(R[b], target[b]) == pytest.approx(full * (1 - w), abs=1e-3)
            np.testing.assert_allclose(R[b] @ c + q.translation[b].double().numpy(),
                                       R0[b] @ c + p.translation[b].double().numpy(), atol=1e-3)


def test_regress_refine_blends_landmarks_by_regressed_yaw(ict_model):
    """landmark_weight 0 keeps the detector's targets; otherwise each face's targets move that share
    of the way to the regressor's own projected landmarks, with landmark_weight_profile for a face
    the regressor turns past 60°."""
    from types import SimpleNamespace

    from facerecon.geometry.camera import PerspectiveCamera
    from facerecon.methods.regress import RegressRefineMethod

    m = ict_model
    cam = PerspectiveCamera.deep3d(224)
    p = m.random_params(2, generator=torch.Generator().manual_seed(3))
    p = p.replace(rotation=torch.tensor([[0.0, 0.3, 0.0], [0.0, -1.2, 0.0]]))
    own = m.project_landmarks(p, cam)
    det = own + torch.randn(own.shape, generator=torch.Generator().manual_seed(4)) * 5
    meth = object.__new__(RegressRefineMethod)
    meth.context = SimpleNamespace(model=m, camera=cam)
    meth.landmark_weight, meth.landmark_weight_profile = 0.0, 0.0
    assert meth.blend_landmarks(det, p) is det
    meth.landmark_weight, meth.landmark_weight_profile = 0.25, 1.0
    out = meth.blend_landmarks(det, p)
    torch.testing.assert_close(out[0], 0.75 * det[0] + 0.25 * own[0])
    torch.testing.assert_close(out[1], own[1])
    with pytest.raises(ValueError, match="landmark weights"):
        RegressRefineMethod.__init__(meth, SimpleNamespace(model=m, camera=cam, device="cpu"), landmark_weight=1.5)
