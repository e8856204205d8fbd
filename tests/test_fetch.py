"""`facerecon assets fetch` against a local HTTP server (a thread) that serves a copy of the shared
assets in the mirror layout <mirror>/<asset>/<file>, and synthetic archives for the upstream path
(member extraction, deterministic packing). Nothing here reaches the internet."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facerecon import assets, fetch
from facerecon.cli.main import main
from facerecon.errors import AssetError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACERECON_ASSETS") or ROOT.parent / "shared" / "assets")
FETCHABLE = [n for n, a in assets.REGISTRY.items() if all(h is not None for _, h in a.files)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """A static file server over `folder` that logs each request and honours `Range: bytes=N-`
    unless `ranges` is False (then it answers 200 with the whole file, as http.server does)."""

    def __init__(self, folder: Path, ranges: bool = True):
        self.folder, self.ranges, self.log = folder, ranges, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                f = outer.folder / self.path.lstrip("/")
                if not f.is_file():
                    outer.log.append((self.path, self.headers.get("Range"), 404, 0))
                    self.send_error(404)
                    return
                data = f.read_bytes()
                rng = self.headers.get("Range")
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and outer.ranges else 0
                if start >= len(data) and start:
                    outer.log.append((self.path, rng, 416, 0))
                    self.send_error(416)
                    return
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                outer.log.append((self.path, rng, 206 if start else 200, len(body)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty, writable asset root and home; no mirror from the environment."""
    root = tmp_path / "assets"
    root.mkdir()
    monkeypatch.setenv("FACERECON_ASSETS", str(root))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    return root


def origin(n: str) -> Path | None:
    """Where the test finds asset n's files: the shared folder, else an installed package holding them
    (the MediaPipe weights inside an installed mediapipe wheel)."""
    a = assets.REGISTRY[n]
    for d in [SHARED / n] + (assets.package_paths(a.package_dir) if a.package_dir else []):
        if all((d / f).is_file() for f, _ in a.files + a.extras):
            return d
    return None


def need_shared():
    missing = [n for n in FETCHABLE if origin(n) is None]
    if missing:
        pytest.skip(f"assets {missing} not found at {SHARED} (set FACERECON_ASSETS) or in installed packages")


def make_mirror(dest: Path, names=FETCHABLE) -> Path:
    """Copy the registry's files (and extras) of `names` from the shared folder: <dest>/<asset>/<file>."""
    need_shared()
    for n in names:
        a = assets.REGISTRY[n]
        for f, _ in a.files + a.extras:
            (dest / n).mkdir(parents=True, exist_ok=True)
            (dest / n / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin(n) / f, dest / n / f)
    return dest


@pytest.fixture
def mirror(tmp_path):
    srv = Server(make_mirror(tmp_path / "mirror"))
    yield srv
    srv.close()


def test_fetch_all_from_mirror_then_nothing_to_do(env, mirror, capsys):
    # Assets an installed package already holds (the mediapipe wheel's weights) count as present.
    in_pkg = {n for n in FETCHABLE if origin(n) is not None and origin(n) != SHARED / n}
    assert main(["-q", "assets", "fetch", "--all", "--mirror", mirror.url]) == 0
    for n in FETCHABLE:
        st = assets.check(n)
        assert st.state == "found" and (n in in_pkg or st.location == env / n), (n, st)
        a = assets.REGISTRY[n]
        for f, h in a.files + a.extras:
            assert sha((st.location / f).read_bytes()) == h, (n, f)
    assert not (env / ".fetch").exists() and not list(env.rglob("*.part")) and not list(env.rglob("*.tmp"))
    assert not (env / "bfm09").exists()  # user-supplied: never attempted
    served = len(mirror.log)
    assert served == sum(len(assets.REGISTRY[n].files + assets.REGISTRY[n].extras) for n in FETCHABLE
                         if n not in in_pkg)
    # Present and valid: a second run downloads nothing; list and path still work.
    assert main(["-q", "assets", "fetch", "--all", "--mirror", mirror.url]) == 0
    assert len(mirror.log) == served
    capsys.readouterr()
    assert main(["assets", "path", "ict-facekit"]) == 0
    assert capsys.readouterr().out.strip() == str(env / "ict-facekit")
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "retinaface" in out and "bad hash" not in out


def test_mirror_from_environment_variable(env, mirror, monkeypatch):
    monkeypatch.setenv(fetch.MIRROR_ENV, mirror.url + "/")
    assert fetch.fetch("mtcnn", progress=False) == env / "mtcnn"
    assert {p for p, *_ in mirror.log} == {"/mtcnn/pnet.pt", "/mtcnn/rnet.pt", "/mtcnn/onet.pt", "/mtcnn/LICENSE.md"}


def test_corrupted_file_is_named_and_nothing_is_left(env, mirror, capsys):
    bad = mirror.folder / "retinaface" / "mobilenet0.25_Final.pth"
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    want = dict(assets.REGISTRY["retinaface"].files)["mobilenet0.25_Final.pth"]
    with pytest.raises(AssetError) as e:
        fetch.fetch("retinaface", mirror=mirror.url, progress=False)
    msg = str(e.value)
    assert "mobilenet0.25_Final.pth" in msg and "corrupted" in msg
    assert f"expected {want}" in msg and f"sha256 {sha(bytes(data))}" in msg
    assert not (env / "retinaface" / "mobilenet0.25_Final.pth").exists()
    assert not list(env.rglob("*.part")) and not list(env.rglob("*.tmp"))
    assert assets.check("retinaface").state == "missing"
    # The command line reports it as one line, exit status 2, no traceback.
    assert main(["-q", "assets", "fetch", "retinaface", "--mirror", mirror.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facerecon: error: asset 'retinaface': mobilenet0.25_Final.pth") and "Traceback" not in err


@pytest.mark.parametrize("ranges", [True, False])
def test_partial_download_resumes(env, tmp_path, ranges):
    """With Range support only the missing tail is sent; a server that ignores Range sends the whole
    file and the stale part is overwritten, not appended to."""
    srv = Server(make_mirror(tmp_path / "mirror", ["retinaface"]), ranges=ranges)
    try:
        full = (srv.folder / "retinaface" / "mobilenet0.25_Final.pth").read_bytes()
        half = len(full) // 2
        part = env / ".fetch" / "retinaface" / "mobilenet0.25_Final.pth.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(full[:half] if ranges else b"x" * half)
        fetch.fetch("retinaface", mirror=srv.url, progress=False)
        assert (env / "retinaface" / "mobilenet0.25_Final.pth").read_bytes() == full
        first = next(r for r in srv.log if r[0].endswith("mobilenet0.25_Final.pth"))
        assert first[1] == f"bytes={half}-"
        assert first[2:] == ((206, len(full) - half) if ranges else (200, len(full)))
        assert not (env / ".fetch").exists()
    finally:
        srv.close()


def test_complete_part_answered_416_is_kept(env, tmp_path):
    srv = Server(make_mirror(tmp_path / "mirror", ["mobilefacenet"]))
    try:
        full = (srv.folder / "mobilefacenet" / "mobilefacenet_068.ckpt").read_bytes()
        part = env / ".fetch" / "mobilefacenet" / "mobilefacenet_068.ckpt.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(full)
        fetch.fetch("mobilefacenet", mirror=srv.url, progress=False)
        assert srv.log == [("/mobilefacenet/mobilefacenet_068.ckpt", f"bytes={len(full)}-", 416, 0)]
        assert assets.check("mobilefacenet").state == "found"
    finally:
        srv.close()


def test_http_error_and_unreachable_server(env, mirror):
    (mirror.folder / "mtcnn" / "rnet.pt").unlink()
    with pytest.raises(AssetError, match=r"HTTP 404 .* for http://127\.0\.0\.1:\d+/mtcnn/rnet\.pt"):
        fetch.fetch("mtcnn", mirror=mirror.url, progress=False)
    assert not (env / "mtcnn" / "rnet.pt").exists()
    with pytest.raises(AssetError, match="cannot download http://127.0.0.1:9/"):
        fetch.fetch("mtcnn", mirror="http://127.0.0.1:9", progress=False, timeout=5)


def test_user_supplied_and_unknown_assets(env):
    with pytest.raises(AssetError, match="supplied by the user"):
        fetch.fetch("bfm09")
    with pytest.raises(AssetError, match="unknown asset 'nope'"):
        fetch.fetch("nope")
    assert main(["-q", "assets", "fetch"]) == 2  # neither names nor --all


def test_destination_falls_back_when_assets_folder_is_read_only(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACERECON_ASSETS", str(ro))
    assert fetch.default_root() == ro
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert fetch.default_root() == tmp_path / "home" / ".cache" / "facerecon" / "assets"
    finally:
        ro.chmod(0o755)


# ---- upstream sources: archive members and deterministic packing (synthetic, fast) ----

TOY_MEMBERS = {f"Toy/m{i:02d}.txt": f"member {i}\n".encode() * (i + 1) for i in range(12)}
TOY_MEMBERS["Toy/sub/deep.bin"] = bytes(range(256)) * 8


def toy_archive(path: Path, members: dict[str, bytes], top: str = "repo-abc") -> None:
    """A GitHub-style archive: everything under one top folder, plus a LICENSE beside Toy/."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{top}/LICENSE", b"toy licence\n")
            for name, data in reversed(list(members.items())):  # packing must not depend on archive order
                zf.writestr(f"{top}/{name}", data)
    else:
        with tarfile.open(path, "w:gz") as tf:
            for name, data in [("LICENSE", b"toy licence\n"), *members.items()]:
                ti = tarfile.TarInfo(f"{top}/{name}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


@pytest.fixture
def toy(tmp_path, monkeypatch, env):
    """A registered asset 'toy' whose Toy.tar.xz is packed from repo.zip and whose LICENSE is a
    member of repo.tar.gz, both served locally."""
    www = tmp_path / "www"
    www.mkdir()
    toy_archive(www / "repo.zip", TOY_MEMBERS)
    toy_archive(www / "repo.tar.gz", TOY_MEMBERS)
    manifest = tmp_path / "toy.sha256"
    manifest.write_text("".join(f"{sha(d)}  {n}\n" for n, d in sorted(TOY_MEMBERS.items())))
    srv = Server(www)
    asset = assets.Asset(
        "toy", "a toy asset", "MIT", "nowhere",
        # The packed file's own sha256 is unknown (another xz may compress differently): members decide.
        files=(("Toy.tar.xz", "0" * 64),),
        sources=(
            ("Toy.tar.xz", assets.Source(f"{srv.url}/repo.zip", member="repo-abc/Toy", pack="tar.xz",
                                         manifest=str(manifest))),
            ("LICENSE", assets.Source(f"{srv.url}/repo.tar.gz", member="repo-abc/LICENSE")),
        ),
        extras=(("LICENSE", sha(b"toy licence\n")),),
    )
    monkeypatch.setitem(assets.REGISTRY, "toy", asset)
    yield asset, srv, www
    srv.close()


def tar_members(path: Path) -> list[tuple[str, bytes, int, int, str]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read() if m.isfile() else b"", m.mtime, m.mode, m.uname)
                for m in tf.getmembers()]


def test_pack_from_upstream_archive_is_verified_and_deterministic(toy, env):
    _, srv, www = toy
    folder = fetch.fetch("toy", progress=False)
    packed = folder / "Toy.tar.xz"
    members = tar_members(packed)
    assert [m[0] for m in members] == ["Toy"] + sorted(TOY_MEMBERS)
    assert {m[0]: m[1] for m in members[1:]} == TOY_MEMBERS
    assert {(m[2], m[4]) for m in members} == {(fetch.PACK_MTIME, "")}
    assert (folder / "LICENSE").read_bytes() == b"toy licence\n"
    assert assets.check("toy").state == "found"  # the member manifest vouches for it
    assert sorted(p for p, *_ in srv.log) == ["/repo.tar.gz", "/repo.zip"]
    # Deterministic: a forced re-fetch gives the same bytes, from an archive in another order.
    first = packed.read_bytes()
    toy_archive(www / "repo.zip", dict(sorted(TOY_MEMBERS.items())))
    fetch.fetch("toy", force=True, progress=False)
    assert packed.read_bytes() == first


@pytest.mark.parametrize("damage", ["changed", "missing", "extra"])
def test_pack_rejects_a_wrong_member(toy, env, damage):
    www = toy[2]
    members = dict(TOY_MEMBERS)
    if damage == "changed":
        members["Toy/m03.txt"] = b"tampered\n"
    elif damage == "missing":
        del members["Toy/m03.txt"]
    else:
        members["Toy/zz.txt"] = b"new\n"
    toy_archive(www / "repo.zip", members)
    with pytest.raises(AssetError) as e:
        fetch.fetch("toy", progress=False)
    msg = str(e.value)
    assert "Toy.tar.xz" in msg and "repo.zip" in msg and "deleted" in msg
    expect = {"changed": f"member Toy/m03.txt: sha256 {sha(b'tampered' + bytes([10]))}, expected "
                         f"{sha(TOY_MEMBERS['Toy/m03.txt'])}",
              "missing": "1 members of", "extra": "unexpected member Toy/zz.txt"}[damage]
    assert expect in msg
    assert not (env / "toy" / "Toy.tar.xz").exists() and not list(env.rglob("*.tmp"))
    assert not list((env / ".fetch" / "toy").glob("*repo.zip*"))  # a bad archive is not resumed


def test_member_problem_check_of_an_installed_packed_file(toy, env):
    folder = fetch.fetch("toy", progress=False)
    packed = folder / "Toy.tar.xz"
    with tarfile.open(packed, "w:xz") as tf:  # same names, one changed byte
        for name, data in TOY_MEMBERS.items():
            data = data[:-1] + b"?" if name.endswith("m05.txt") else data
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    st = assets.check("toy")
    assert st.state == "bad hash" and st.detail == "Toy.tar.xz"
    assert "member Toy/m05.txt" in assets.problem(assets.REGISTRY["toy"], "Toy.tar.xz", packed)


# ---- the registry's upstream table ----

def test_every_downloadable_file_has_a_pinned_upstream_source():
    import re

    for n in FETCHABLE:
        a = assets.REGISTRY[n]
        assert fetch.fetchable(n), n
        for f, h in a.files + a.extras:
            src = assets.source(a, f)
            assert src is not None and re.fullmatch(r"[0-9a-f]{64}", h), (n, f)
            # A GitHub commit, or a PyPI file (immutable once published; its name holds the version).
            assert (re.match(r"https://(raw\.githubusercontent\.com|github\.com)/[\w.-]+/[\w.-]+/(archive/)?[0-9a-f]{40}",
                             src.url)
                    or re.fullmatch(r"https://files\.pythonhosted\.org/packages/[0-9a-f/]+/[\w.-]+-\d[\w.]*-[\w.-]+\.whl",
                                    src.url)), src.url
    assert not fetch.fetchable("bfm09")


@pytest.mark.slow
def test_ict_manifest_matches_the_shared_pack():
    """The recorded members are exactly those of the shared FaceXModel.tar.xz (which was checked
    against ICT-FaceKit's git blobs at the pinned commit). ~10 s: it unpacks 387 MB."""
    need_shared()
    src = assets.source(assets.REGISTRY["ict-facekit"], "FaceXModel.tar.xz")
    manifest = assets.read_manifest(src.manifest)
    assert len(manifest) == 160 and "FaceXModel/generic_neutral_mesh.obj" in manifest
    assert assets.members_problem(SHARED / "ict-facekit" / "FaceXModel.tar.xz", manifest) is None


@pytest.mark.slow
def test_ict_from_a_local_copy_of_the_github_archive(env, tmp_path, monkeypatch):
    """The real ICT route end to end: a zip laid out like GitHub's archive of the pinned commit →
    member check → deterministic pack → accepted by the registry (minutes: xz of 387 MB)."""
    need_shared()
    a = assets.REGISTRY["ict-facekit"]
    src = assets.source(a, "FaceXModel.tar.xz")
    top = src.member.split("/")[0]
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(SHARED / "ict-facekit" / "FaceXModel.tar.xz") as tf, \
            zipfile.ZipFile(www / "ict.zip", "w", zipfile.ZIP_STORED) as zf:
        for m in tf:
            if m.isfile():
                zf.writestr(f"{top}/{m.name}", tf.extractfile(m).read())
    srv = Server(www)
    try:
        local = tuple((f, dataclasses.replace(s, url=f"{srv.url}/ict.zip") if s.pack else s) for f, s in a.sources)
        monkeypatch.setitem(assets.REGISTRY, "ict-facekit", dataclasses.replace(a, sources=local))
        # LICENSE and README come from the mirror-free upstream in the registry: pre-seed them instead.
        (env / "ict-facekit").mkdir()
        for f in ("LICENSE", "ICT-README.md"):
            shutil.copyfile(SHARED / "ict-facekit" / f, env / "ict-facekit" / f)
        folder = fetch.fetch("ict-facekit", progress=False)
        packed = folder / "FaceXModel.tar.xz"
        assert assets.members_problem(packed, assets.read_manifest(src.manifest)) is None
        assert assets.check("ict-facekit").state == "found"
        with tarfile.open(packed) as tf:
            names = tf.getnames()
        assert names == ["FaceXModel", *sorted(n for n in names if n != "FaceXModel")]
    finally:
        srv.close()


def test_only_the_cli_imports_the_downloader():
    import ast

    for p in (ROOT / "src" / "facerecon").rglob("*.py"):
        if "cli" in p.relative_to(ROOT / "src" / "facerecon").parts:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert "fetch" not in names and not (node.module or "").endswith(".fetch"), p


def test_fetch_nested_files_even_when_a_package_holds_them(env, tmp_path):
    """mediapipe-facemesh's files sit in subfolders; --force fetches them although an installed
    mediapipe may already provide the asset."""
    name = "mediapipe-facemesh"
    if origin(name) is None:
        pytest.skip("no copy of the MediaPipe weights (shared folder or installed mediapipe)")
    srv = Server(make_mirror(tmp_path / "mirror", [name]))
    try:
        assert main(["-q", "assets", "fetch", name, "--force", "--mirror", srv.url]) == 0
    finally:
        srv.close()
    for f, h in assets.REGISTRY[name].files:
        assert sha((env / name / f).read_bytes()) == h, f
