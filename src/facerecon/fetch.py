"""`facerecon assets fetch`: download assets into their folder, verified, resumable, atomic.

Only this explicit command downloads; nothing in the library calls it. For each file of an asset
(`assets.Asset.files` and `extras`) the bytes come from a mirror (``<mirror>/<asset>/<file>``, when
`mirror` or ``$FACERECON_ASSET_MIRROR`` is set) or else from the file's upstream `assets.Source`: a
URL, optionally a member of the downloaded zip/wheel/tar, optionally a folder of it packed into a
``.tar.xz``. Every file is checked against its registered sha256 (a packed file member by member)
before it is renamed into place, so a final name never holds wrong or partial bytes.

Destination: ``<root>/<asset>/`` where root is `root`, else the first writable of
``$FACERECON_ASSETS`` and ``~/.cache/facerecon/assets`` (both are on the asset search path).
Downloads in progress live in ``<root>/.fetch/<asset>/`` as ``*.part`` files; a rerun resumes them
with an HTTP Range request (a server that ignores Range restarts the file from zero).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from . import __version__, assets
from .errors import AssetError

log = logging.getLogger(__name__)

MIRROR_ENV = "FACERECON_ASSET_MIRROR"
CHUNK = 1 << 20
# Fixed tar header fields of a deterministic pack (ICT-FaceKit's commit time for the mtime).
PACK_MTIME = 1606823836


def default_root() -> Path:
    """The first writable of ``$FACERECON_ASSETS`` and ``~/.cache/facerecon/assets``."""
    home = Path.home() / ".cache" / "facerecon" / "assets"
    env = os.environ.get("FACERECON_ASSETS")
    for cand in ([Path(env)] if env else []) + [home]:
        if _writable(cand):
            return cand
        log.info("%s is not writable; trying the next asset folder", cand)
    raise AssetError(f"no writable asset folder: tried {env + ' and ' if env else ''}{home}; pass --dest DIR")


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def fetchable(name: str) -> bool:
    """Whether `fetch` can obtain the asset without a mirror (every file has an upstream source)."""
    a = assets.REGISTRY[name]
    return all(h is not None and assets.source(a, f) is not None for f, h in a.files)


def fetch(name: str, *, root: str | os.PathLike | None = None, mirror: str | None = None,
          force: bool = False, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download asset `name` (see the module docstring) and return its folder.

    An asset already found on the search path with good sha256s is left alone (its folder is
    returned) unless `force`. Raises `AssetError` naming the file and URL on an HTTP failure, an
    interrupted download (rerun to resume) or a sha256 mismatch (the bad download is deleted)."""
    asset = assets.REGISTRY.get(name)
    if asset is None:
        raise AssetError(f"unknown asset '{name}'; known: {', '.join(assets.REGISTRY)}")
    if any(h is None for _, h in asset.files):
        raise AssetError(f"asset '{name}' is supplied by the user and cannot be downloaded: {asset.obtain}")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if not force:
        st = assets.check(name)
        if st.state == "found":
            log.info("asset '%s' already present at %s", name, st.location)
            return st.location
    if mirror is None:
        lacking = [f for f, _ in asset.files + asset.extras if assets.source(asset, f) is None]
        if lacking:
            raise AssetError(f"asset '{name}': no upstream source recorded for {', '.join(lacking)}; "
                             f"use a mirror (--mirror URL or ${MIRROR_ENV}) or obtain it by hand: {asset.obtain}")
    root = Path(root) if root is not None else default_root()
    dest = root / name
    stage = root / ".fetch" / name
    dest.mkdir(parents=True, exist_ok=True)
    stage.mkdir(parents=True, exist_ok=True)
    for filename, _ in asset.files + asset.extras:
        target = dest / filename
        if not force and target.is_file() and not assets.problem(asset, filename, target):
            continue
        if mirror is not None:
            url = f"{mirror.rstrip('/')}/{quote(name)}/{quote(filename)}"
            got = download(url, stage / (filename + ".part"), progress=progress, timeout=timeout,
                           desc=f"{name}/{filename}")
            _install(asset, filename, got, target, url)
        else:
            _from_source(asset, filename, assets.source(asset, filename), stage, target, progress, timeout)
    shutil.rmtree(stage, ignore_errors=True)
    _remove_if_empty(root / ".fetch")
    log.info("asset '%s' fetched into %s", name, dest)
    return dest


def _from_source(asset, filename: str, src: assets.Source, stage: Path, target: Path,
                 progress: bool, timeout: float) -> None:
    # Downloads are named by URL so that several files taken from one archive share it.
    key = hashlib.sha256(src.url.encode()).hexdigest()[:12]
    archive = download(src.url, stage / f"{key}-{Path(src.url).name or 'download'}.part", progress=progress,
                       timeout=timeout, desc=f"{asset.name}/{filename}")
    if src.member is None:
        _install(asset, filename, archive, target, src.url)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            if src.pack:
                _pack(archive, src, tmp, progress=progress, desc=f"packing {asset.name}/{filename}")
            else:
                _extract(archive, src.member, tmp)
        except AssetError as e:
            archive.unlink(missing_ok=True)  # damaged or not what the registry expects: never resume it
            raise AssetError(f"asset '{asset.name}', {filename} from {src.url}: {e}; the download was deleted") from None
        _install(asset, filename, tmp, target, src.url)
    finally:
        tmp.unlink(missing_ok=True)


def _install(asset, filename: str, got: Path, target: Path, url: str) -> None:
    """Verify `got` as the asset's `filename` and move it onto `target` atomically; delete it if wrong."""
    why = assets.problem(asset, filename, got)
    if why:
        got.unlink(missing_ok=True)
        raise AssetError(f"asset '{asset.name}': {filename} downloaded from {url} is corrupted: {why}; "
                         "the download was deleted (nothing was installed), run the command again")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(got, 0o644)
    os.replace(got, target)  # the stage and the target share `root`: one rename on one file system


def download(url: str, part: Path, *, progress: bool = True, timeout: float = 60.0, desc: str = "") -> Path:
    """Download `url` into `part`, resuming an existing `part` with an HTTP Range request; return
    the completed file (`part` without its ``.part`` suffix). A completed file from an earlier run
    is returned as is."""
    done = part.with_name(part.name.removesuffix(".part"))
    if done.is_file() and done != part:
        return done
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"facerecon/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: the part is already whole
            os.replace(part, done)
            return done
        raise AssetError(f"HTTP {e.code} ({e.reason}) for {url}") from None
    except (URLError, OSError) as e:
        raise AssetError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    with resp:
        resumed = have and getattr(resp, "status", None) == 206
        if have and not resumed:
            log.info("%s: the server ignored the range request; downloading from the start", url)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        from tqdm import tqdm

        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=desc or Path(url).name, disable=not progress, leave=False)
        n = have
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                while block := resp.read(CHUNK):
                    fh.write(block)
                    n += len(block)
                    bar.update(len(block))
        except (OSError, ValueError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
            raise AssetError(f"download of {url} interrupted after {n} bytes ({e}); "
                             "run the command again to resume") from None
        finally:
            bar.close()
    if total is not None and n != total:
        raise AssetError(f"download of {url} stopped at {n} of {total} bytes; run the command again to resume")
    os.replace(part, done)
    return done


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith((".zip", ".whl")):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")):
        return "tar"
    raise AssetError(f"{archive.name}: cannot tell the archive type from its name (zip, whl, tar[.gz|.xz|.bz2])")


def _members(archive: Path, prefix: str):
    """(name, bytes-reader) of the archive's regular files under `prefix` ('' = all), sorted by name."""
    kind = _archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    if not info.is_dir() and info.filename.startswith(prefix):
                        yield info.filename, lambda info=info: zf.read(info)
        else:
            with tarfile.open(archive) as tf:
                for m in sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name):
                    if m.name.startswith(prefix):
                        yield m.name, lambda m=m: tf.extractfile(m).read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise AssetError(f"{archive.name} is not a readable {kind} archive ({e})") from None


def _extract(archive: Path, member: str, out: Path) -> None:
    for name, read in _members(archive, member):
        if name == member:
            out.write_bytes(read())
            return
    raise AssetError(f"{archive.name} has no member {member}")


def _pack(archive: Path, src: assets.Source, out: Path, *, progress: bool, desc: str) -> None:
    """Pack the archive's `src.member` folder into a deterministic ``.tar.xz`` at `out`, checking
    every member against the manifest first (a missing, extra or different member is an error)."""
    if src.pack != "tar.xz":
        raise AssetError(f"unknown pack format {src.pack!r} (known: tar.xz)")
    folder = src.member.rstrip("/") + "/"
    top = Path(folder).name
    manifest = assets.read_manifest(src.manifest)
    from tqdm import tqdm

    seen = set()
    with tarfile.open(out, "w:xz", preset=6, format=tarfile.GNU_FORMAT) as tf, \
            tqdm(total=len(manifest), unit="file", desc=desc, disable=not progress, leave=False) as bar:
        tf.addfile(_info(top + "/", 0, directory=True))
        for name, read in _members(archive, folder):
            rel = f"{top}/{name[len(folder):]}"
            data = read()
            want = manifest.get(rel)
            got = hashlib.sha256(data).hexdigest()
            if want is None:
                raise AssetError(f"unexpected member {rel} (not in {src.manifest})")
            if got != want:
                raise AssetError(f"member {rel}: sha256 {got}, expected {want}")
            seen.add(rel)
            tf.addfile(_info(rel, len(data)), io.BytesIO(data))
            bar.update()
    missing = sorted(set(manifest) - seen)
    if missing:
        raise AssetError(f"{len(missing)} members of {src.manifest} missing from the archive, e.g. {missing[0]}")


def _info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name.rstrip("/") if directory else name)
    ti.size = 0 if directory else size
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    ti.mode = 0o755 if directory else 0o644
    ti.mtime = PACK_MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
