"""`facerecon serve`'s engine and HTTP API (no browser: tests/test_serve_browser.py drives the page)."""

from __future__ import annotations

import ast
import io
import re
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import need_asset

PKG = Path(__file__).resolve().parents[1] / "src" / "facerecon" / "serve"
STATIC = PKG / "static"


# -- the page's files: offline, vendored, small -------------------------------------------------------

def test_page_loads_nothing_from_the_network():
    """Every src/href/import of our HTML, JS and CSS is a local path: the page works offline."""
    html = (STATIC / "index.html").read_text()
    js = (STATIC / "app.js").read_text()
    css = (STATIC / "style.css").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    refs += re.findall(r"""\bfrom\s+['"]([^'"]+)['"]""", js) + re.findall(r"""import\(\s*['"]([^'"]+)""", js)
    refs += re.findall(r"url\(([^)]*)\)", css)
    assert refs, "found no references at all: the patterns are wrong"
    remote = [r for r in refs if re.match(r"^\s*['\"]?(https?:)?//", r)]
    assert not remote, f"the page loads from the network: {remote}"
    local = [r for r in refs if r.startswith(("/static/", "./"))]
    for r in local:
        rel = r.removeprefix("/static/").removeprefix("./")
        assert (STATIC / rel).is_file(), f"{r} is referenced but not in the package data"
    assert "./vendor/three-viewer.min.js" in refs


def test_vendored_viewer_has_its_licence_and_a_reasonable_size():
    bundle = STATIC / "vendor" / "three-viewer.min.js"
    lic = (STATIC / "vendor" / "LICENSE-three.txt").read_text()
    assert "MIT License" in lic and "three.js authors" in lic
    assert bundle.read_text()[:200].count("SPDX-License-Identifier: MIT") == 1
    assert bundle.stat().st_size < 1_000_000


def test_web_framework_is_imported_lazily():
    """fastapi/uvicorn/multipart (the optional `serve` extra) only inside functions: `import
    facerecon.serve` and `facerecon --help` work without the extra."""
    heavy = {"fastapi", "uvicorn", "multipart", "python_multipart", "starlette"}
    for path in PKG.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad = [n for n in names if n.split(".")[0] in heavy]
            assert not bad, f"{path.name}:{node.lineno} imports {bad} at module level"


# -- engine checks that need no model ------------------------------------------------------------------

def test_bad_requests_are_refused_before_any_work(tmp_path):
    from facerecon.serve import Engine, Limits, Upload
    from facerecon.serve.engine import ServeError, TooLargeError

    eng = Engine(tmp_path, limits=Limits(max_upload_mb=0.001, max_photos=2, max_frames=5))
    photo = Upload("a.jpg", b"x" * 10)
    cases = [
        ([], "regress", {}, "no file uploaded"),
        ([photo], "no-such-method", {}, "unknown method 'no-such-method'"),
        ([Upload("clip.mp4", b"v"), photo], "regress", {}, "clip.mp4: upload one video on its own"),
        ([photo] * 3, "regress", {}, "3 photos; at most 2"),
        ([Upload("empty.png", b"")], "regress", {}, "empty.png: the file is empty"),
        ([photo], "regress", {"stride": 0}, "stride must be at least 1"),
        ([photo], "regress", {"max_frames": 6}, "max_frames must be between 1 and 5"),
        ([Upload("big.jpg", b"x" * 2000)], "regress", {}, "the limit is 0.001 MB"),
    ]
    for uploads, method, kw, msg in cases:
        with pytest.raises(ServeError, match=re.escape(msg)) as e:
            eng.run(uploads, method, **kw)
        assert 400 <= e.value.status < 500
    assert isinstance(pytest.raises(TooLargeError, eng.run, [Upload("big.jpg", b"x" * 2000)], "regress").value,
                      TooLargeError)
    assert eng._recons == {}, "a refused request built a model"
    assert list(tmp_path.iterdir()) == [], "a refused request left a result folder"


def test_only_the_newest_results_are_kept(tmp_path):
    from facerecon.serve import Engine

    eng = Engine(tmp_path, max_results=3)
    ids = []
    for _ in range(5):
        rid, out = eng._new_result()
        (out / "x.json").write_text("{}")
        eng._register(rid, out / "x.json")
        ids.append(rid)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ids[2:])
    assert eng.file(ids[4], "x.json").read_text() == "{}"
    for rid, name in ((ids[0], "x.json"), (ids[4], "y.json"), (ids[4], "../" + ids[3] + "/x.json")):
        with pytest.raises(FileNotFoundError):
            eng.file(rid, name)


def test_unique_stems_and_landmark_sets():
    from facerecon.serve.engine import landmark_sets, safe_stem, unique_stems

    assert unique_stems(["a.jpg", "a.png", "../b c.jpg", "", "a.jpg"]) == ["a", "a_2", "b_c", "face", "a_3"]
    assert safe_stem("/etc/passwd") == "passwd" and safe_stem("..") == "face"

    from dataclasses import dataclass

    @dataclass(frozen=True)
    class R:  # the fields landmark_sets reads: lmN with N points in original px; others ignored
        lm68: np.ndarray
        lm106: np.ndarray
        lm68_crop: np.ndarray
        lm5: np.ndarray

        @property
        def lm134(self):  # a property counts too
            return np.ones((134, 2))

    r = R(np.arange(136, dtype=np.float32).reshape(68, 2) / 3, np.zeros((106, 2)), np.zeros((68, 2)),
          np.zeros((4, 2)))
    sets = landmark_sets(r)
    assert list(sets) == ["68", "106", "134"]     # lm5 has 4 points, not 5: not a landmark set
    assert np.allclose(sets["68"], r.lm68, atol=0.005) and len(sets["106"]) == 106 and sets["134"][0] == [1, 1]


# -- the HTTP API ------------------------------------------------------------------------------------

def _client(workdir, **engine_options):
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'facerecon[serve]'")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx: pip install 'facerecon[serve-test]'")
    from fastapi.testclient import TestClient

    from facerecon.serve import Engine, create_app

    eng = Engine(workdir, **engine_options)
    c = TestClient(create_app(eng, default_method="regress"))
    c.engine = eng
    return c


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with _client(tmp_path_factory.mktemp("serve")) as c:
        yield c


@pytest.fixture(scope="module")
def quick_client(tmp_path_factory):
    """Three formats only (the page's and the JSON), keeping 3 results: for sets and videos."""
    with _client(tmp_path_factory.mktemp("serve"), formats=("json", "overlay", "glb"), max_results=3) as c:
        yield c


def test_page_and_info(client):
    from facerecon import api

    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "/static/app.js" in r.text
    assert client.get("/static/vendor/three-viewer.min.js").status_code == 200
    info = client.get("/api/info").json()
    assert info["methods"] == api.available_methods() and info["default_method"] == "regress"
    assert list(info["formats"]) == list(api.output_formats())


def test_a_bad_file_is_a_clear_4xx_without_traceback(client):
    r = client.post("/api/reconstruct", files=[("files", ("holiday.jpg", b"this is not a JPEG", "image/jpeg"))],
                    data={"method": "regress"})
    assert r.status_code == 422
    msg = r.json()["error"]
    assert msg.startswith("holiday.jpg: not a readable image") and "Traceback" not in r.text
    r = client.post("/api/reconstruct", data={"method": "regress"})
    assert r.status_code == 400 and "no file uploaded" in r.json()["error"]
    assert client.get("/api/results/nope/x.obj").status_code == 404


def test_no_face_is_a_4xx(client):
    need_asset("ict-facekit")
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(buf, "PNG")
    r = client.post("/api/reconstruct", files=[("files", ("wall.png", buf.getvalue(), "image/png"))],
                    data={"method": "regress"})
    assert r.status_code == 422 and r.json()["error"] == "wall.png: no face found"


def _photo_bytes(path) -> bytes:
    return Path(path).read_bytes()


def test_photo_result_matches_the_api(client, astronaut_path, tmp_path):
    """The payload's numbers are the API's for the same photo and method; every output format the
    API writes is downloadable, and the zip holds the same files."""
    need_asset("ict-facekit")
    from facerecon import api

    r = client.post("/api/reconstruct", files=[("files", ("astro naut.png", _photo_bytes(astronaut_path),
                                                          "image/png"))], data={"method": "regress"})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["kind"] == "photo" and res["method"] == "regress" and len(res["faces"]) == 1
    face = res["faces"][0]
    ref = api.FaceReconstructor(method="regress").reconstruct(str(astronaut_path))[0]
    for k in ("yaw", "pitch", "roll"):
        assert face["pose_deg"][k] == pytest.approx(ref.pose_deg[k], abs=1e-3)
    assert np.allclose(face["translation_mm"], ref.translation_mm, atol=1e-3)
    assert face["blendshapes"].keys() == ref.blendshapes.keys()
    assert max(abs(face["blendshapes"][k] - v) for k, v in ref.blendshapes.items()) < 1e-4
    assert np.abs(np.array(face["landmarks"]["68"]) - ref.lm68).max() < 0.02
    assert set(face["landmarks"]) == {"68", "106", "134"}
    assert np.abs(np.array(face["landmarks"]["106"]) - ref.lm106).max() < 0.02
    assert face["image_size"] == [512, 512]
    assert {m["format"] for m in face["masks"]} == {"seg", "seg_visible"}

    # The answer brings the page's formats; the rest follow: then the same files as Reconstruction.save,
    # each fetchable, named from the upload's name.
    assert {d["format"] for d in face["downloads"]} == {"overlay", "glb", "seg", "seg_visible"}
    assert client.engine.wait(res["id"], 120)
    st = client.get(res["status"]).json()
    assert st["done"] and st["error"] is None and len(st["downloads"]) == 1
    face["downloads"] = st["downloads"][0]
    assert [d["format"] for d in face["downloads"][:2]] == ["overlay", "glb"]
    written = {p.name for p in ref.save(tmp_path, stem="astro_naut")}
    assert {d["name"] for d in face["downloads"]} == written
    glb = client.get(face["glb"])
    assert glb.status_code == 200 and glb.content[:4] == b"glTF"
    assert client.get(face["overlay"]).content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(face["photo"]).content[:2] == b"\xff\xd8"
    for d in face["downloads"]:
        got = client.get(d["url"])
        assert got.status_code == 200 and len(got.content) == d["bytes"], d["name"]
    z = zipfile.ZipFile(io.BytesIO(client.get(res["zip"]).content))
    assert set(z.namelist()) == written | {"astro_naut_input.jpg"}
    # Only names the result wrote are served.
    rid = res["id"]
    for bad in ("..%2F..%2Fetc%2Fpasswd", "astro_naut.obj.tmp", "..", "frames.csv"):
        assert client.get(f"/api/results/{rid}/{bad}").status_code == 404


def test_set_and_video(quick_client, astronaut_path):
    """Two photos of one person (two share a name) -> two faces with their own files; a 4-frame
    video, every 2nd frame -> frames 0 and 2, a CSV with one row per frame, first and last shown."""
    need_asset("ict-facekit")
    cv2 = pytest.importorskip("cv2", reason="video input needs OpenCV (the detect extra)")
    data = _photo_bytes(astronaut_path)
    from PIL import Image

    mirrored = io.BytesIO()
    Image.open(io.BytesIO(data)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored, "PNG")
    r = quick_client.post("/api/reconstruct", data={"method": "regress"},
                    files=[("files", ("me.png", data, "image/png")), ("files", ("me.png", mirrored.getvalue(),
                                                                                "image/png"))])
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["kind"] == "set" and [f["stem"] for f in res["faces"]] == ["me", "me_2"]
    assert [f["source"] for f in res["faces"]] == ["me.png", "me.png"]
    yaw = [f["pose_deg"]["yaw"] for f in res["faces"]]
    assert abs(yaw[0] + yaw[1]) < 0.5 * max(abs(yaw[0]), 2.0), f"a mirrored photo should mirror the yaw: {yaw}"
    names = {d["name"] for f in res["faces"] for d in f["downloads"]}
    assert "me.glb" in names and "me_2.glb" in names

    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((256, 256)))
    path = Path(quick_client.engine.workdir) / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for k in range(4):
        w.write(np.ascontiguousarray(np.roll(rgb, 3 * k, axis=1)[..., ::-1]))
    w.release()
    r = quick_client.post("/api/reconstruct", data={"method": "regress", "stride": "2", "max_frames": "10"},
                    files=[("files", ("clip.avi", path.read_bytes(), "video/x-msvideo"))])
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["kind"] == "video" and [f["frame"] for f in res["frames"]] == [0, 2]
    assert [f["stem"] for f in res["faces"]] == ["frame00000", "frame00002"]
    csv_rows = quick_client.get(res["frames_csv"]).text.strip().splitlines()
    assert csv_rows[0].startswith("frame,yaw_deg,pitch_deg,roll_deg,tx_mm,ty_mm,tz_mm,")
    assert [row.split(",")[0] for row in csv_rows[1:]] == ["0", "2"]
    assert float(csv_rows[2].split(",")[1]) == pytest.approx(res["frames"][1]["pose_deg"]["yaw"], abs=1e-5)

    r = quick_client.post("/api/reconstruct", data={"method": "regress"},
                    files=[("files", ("broken.mp4", b"\x00" * 100, "video/mp4"))])
    assert r.status_code == 422 and r.json()["error"].startswith("broken.mp4: ")
    assert "Traceback" not in r.text


def test_requests_run_one_at_a_time_and_a_full_queue_is_refused(tmp_path, astronaut_path):
    """A probe method that sleeps records how many reconstructions overlap: never more than one; with
    max_pending=2, a third request while two are in is refused with BusyError (HTTP 503)."""
    need_asset("ict-facekit")
    from facerecon.methods import METHODS, build_method, register_method

    live, peak, entered = [0], [0], threading.Event()

    class Probe:
        name, needs_landmarks, detector = "serve-probe", True, "fast"

        def __init__(self, ctx):
            self.inner = build_method("regress", ctx)

        def reconstruct(self, crops, faces, request):
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            entered.set()
            time.sleep(0.3)
            live[0] -= 1
            return self.inner.reconstruct(crops, faces, request)

    register_method("serve-probe", Probe, "test probe", overwrite=True)
    try:
        _run_probe(tmp_path, astronaut_path, live, peak, entered)
    finally:
        METHODS.unregister("serve-probe")


def _run_probe(tmp_path, astronaut_path, live, peak, entered):
    from facerecon.serve import BusyError, Engine, Upload

    eng = Engine(tmp_path, formats=("json",), max_pending=2)
    up = [Upload("a.png", _photo_bytes(astronaut_path))]
    eng.warm("serve-probe")
    out, errors = [], []

    def go():
        try:
            out.append(eng.run(up, "serve-probe"))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait(30)
    time.sleep(0.05)
    with pytest.raises(BusyError, match="busy") as e:
        eng.run(up, "serve-probe")
    assert e.value.status == 503
    for t in threads:
        t.join(60)
    assert not errors and len(out) == 2 and peak[0] == 1
    assert out[0]["faces"][0]["downloads"] == []          # json is not a page format: written after
    assert eng.wait(out[0]["id"], 60)
    assert [d["name"] for d in eng.status(out[0]["id"])["downloads"][0]] == ["a.json"]


def test_cli_serve_parses_and_refuses_an_unknown_method(capsys):
    from facerecon.cli.main import build_parser, main

    args = build_parser().parse_args(["serve", "--port", "8123", "--method", "regress"])
    assert (args.port, args.method, args.host) == (8123, "regress", "127.0.0.1")
    assert main(["serve", "--method", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_cli_serve_without_the_extra_says_what_to_install(monkeypatch, capsys):
    import sys

    from facerecon.cli.main import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed: import raises ImportError
    assert main(["serve", "--method", "regress"]) == 2
    assert "pip install \"facerecon[serve]\"" in capsys.readouterr().err


def test_an_unexpected_error_is_a_500_without_traceback(tmp_path, monkeypatch):
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'facerecon[serve]'")
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx: pip install 'facerecon[serve-test]'")
    from fastapi.testclient import TestClient

    from facerecon.serve import Engine, create_app

    eng = Engine(tmp_path)

    def broken(*a, **k):
        raise RuntimeError("secret internals at /some/path")

    import logging

    logged = []
    handler = logging.Handler()
    handler.emit = lambda rec: logged.append(logging.Formatter().format(rec))
    logger = logging.getLogger("facerecon.serve.app")
    logger.addHandler(handler)
    monkeypatch.setattr(eng, "run", broken)
    try:
        with TestClient(create_app(eng), raise_server_exceptions=False) as c:
            r = c.post("/api/reconstruct", files=[("files", ("a.jpg", b"x", "image/jpeg"))])
    finally:
        logger.removeHandler(handler)
    assert r.status_code == 500 and r.json() == {"error": "internal error (RuntimeError); see the server's log"}
    assert "secret" not in r.text and "Traceback" not in r.text
    assert any("secret internals" in m and "Traceback" in m for m in logged)  # ... the server's log has it
