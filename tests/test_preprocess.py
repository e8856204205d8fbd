"""`facerecon preprocess`: dataset folder, manifest, resumability, broken inputs counted as failed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import need_asset, need_data


def test_expand_inputs(tmp_path):
    from facerecon.io.paths import expand_inputs

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "empty").mkdir()
    for n in ("a/x.jpg", "a/y.PNG", "a/notes.txt", "z.jpg", "a/sub/w.jpg"):
        (tmp_path / n).write_bytes(b"")
    items = [tmp_path / "a", str(tmp_path / "*.jpg"), tmp_path / "a" / "x.jpg", tmp_path / "nope.jpg"]
    # Preprocessing: recursive, a missing file kept (it becomes a failed item).
    got, _ = expand_inputs(items, recursive=True, keep_missing=True)
    names = [p.name for p in got]
    assert names == ["w.jpg", "x.jpg", "y.PNG", "z.jpg", "nope.jpg"]  # folder, glob, duplicate dropped, missing kept
    # Reconstruction: one folder level; a missing file or an empty folder is a problem to report.
    got, problems = expand_inputs(items + [tmp_path / "empty"])
    assert [p.name for p in got] == ["x.jpg", "y.PNG", "z.jpg"]
    assert problems == [f"{tmp_path / 'nope.jpg'}: no such file", f"{tmp_path / 'empty'}: folder holds no images"]


def test_preprocess_images_and_broken_file(tmp_path):
    need_asset("3ddfa-v2")
    need_asset("retinaface")
    need_asset("ict-facekit")
    src = need_data("utkface") / "images"
    from facerecon.cli.main import main
    from facerecon.preprocess import read_manifest
    from facerecon.regress.data import PreprocessedDataset

    inp = tmp_path / "in"
    inp.mkdir()
    for p in sorted(src.glob("*.jpg"))[:2]:
        shutil.copy(p, inp / p.name)
    (inp / "broken.jpg").write_bytes(b"this is not a jpeg")
    out = tmp_path / "out"
    assert main(["preprocess", str(inp), "-o", str(out), "--quiet"]) == 0
    man = read_manifest(out)
    assert len(man) == 3
    status = {e["name"]: e for e in man}
    assert status["broken"]["status"] == "failed" and "not a readable image" in status["broken"]["error"]
    ok = [e for e in man if e["status"] == "ok"]
    assert len(ok) == 2
    from PIL import Image

    for e in ok:
        crop = np.asarray(Image.open(out / "crops" / f"{e['name']}.png"))
        mask = np.asarray(Image.open(out / "masks" / f"{e['name']}.png"))
        assert crop.shape == (224, 224, 3) and mask.shape == (224, 224) and mask.max() == 255
        with np.load(out / "items" / f"{e['name']}.npz") as z:
            lm = z["lm68"]
            assert lm.shape == (68, 2) and z["lm5"].shape == (5, 2)
        # The face is centred by the alignment: landmarks inside the crop, nose tip near the middle.
        assert (lm > 0).all() and (lm < 224).all()
        assert abs(lm[30, 0] - 111.5) < 25 and e["yaw"] is not None and e["lm_source"]
    # Resume: nothing new is processed; the manifest does not grow.
    assert main(["preprocess", str(inp), "-o", str(out), "--quiet"]) == 0
    assert len(read_manifest(out)) == 3
    # The training dataset reads the ok items only.
    ds = PreprocessedDataset([out], augment=None)
    assert len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (3, 224, 224) and item["lm68"].shape == (68, 2)


def test_truncated_manifest_line_is_ignored(tmp_path):
    from facerecon.preprocess import read_manifest

    (tmp_path / "manifest.jsonl").write_text(json.dumps({"name": "a", "source": "a.jpg", "status": "ok"})
                                             + "\n{\"name\": \"b\", \"sou")
    assert [e["name"] for e in read_manifest(tmp_path)] == ["a"]


def test_missing_folder_raises(tmp_path):
    from facerecon.regress.data import PreprocessedDataset

    with pytest.raises(FileNotFoundError, match="preprocess"):
        PreprocessedDataset([tmp_path / "nothing"])
