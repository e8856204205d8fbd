"""End to end: the Python API and the `facerecon` CLI on a real photo (skips without assets)."""

import json
import math

import numpy as np
import pytest
import torch

from facerecon.cli.main import main

from .conftest import need_asset

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def reconstructor():
    for a in ("ict-facekit", "retinaface", "3ddfa-v2"):
        need_asset(a)
    from facerecon.api import FaceReconstructor
    from facerecon.fit import FitConfig

    return FaceReconstructor("ict", fit_config=FitConfig(steps_photo=4, steps_albedo=4, render_size=224))


def test_api_reconstructs_astronaut(reconstructor, astronaut_path):
    recs = reconstructor.reconstruct(astronaut_path)
    assert len(recs) == 1
    r = recs[0]
    # Fitted landmarks agree with the detector's within a few pixels on this frontal portrait.
    assert np.linalg.norm(r.lm68 - r.face.lm68, axis=1).mean() < 4.0
    assert abs(r.pose_deg["yaw"]) < 15 and abs(r.pose_deg["roll"]) < 15
    # The original-image camera projects the posed mesh onto the photo where the crop camera
    # puts it in the crop (the crop is a similarity of the photo).
    lm3d = reconstructor.model.landmarks(r.geometry.vertices)
    R = r.params.rotation
    from facerecon.geometry.rotations import euler_to_matrix
    world = lm3d @ euler_to_matrix(R).transpose(1, 2) + r.params.translation[:, None]
    proj = r.camera.project(world)[0, :, :2].numpy()
    assert np.abs(proj - r.lm68).max() < 1e-2
    assert r.blendshapes is not None and set(r.blendshapes) >= {"jawOpen", "mouthSmile_L"}
    assert all(0.0 <= v <= 1.0 for v in r.blendshapes.values())
    # FaceMesh's points (MediaPipe installed) reach the fitter in crop pixels, fully trusted on this
    # frontal face; the fit reproduces them within a few pixels.
    from facerecon.fit.targets import dense_targets

    dense_map, like = reconstructor.method.dense_map, reconstructor.model.mean_shape
    if r.face.dense is not None:
        dense, gate = dense_targets([r.crop], [r.face], dense_map, like)
        assert dense.shape == (1, 468, 2) and float(gate) == 1.0
        back = r.crop.crop_to_original(dense[0].double().numpy())
        np.testing.assert_allclose(back, r.face.dense[:468, :2], atol=1e-2)
        verts = r.geometry.vertices_world[:, torch.as_tensor(dense_map.vertex)]
        fitted = r.camera_crop.project(verts)[0, :, :2]
        assert (fitted - dense[0]).norm(dim=-1).median() < 4.0
        from dataclasses import replace as _replace
        assert dense_targets([r.crop], [_replace(r.face, dense=None)], dense_map, like) == (None, None)


def test_cli_reconstruct_writes_outputs_and_skips_bad_files(reconstructor, astronaut_path, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    out = tmp_path / "out"
    rc = main(["reconstruct", str(astronaut_path), str(bad), str(tmp_path / "missing.png"), "-o", str(out),
               "--no-photometric", "--threads", "2"])
    assert rc == 0
    err = capsys.readouterr()
    assert "broken.jpg" in err.err and "missing.png" in err.err
    assert "reconstructed 1 face(s)" in err.out and "2 input(s) failed" in err.out
    for suffix in (".mat", ".npz", ".obj", ".ply", ".json", "_panel.png", "_overlay.png", "_textured.obj",
                   "_textured.png", "_textured.mtl", ".glb", "_posed.obj", "_neutral.obj", "_landmarks3d.json",
                   "_depth.png", "_normals.png", "_pncc.png"):
        assert (out / f"astronaut{suffix}").is_file(), suffix
    import trimesh
    from scipy.io import loadmat

    m = loadmat(out / "astronaut.mat")
    for k in ("cropped_img", "recon_img", "coeff", "face_shape", "face_texture", "face_color", "lm_68p", "lm_5p"):
        assert k in m, k
    assert m["recon_img"].shape == (224, 224, 4) and m["cropped_img"].shape == (224, 224, 3)
    assert m["coeff"].shape == (1, 100 + 53 + 0 + 3 + 27 + 3)
    mesh = trimesh.load(out / "astronaut.obj", process=False)
    assert mesh.vertices.shape == (9409, 3)
    info = json.loads((out / "astronaut.json").read_text())
    assert set(info["pose_deg"]) == {"yaw", "pitch", "roll"} and "jawOpen" in info["blendshapes"]
    R = np.array(info["rotation"]["matrix"])
    from facerecon.geometry.rotations import euler_to_matrix

    e = info["rotation"]["euler_deg"]
    ang = torch.tensor([math.radians(e[k]) for k in ("pitch", "yaw", "roll")], dtype=torch.float64)
    np.testing.assert_allclose(R, euler_to_matrix(ang).numpy(), atol=1e-6)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_no_inputs_is_an_error(tmp_path, capsys):
    assert main(["reconstruct", str(tmp_path / "nothing*.jpg"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_image_set_shares_identity(reconstructor, astronaut_path):
    from PIL import Image

    img = np.asarray(Image.open(astronaut_path))
    shifted = np.roll(img, (6, -9), axis=(0, 1))
    recs = reconstructor.reconstruct_set([img, shifted], photometric=False)
    assert len(recs) == 2
    assert torch.equal(recs[0].params.identity, recs[1].params.identity)
    # With the photometric stages (the default): one identity and one albedo residual for the set;
    # the identity stays the landmark stages' average (more stable than refining it from shading).
    lm_only = recs
    recs = reconstructor.reconstruct_set([img, shifted])
    assert torch.equal(recs[0].params.identity, recs[1].params.identity)
    torch.testing.assert_close(recs[0].params.identity, lm_only[0].params.identity, rtol=0, atol=1e-4)
    off = [r.params.albedo_offset for r in recs]
    assert off[0] is not None and off[0].abs().max() > 0 and torch.equal(off[0], off[1])


def test_fit_needs_68_landmarks_regressor_does_not(astronaut_path):
    """A 5-point-only detector (RetinaFace) is enough for a crop: fitting says clearly that it needs
    68 landmarks instead of failing deep inside."""
    need_asset("ict-facekit")
    need_asset("retinaface")
    from facerecon.api import FaceReconstructor
    from facerecon.errors import FaceReconError

    rec = FaceReconstructor("ict", detector="retinaface")
    with pytest.raises(FaceReconError, match="astronaut.png: the detector gave no 68 landmarks, which method 'fit'"):
        rec.reconstruct(astronaut_path)
    # Every method that needs them says so, regress+refine too (it used to fail inside the fit
    # targets with a bare ValueError).
    with pytest.raises(FaceReconError, match="which method 'regress\\+refine' needs"):
        FaceReconstructor("ict", detector="retinaface", method="regress+refine").reconstruct(astronaut_path)
    # The fit's own targets refuse crops without landmarks, naming the image.
    from facerecon.fit import FitConfig
    from facerecon.fit.targets import build_targets
    from facerecon.io.image import load_image

    im = load_image(astronaut_path)
    faces = rec.detect(im)
    with pytest.raises(ValueError, match="astronaut.png: the detector gave no 68 landmarks"):
        build_targets([rec.crop(im, faces[0])], faces[:1], rec.model.mean_shape, FitConfig(), photometric=False)
    # The regressor alone needs only the crop.
    from facerecon.regress.predict import default_weights_paths

    if any(p.is_file() for p in default_weights_paths()):
        recs = FaceReconstructor("ict", detector="retinaface", method="regress").reconstruct(astronaut_path)
        assert len(recs) == 1 and recs[0].lm68.shape == (68, 2)
        assert recs[0].face.lm68 is None  # the 5-point detector's face, reconstructed all the same


def test_cli_regress_and_refine(astronaut_path, tmp_path):
    """`--method regress` gives the regressed face; adding `--refine N` fits from it."""
    for a in ("ict-facekit", "retinaface", "3ddfa-v2"):
        need_asset(a)
    from facerecon.regress.predict import default_weights_paths

    if not any(p.is_file() for p in default_weights_paths()):
        pytest.skip("regressor weights absent (weights/README.md)")
    runs = {}
    for name, extra in (("regress", []), ("refined", ["--refine", "2", "--no-photometric"])):
        out = tmp_path / name
        assert main(["reconstruct", str(astronaut_path), "-o", str(out), "--method", "regress",
                     "--outputs", "json", *extra]) == 0
        runs[name] = json.loads((out / "astronaut.json").read_text())
    a, b = runs["regress"], runs["refined"]
    assert abs(a["pose_deg"]["yaw"]) < 20 and abs(b["pose_deg"]["yaw"]) < 20  # a near-frontal portrait
    assert a["blendshapes"] != b["blendshapes"]  # the refinement moved the regressed expression


def test_cli_builds_heavy_commands_only_when_run():
    # `train`/`vrn` arguments import torch for their defaults; `--help` and other commands must not pay it.
    import subprocess
    import sys

    code = ("import sys; from facerecon.cli.main import build_parser as b; "
            "p = b(['batch', 'x', '-o', 'y']); a = p.parse_args(['batch', 'x', '-o', 'y']); "
            "h = b([]).format_help(); assert 'train' in h and 'vrn' in h, h; "
            "print('torch' in sys.modules, a.command)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "batch"]
    # the chosen heavy command gets its full arguments (a default read from the training config)
    from facerecon.cli.main import build_parser

    args = build_parser(["train", "--data", "d"]).parse_args(["train", "--data", "d"])
    assert args.data == ["d"] and hasattr(args, "prdl_weight") and args.func is not None
    args = build_parser(["-q", "vrn", "train", "--engine", "e"]).parse_args(["-q", "vrn", "train", "--engine", "e"])
    assert args.engine == ["e"] and args.quiet
