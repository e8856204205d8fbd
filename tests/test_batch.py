"""`facerecon batch`: a corpus of bad inputs built here never stops a batch (each gets a named,
one-line reason), the tables hold each input exactly once, a SIGKILLed batch resumes with nothing
lost and nothing duplicated, and the thread policy sets what it says."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from facerecon.errors import InputImageError
from facerecon.io.image import load_image

from .conftest import ROOT, need_asset

pq = pytest.importorskip("pyarrow.parquet", reason="batch tables need pyarrow (pip install 'facerecon[batch]')")

PLUGIN = "tests.batch_plugin"


def _face_like(seed: int, size=(96, 80)) -> np.ndarray:
    g = np.random.default_rng(seed)
    a = g.integers(40, 220, (size[1], size[0], 3), dtype=np.uint8)
    a[0, 0] = (9, 9, 9)  # never the plugin's crash pixel
    return a


def _bomb_png(w: int, h: int) -> bytes:
    """A valid 1x1 PNG whose header then declares w x h (a decompression bomb's header)."""
    buf = io.BytesIO()
    PILImage.new("L", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", w, h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def build_corpus(d: Path) -> dict[str, str | None]:
    """Files in `d` -> the failure reason each must get (None: reconstructed)."""
    d.mkdir(parents=True, exist_ok=True)
    want: dict[str, str | None] = {}

    def put(name, reason, data=None, arr=None, **save):
        p = d / name
        if arr is not None:
            PILImage.fromarray(arr).save(p, **save)
        elif data is not None:
            p.write_bytes(data)
        want[name] = reason
        return p

    for i in range(3):
        put(f"good{i}.png", None, arr=_face_like(i))
    jpg = io.BytesIO()
    PILImage.fromarray(_face_like(7)).save(jpg, "JPEG", quality=90)
    put("good.jpg", None, data=jpg.getvalue())
    put("mislabelled_png.jpg", None, data=(d / "good0.png").read_bytes())  # content wins over the suffix
    put("bomb.png", "too_large", data=_bomb_png(30000, 30000))
    put("truncated.jpg", "truncated", data=jpg.getvalue()[: len(jpg.getvalue()) // 2])
    put("empty.jpg", "empty", data=b"")
    put("text.jpg", "not_an_image", data=b"this is not an image\n" * 20)
    put("black.png", "no_face", arr=np.zeros((64, 64, 3), np.uint8))
    crash = _face_like(3)
    crash[0, 0] = (1, 2, 3)
    put("crash.png", "worker_crashed", arr=crash)
    big = np.kron(_face_like(5, (40, 30)), np.ones((40, 40, 1), np.uint8))  # 1600 x 1200
    put("huge.jpg", None, arr=big, quality=80)
    frames = [PILImage.fromarray(_face_like(10 + k)) for k in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    want["anim.gif"] = None
    frames[0].save(d / "pages.tif", save_all=True, append_images=frames[1:2])
    want["pages.tif"] = None
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(200)
    put("clip.mp4", "video", data=mp4)
    put("clip_named_as_photo.jpg", "video", data=mp4)
    os.symlink(d / "gone.jpg", d / "dangling.jpg")
    want["dangling.jpg"] = "broken_symlink"
    return want


def _cfg(out, **kw):
    from facerecon.batch import BatchConfig
    from tests.batch_plugin import BoxDetector

    return BatchConfig(str(out), outputs=("json",), method="test-meanface", detector=BoxDetector(),
                       plugins=(PLUGIN,), max_side=512, **kw)


def _tables(out):
    res = pq.read_table(out / "results.parquet").to_pylist()
    fail = pq.read_table(out / "failures.parquet").to_pylist()
    return res, fail


def test_bad_inputs_never_stop_a_batch_and_resume_skips_done(tmp_path):
    need_asset("ict-facekit")
    from facerecon.batch import EXIT_SOME_FAILED, run_batch

    want = build_corpus(tmp_path / "in")
    out = tmp_path / "out"
    pattern = str(tmp_path / "nothing" / "*.jpg")
    s = run_batch([str(tmp_path / "in"), pattern], _cfg(out), workers=1, progress=False)
    res, fail = _tables(out)
    got = {Path(r["source"]).name: r["reason"] for r in fail}
    ok = {Path(r["source"]).name for r in res}
    assert got.pop("*.jpg") == "no_match"
    assert got == {k: v for k, v in want.items() if v is not None}
    assert ok == {k for k, v in want.items() if v is None}
    assert s.exit_code == EXIT_SOME_FAILED and s.images_ok == len(ok) and s.faces == len(res)
    for r in fail:  # one line that names the file, no traceback
        assert "\n" not in r["message"] and "Traceback" not in r["message"]
        assert Path(r["source"]).name in r["message"] or r["reason"] == "no_match"
    rows = {Path(r["source"]).name: r for r in res}
    # The huge photo was downscaled to 512 and its row says so, with landmarks in the file's pixels.
    h = rows["huge.jpg"]
    assert (h["width"], h["height"]) == (1600, 1200) and h["scale"] == pytest.approx(512 / 1600)
    lm = np.asarray(h["landmarks"]).reshape(68, 2)
    assert lm[:, 0].max() > 600 and lm[:, 0].max() < 1600  # file pixels, not the 512-px copy
    assert rows["anim.gif"]["frames"] == 3 and rows["pages.tif"]["frames"] == 2
    assert len(rows["good0.png"]["params"]) > 100 and len(rows["good0.png"]["landmarks"]) == 136
    # The worker ran under the thread policy: cores // workers threads in torch and numba.
    from facerecon.threads import available_cores

    info = json.loads((out / "summary.json").read_text())
    assert info["threads"] == available_cores() and info["worker_threads"]["torch"] == available_cores()
    assert info["worker_threads"]["numba"] == available_cores() and info["worker_threads"]["torch_interop"] == 1
    for r in res:
        assert (out / r["outputs"][0]).is_file() and r["outputs"][0].endswith(f"{r['stem']}.json")
    # Resume: everything recorded is skipped, nothing is added.
    s2 = run_batch([str(tmp_path / "in"), pattern], _cfg(out), workers=1, progress=False)
    assert s2.skipped_done == len(want) + 1 and s2.images_ok == s2.images_failed == 0
    res2, fail2 = _tables(out)
    assert len(res2) == len(res) and len(fail2) == len(fail)


def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    """A batch run by the CLI is SIGKILLed mid-way; the resumed run completes it: every input is in
    the table exactly once and has exactly one output file."""
    need_asset("ict-facekit")
    n = 16
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        PILImage.fromarray(_face_like(100 + i)).save(src / f"f{i:02d}.png")
    out = tmp_path / "out"
    script = (
        "import sys; from facerecon.batch import run_batch, BatchConfig; from tests.batch_plugin import BoxDetector;"
        f"run_batch([{str(src)!r}], BatchConfig({str(out)!r}, method='test-meanface', detector=BoxDetector(),"
        f" plugins=({PLUGIN!r},), method_options={{'delay': 0.3}}), workers=1, progress=False, flush_items=1)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, start_new_session=True)
    parts = out / ".parts"
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 240:
            if proc.poll() is not None:
                break
            if parts.is_dir() and len(list(parts.glob("res-*.parquet"))) >= n // 3:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    done_before = len(list(parts.glob("res-*.parquet")))
    assert 0 < done_before < n

    from facerecon.batch import run_batch
    from tests.batch_plugin import BoxDetector  # noqa: F401 - registers the method here too

    s = run_batch([str(src)], _cfg(out), workers=1, progress=False)
    res, fail = _tables(out)
    sources = [r["source"] for r in res]
    assert not fail and len(sources) == len(set(sources)) == n
    assert s.skipped_done >= done_before and s.images_ok == n - s.skipped_done
    files = sorted(p.name for p in (out / "faces").iterdir())
    assert len(files) == n and all(f.endswith(".json") and not f.startswith(".") for f in files)
    assert not list(parts.glob("*"))  # consolidated


def test_load_image_names_what_is_wrong(tmp_path, monkeypatch):
    want = build_corpus(tmp_path)
    for name, reason in want.items():
        if reason in (None, "no_face", "worker_crashed"):
            load_image(tmp_path / name, max_side=512)
            continue
        with pytest.raises(InputImageError) as e:
            load_image(tmp_path / name)
        assert e.value.reason == reason and name in str(e.value) and "\n" not in str(e.value)
    # The bomb is refused from its header: nothing near 900 MP is ever allocated.
    with pytest.raises(InputImageError, match="declares 900 MP, above the 100 MP limit"):
        load_image(_bomb_png(30000, 30000))
    with pytest.raises(InputImageError, match="declares 400x300 = 0 MP, above the 0 MP limit"):
        load_image(_bomb_png(400, 300), max_pixels=100_000)
    # A stated limit applies below Pillow's own: 1 MP refuses a 1600x1200 photo.
    with pytest.raises(InputImageError, match="above the 1 MP limit"):
        load_image(tmp_path / "huge.jpg", max_pixels=1_000_000)
    img = load_image(tmp_path / "huge.jpg", max_side=400)
    assert max(img.pixels.shape[:2]) == 400 and img.scale == pytest.approx(0.25)
    assert load_image(tmp_path / "huge.jpg").scale == 1.0
    assert load_image(tmp_path / "anim.gif").pixels.shape == (80, 96, 3)
    # Unreadable files (root reads anything, so the check itself is exercised through os.access).
    p = tmp_path / "good0.png"
    real = os.access
    monkeypatch.setattr(os, "access", lambda q, m: False if Path(q) == p else real(q, m))
    with pytest.raises(InputImageError) as e:
        load_image(p)
    assert e.value.reason == "permission"


def test_iter_inputs_streams_folders_globs_and_manifests(tmp_path):
    from facerecon.batch import iter_inputs

    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "notes.md", ".hidden.jpg", "sub/c.jpg", "v.mp4"):
        (d / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# comment\nimgs/a.jpg\n\nimgs/sub/c.jpg\n")
    (tmp_path / "list.csv").write_text("id,path\n1,imgs/b.png\n2,imgs/sub/c.jpg\n")
    (tmp_path / "bare.csv").write_text("imgs/a.jpg,1\n")
    names = lambda items: sorted(os.path.relpath(i.source, tmp_path) for i in items)
    assert names(iter_inputs([d])) == ["imgs/a.jpg", "imgs/b.png", "imgs/v.mp4"]
    assert names(iter_inputs([d], recursive=True)) == ["imgs/a.jpg", "imgs/b.png", "imgs/sub/c.jpg", "imgs/v.mp4"]
    assert names(iter_inputs([tmp_path / "list.txt"])) == ["imgs/a.jpg", "imgs/sub/c.jpg"]
    assert names(iter_inputs([tmp_path / "list.csv"])) == ["imgs/b.png", "imgs/sub/c.jpg"]
    assert names(iter_inputs([tmp_path / "bare.csv"])) == ["imgs/a.jpg"]
    assert names(iter_inputs([str(d / "*.jpg")])) == ["imgs/a.jpg"]
    items = list(iter_inputs([str(d / "*.gif")]))
    assert len(items) == 1 and items[0].problem[0] == "no_match"
    # A generator: nothing is listed before the first item is asked for.
    it = iter_inputs([d])
    assert next(it).source.startswith(str(d))
    # Stems are unique for equal file names in different folders, and stable.
    a, c = next(iter(iter_inputs([d / "a.jpg"]))), next(iter(iter_inputs([tmp_path / "list.txt"])))
    assert a.stem == c.stem and a.stem.startswith("a_")


def test_store_drops_duplicates_left_by_a_kill_during_consolidation(tmp_path):
    from facerecon.batch import ResultStore

    s = ResultStore(tmp_path, flush_items=1)
    row = {"source": "/x/a.jpg", "face": 0, "status": "ok"}
    s.record([row], None)
    s.record([], {"source": "/x/b.jpg", "reason": "empty", "message": "b: empty"})
    assert s.done() == {"/x/a.jpg", "/x/b.jpg"} and s.done(failures=False) == {"/x/a.jpg"}
    parts = sorted((tmp_path / ".parts").glob("*.parquet"))
    keep = [p.read_bytes() for p in parts]
    assert s.consolidate() == (1, 1)
    for p, b in zip(parts, keep):  # as if killed after the merge, before the parts were removed
        p.write_bytes(b)
    (tmp_path / ".parts" / ".res-x.parquet.tmp").write_bytes(b"half")  # a part a kill interrupted
    s2 = ResultStore(tmp_path)
    assert s2.consolidate() == (1, 1) and not list((tmp_path / ".parts").iterdir())


def test_thread_policy_sets_the_counts():
    import numba
    import torch

    from facerecon import threads
    from facerecon.api import set_threads

    prev = torch.get_num_threads(), numba.get_num_threads()
    saved = dict(os.environ)
    try:
        got = set_threads(1)
        assert got["torch"] == torch.get_num_threads() == 1 and got["numba"] == numba.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert got["torch_interop"] == torch.get_num_interop_threads()
        assert os.environ.get("NUMBA_NUM_THREADS") == saved.get("NUMBA_NUM_THREADS")  # numba would refuse it
        assert threads.thread_env(3)["NUMBA_NUM_THREADS"] == "3"  # for the processes it starts
    finally:
        torch.set_num_threads(prev[0])
        numba.set_num_threads(prev[1])
        os.environ.clear()
        os.environ.update(saved)
    assert threads.split_cores(2, cores=2) == (2, 1)
    assert threads.split_cores(1, cores=8) == (1, 8)
    assert threads.split_cores(3, 4, cores=8) == (3, 2)  # 3 x 4 > 8: cut to 2 each
    assert threads.split_cores(4, cores=2) == (4, 1)
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.prefer_passive_wait(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0"}  # the user's choice stands
    env = {"FACERECON_THREAD_POLICY": "off"}
    threads.prefer_passive_wait(env)
    assert env == {"FACERECON_THREAD_POLICY": "off"}


@pytest.mark.slow
def test_ray_engine_writes_what_the_local_engine_writes(tmp_path):
    """Ray (its default, plain actors) on a local Ray: the same rows, failures and files as the local
    engine (and resume). tests/test_batch_ray.py runs Ray Data and a two-node cluster."""
    need_asset("ict-facekit")
    pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install 'facerecon[ray]')")
    from facerecon.batch import run_batch

    want = build_corpus(tmp_path / "in")
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        s = run_batch([str(tmp_path / "in")], _cfg(out), engine=engine, workers=1, progress=False)
        res, fail = _tables(out)
        runs[engine] = ({Path(r["source"]).name: r for r in res}, {Path(r["source"]).name: r["reason"] for r in fail})
        assert s.images_ok + s.images_failed == len(want)
        assert sorted(p.name for p in (out / "faces").iterdir()) == sorted(r["outputs"][0].split("/")[-1]
                                                                           for r in res)
    (lres, lfail), (rres, rfail) = runs["local"], runs["ray"]
    assert rfail == lfail == {k: v for k, v in want.items() if v is not None}
    assert rres.keys() == lres.keys()
    for k in lres:
        np.testing.assert_allclose(rres[k]["landmarks"], lres[k]["landmarks"], atol=1e-3)
        assert rres[k]["stem"] == lres[k]["stem"]
    s = run_batch([str(tmp_path / "in")], _cfg(tmp_path / "ray"), engine="ray", workers=1, progress=False)
    assert s.skipped_done == len(want) and s.images_ok == 0


def test_cli_batch_exit_codes_and_usage(tmp_path, capsys):
    """`facerecon batch`: a pattern matching nothing is a recorded failure (exit 3, no worker started);
    an unknown method or output format is a usage error (2)."""
    from facerecon.cli.main import main

    out = tmp_path / "out"
    assert main(["-q", "batch", str(tmp_path / "none" / "*.jpg"), "-o", str(out), "--method", "regress"]) == 3
    assert "0 face(s), 1 failed" in capsys.readouterr().out
    fail = pq.read_table(out / "failures.parquet").to_pylist()
    assert [f["reason"] for f in fail] == ["no_match"]
    assert main(["-q", "batch", str(tmp_path), "-o", str(out), "--method", "nosuch"]) == 2
    assert "unknown method 'nosuch'" in capsys.readouterr().err
    assert main(["-q", "batch", str(tmp_path), "-o", str(out), "--outputs", "obj,nosuch"]) == 2
