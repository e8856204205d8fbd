"""Asset registry: every external file facerecon uses, where to find it and how to check it.

Resolution order for an asset folder: an explicit path → ``$FACERECON_ASSETS/<name>`` →
``~/.cache/facerecon/assets/<name>`` → for assets with a `package_dir`, that folder inside an
installed pip package (found with importlib's finder, without importing the package; e.g. the
MediaPipe model files inside an installed ``mediapipe`` wheel). Nothing is downloaded at run time:
a missing asset raises `AssetError` listing the paths searched and how to obtain the files; only
the explicit command ``facerecon assets fetch`` (`facerecon.fetch`) downloads, from each file's
upstream `Source` or a mirror. Derived files (unpacked or converted models) go to `cache_dir()`
(``$FACERECON_CACHE`` or ``~/.cache/facerecon``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetError

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Source:
    """Where one file of an asset comes from upstream and how it is made from the download.

    url: what `facerecon assets fetch` downloads (resumable; its own sha256 need not be known, e.g.
        GitHub's generated archives): the file itself, or an archive holding it.
    member: the file's path inside the downloaded archive (zip or wheel: ``.zip``/``.whl``; tar:
        ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.xz``, ``.tar.bz2``; told by the URL's suffix), or
        with `pack` the folder to pack; None: the download is the file.
    pack: ``"tar.xz"``: pack the archive's `member` folder (its last component becomes the top
        folder) into the file, deterministically (sorted names, fixed mtime/owner/mode, xz preset 6).
        A re-packed archive's sha256 depends on the xz encoder, so a packed file is verified member
        by member against `manifest`, and its own sha256 is only a fast path.
    manifest: for `pack`: a file in ``facerecon/data`` (or an absolute path) in ``sha256sum``
        format (``<sha256>  <path inside the packed file>``) naming every member.
    packed_sha256: optionally, the sha256 our deterministic pack produced (a fast path for the
        check); another liblzma may give other bytes with the same members.
    """

    url: str
    member: str | None = None
    pack: str | None = None
    manifest: str | None = None
    packed_sha256: str | None = None


def github(repo: str, commit: str, path: str) -> Source:
    """A file of a GitHub repository at a fixed commit (raw.githubusercontent.com serves its bytes)."""
    return Source(f"https://raw.githubusercontent.com/{repo}/{commit}/{path}")


@dataclass(frozen=True)
class Asset:
    """One external asset: a folder of files with known sha256 sums.

    `sources` maps a file name (of `files` or `extras`) to its upstream `Source`; a file without one
    can come only from a mirror (``<mirror>/<asset>/<file>``) or from the user. `extras` are files
    fetched with the asset (its licence text) that are not needed to use it.
    """

    name: str
    description: str
    licence: str
    obtain: str  # URL / registration page / instructions
    files: tuple[tuple[str, str | None], ...]  # (relative path, sha256 or None when user-supplied)
    optional_files: tuple[str, ...] = ()
    # Fallback location inside an installed pip package: (top-level package, subfolder, ...).
    package_dir: tuple[str, ...] = ()
    sources: tuple[tuple[str, Source], ...] = ()
    extras: tuple[tuple[str, str], ...] = ()  # (relative path, sha256)


# Upstream commits (the files' git blobs were checked against these commits' trees).
_ICT = ("ICT-VGL/ICT-FaceKit", "da5f95a607f5e6b37755b38d3385d7f2853732e5")
_TDDFA2 = ("cleardusk/3DDFA_V2", "1b6c67601abffc1e9f248b291708aef0e43b55ae")
_TDDFA = ("cleardusk/3DDFA", "3545f355bfc71e5748fa915b13932958363135d7")
_DEEP3D = ("arstropica/Deep3DFaceReconstruction", "5b131a3e67597da67409486e20db50007f48427d")
_RETINA = ("biubug6/Face-Detector-1MB-with-landmark", "2b075657aef954b9426f938ac7fce100b6910fe6")
_MTCNN = ("timesler/facenet-pytorch", "787da06156087cd6b616fe6608213722bddc30cd")
_MFN = ("Xiaoccer/MobileFaceNet_Pytorch", "26bd8d262017e472a3c7f56d62929e2138a70aeb")
_MP_WHEEL = ("https://files.pythonhosted.org/packages/ad/83/56f760fecdc60de84c529d6c05c9dfc7d972617c6632bd254d5e021e5b16/"
             "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl")


REGISTRY: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "ict-facekit",
            "ICT Face Model Light: neutral head, 100 identity modes, 53 ARKit expressions (default model)",
            "MIT",
            "https://github.com/ICT-VGL/ICT-FaceKit — pack its FaceXModel/ folder: tar -cJf FaceXModel.tar.xz FaceXModel",
            (
                ("FaceXModel.tar.xz", "38d5234cf8ab4d290dcb9f93a9e9d989bcff070e5ce8fd5c6af092910b5de00f"),
                ("LICENSE", "b20a78d8fc51657e14f3e00c8abb538d786ad00aa63210328c22565e583167e1"),
            ),
            sources=(
                ("FaceXModel.tar.xz", Source(
                    f"https://github.com/{_ICT[0]}/archive/{_ICT[1]}.zip", member=f"ICT-FaceKit-{_ICT[1]}/FaceXModel",
                    pack="tar.xz", manifest="ict_facexmodel.sha256")),
                ("LICENSE", github(*_ICT, "LICENSE")),
                ("ICT-README.md", github(*_ICT, "README.md")),
            ),
            extras=(("ICT-README.md", "614116987854431bbdadbf7772f7352edeeca55580f62021dccb78aaf76febf6"),),
        ),
        Asset(
            "bfm-metadata",
            "Deep3D's BFM09 index files (front-face indices, keypoints, skin mask, triangles)",
            "MIT",
            "https://github.com/microsoft/Deep3DFaceReconstruction/tree/master/BFM",
            (
                ("BFM_exp_idx.mat", "62752a2cab3eea148569fb07e367e03535b4ee04aa71ea1a9aed36486d26c612"),
                ("BFM_front_idx.mat", "7d285dd018563113496127df9c364800183172adb4d3e802f726085dab66b087"),
                ("facemodel_info.mat", "529398f76619ae7e22f43c25dd60a2473bcc2bcc8c894fd9c613c68624ce1c04"),
                ("select_vertex_id.mat", "6877a7d634330f25bf1e81bc062b6507ee53ea183838e471fa21b613048fa36b"),
                ("similarity_Lm3D_all.mat", "53b83ce6e35c50ddc3e97603650cef4970320c157e75c241c844f29c1dcba65a"),
                ("std_exp.txt", "4abc20f1cad2471272637d366b511f1a44c2befeeb1353b7fff392ef72ed1203"),
            ),
            sources=tuple((f, github(*_DEEP3D, f"BFM/{f}")) for f in (
                "BFM_exp_idx.mat", "BFM_front_idx.mat", "facemodel_info.mat", "select_vertex_id.mat",
                "similarity_Lm3D_all.mat", "std_exp.txt")) + (("LICENSE", github(*_DEEP3D, "LICENSE")),),
            extras=(("LICENSE", "27ebda9d51f0a56b7e281ccd8230a27236dcb51c05f64b07869ecf6e965d68b0"),),
        ),
        Asset(
            "bfm09",
            "Basel Face Model 2009 bases and Deep3D's expression basis (user-supplied; licence forbids redistribution)",
            "BFM09 licence (registration) + Guo et al. expression basis",
            "Register at https://faces.dmi.unibas.ch/bfm/main.php?nav=1-2&id=downloads for 01_MorphableModel.mat; "
            "Exp_Pca.bin from https://github.com/Juyong/3DFace (CoarseData); put both in $FACERECON_ASSETS/bfm09/. "
            "Alternatively a ready-made Deep3D BFM_model_front.mat.",
            (("01_MorphableModel.mat", None), ("Exp_Pca.bin", None)),
            optional_files=("BFM_model_front.mat",),
        ),
        Asset(
            "3ddfa-v2",
            "3DDFA_V2 MobileNetV1x0.5 regressor, de-whitening stats, 68-point bases, FaceBoxes detector",
            "MIT",
            "https://github.com/cleardusk/3DDFA_V2 (weights/, configs/, FaceBoxes/weights/)",
            (
                ("FaceBoxesProd.pth", "c0cb2b1e40710c0aa5fc32a8759b1496a0fe0a126c907ca0ffe35b4bd0709d09"),
                ("mb05_120x120.pth", "f93ed7f1c4c0382b16d7c18480a5f67473c1917a47475a9823924f38aeb27280"),
                ("param_mean_std_62d_120x120.pkl", "090d7150f77cb66c29ddae21e4508fbde59123dcd1dea7facc24a7ed06d1c795"),
                ("tri.pkl", "0562a594d8369f7d1c86306522ff76fd3a2c81cf90ba9443893c1191ad0abbb8"),
                ("indices.npy", "b341debcdf26492332c1f96ced438e727e74164d1524cab9cca0aedf6ccd39c8"),
                ("ncc_code.npy", "edab94fb09d2e25660d62eb068316becf8998e793dfe2ae3ac89196ebc0af981"),
                ("BFM_UV.mat", "60be915f601563e274d9737abd54c6b925e8e737fa1c89d3cd64933315629ce1"),
                ("u_base.txt", "1ea7c3116070aeee720605a4a44ca9db582ac550095c321c3cf65ec925fe43cf"),
                ("w_exp_base.txt", "4dc637c92c34bfd69faab74cafce23913f2b6181ff00c57a7ab69c1204d20b18"),
                ("w_shp_base.txt", "bec9a2189eb77c61ff940c801dcd9e5cd7f1973b6d91949494d9cd7ac121b7f6"),
            ),
            sources=(
                ("FaceBoxesProd.pth", github(*_TDDFA2, "FaceBoxes/weights/FaceBoxesProd.pth")),
                ("mb05_120x120.pth", github(*_TDDFA2, "weights/mb05_120x120.pth")),
                *((f, github(*_TDDFA2, f"configs/{f}")) for f in (
                    "param_mean_std_62d_120x120.pkl", "tri.pkl", "indices.npy", "ncc_code.npy", "BFM_UV.mat")),
                *((f, github(*_TDDFA, f"c++/weights/{f}")) for f in ("u_base.txt", "w_exp_base.txt", "w_shp_base.txt")),
                ("LICENSE", github(*_TDDFA2, "LICENSE")),
            ),
            extras=(("LICENSE", "4e8e329d78d0dbd3be980d979f773d0c554b5deed5276c12d0de442cfecc2c24"),),
        ),
        Asset(
            "retinaface",
            "RetinaFace MobileNet-0.25 face detector (boxes + 5 landmarks)",
            "MIT",
            "https://github.com/biubug6/Face-Detector-1MB-with-landmark (weights/mobilenet0.25_Final.pth)",
            (("mobilenet0.25_Final.pth", "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1"),),
            sources=(
                ("mobilenet0.25_Final.pth", github(*_RETINA, "weights/mobilenet0.25_Final.pth")),
                ("LICENSE", github(*_RETINA, "LICENSE")),
            ),
            extras=(("LICENSE", "0fe1c407e40d0e9b10058edf6a9a7d1879f1f28d1d68d9f492747123e6dc4611"),),
        ),
        Asset(
            "mtcnn",
            "MTCNN P/R/O-Net face detector (boxes + 5 landmarks)",
            "MIT",
            "https://github.com/timesler/facenet-pytorch (data/pnet.pt, rnet.pt, onet.pt)",
            (
                ("pnet.pt", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
                ("rnet.pt", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
                ("onet.pt", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
            ),
            sources=tuple((f, github(*_MTCNN, f"data/{f}")) for f in ("pnet.pt", "rnet.pt", "onet.pt"))
            + (("LICENSE.md", github(*_MTCNN, "LICENSE.md")),),
            extras=(("LICENSE.md", "9fac5781e1529f4dd1a045716e1859436038d2def9e108d101b6df20c5a11318"),),
        ),
        Asset(
            "mobilefacenet",
            "MobileFaceNet 128-d identity embedding (identity-perceptual loss; research use)",
            "none stated: research use only",
            "https://github.com/Xiaoccer/MobileFaceNet_Pytorch (model/best/068.ckpt → mobilefacenet_068.ckpt)",
            (("mobilefacenet_068.ckpt", "e839247cdbdfc023fb7cadeaf53a4549d50c8fc24ad154c02e35920ea8910d99"),),
            sources=(("mobilefacenet_068.ckpt", github(*_MFN, "model/best/068.ckpt")),),
        ),
        Asset(
            "mediapipe-facemesh",
            "MediaPipe FaceMesh 468-point landmark network and short-range BlazeFace detector (TFLite; run by our PyTorch ports)",
            "Apache-2.0",
            "https://storage.googleapis.com/mediapipe-assets/face_landmark.tflite and "
            "face_detection_short_range.tflite (into face_landmark/ and face_detection/), or "
            "mediapipe/modules/ of the mediapipe==0.10.21 wheel (an installed mediapipe is found automatically)",
            (
                ("face_landmark/face_landmark.tflite", "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
                ("face_detection/face_detection_short_range.tflite",
                 "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
            ),
            package_dir=("mediapipe", "modules"),
            # The wheel on PyPI holds both files (mediapipe's own canonical copies, same sha256, are
            # storage.googleapis.com/mediapipe-assets/<file>); PyPI is the upstream reachable everywhere.
            sources=tuple((f, Source(_MP_WHEEL, member=f"mediapipe/modules/{f}")) for f in (
                "face_landmark/face_landmark.tflite", "face_detection/face_detection_short_range.tflite")),
        ),
    ]
}


def cache_dir() -> Path:
    """Directory for derived files (unpacked and converted models); created on demand."""
    d = Path(os.environ.get("FACERECON_CACHE") or Path.home() / ".cache" / "facerecon")
    d.mkdir(parents=True, exist_ok=True)
    return d


def weights_paths(env: str, rel: str, repo_rel: str | None = None) -> list[Path]:
    """Where one of facerecon's own trained weight files is looked for, in order: $`env` (a file),
    the source checkout's `weights/<repo_rel or rel>`, $FACERECON_ASSETS/`rel`,
    ~/.cache/facerecon/assets/`rel`. (The weights are not in the wheel.)"""
    out = []
    if os.environ.get(env):
        out.append(Path(os.environ[env]))
    out.append(Path(__file__).resolve().parents[2] / "weights" / (repo_rel or rel))
    if os.environ.get("FACERECON_ASSETS"):
        out.append(Path(os.environ["FACERECON_ASSETS"]) / rel)
    out.append(Path.home() / ".cache" / "facerecon" / "assets" / rel)
    return out


def search_paths(name: str, explicit: str | os.PathLike | None = None) -> list[Path]:
    paths = []
    if explicit is not None:
        paths.append(Path(explicit))
    env = os.environ.get("FACERECON_ASSETS")
    if env:
        paths.append(Path(env) / name)
    paths.append(Path.home() / ".cache" / "facerecon" / "assets" / name)
    asset = REGISTRY.get(name)
    if asset is not None and asset.package_dir:
        paths += package_paths(asset.package_dir)
    return paths


def package_paths(package_dir: tuple[str, ...]) -> list[Path]:
    """Folders `package_dir[1:]` inside the installed top-level package `package_dir[0]` (none when
    it is not installed). The package is located by importlib's finder, never imported."""
    try:
        spec = importlib.util.find_spec(package_dir[0])
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc).joinpath(*package_dir[1:]) for loc in spec.submodule_search_locations]


def _get(name: str) -> Asset:
    try:
        return REGISTRY[name]
    except KeyError:
        raise AssetError(f"unknown asset '{name}'; known: {', '.join(REGISTRY)}") from None


def _complete(asset: Asset, folder: Path) -> bool:
    if not folder.is_dir():
        return False
    if all((folder / f).is_file() for f, _ in asset.files):
        return True
    # A user-supplied model may come as one ready-made file instead of its parts.
    return any((folder / f).is_file() for f in asset.optional_files)


def find(name: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding the asset's files, or None."""
    asset = _get(name)
    for p in search_paths(name, explicit):
        if _complete(asset, p):
            return p
    return None


def resolve(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """The asset's folder; raises AssetError (paths searched + how to obtain) when absent."""
    asset = _get(name)
    p = find(name, explicit)
    if p is not None:
        return p
    searched = "\n  ".join(str(s) for s in search_paths(name, explicit))
    need = ", ".join(f for f, _ in asset.files)
    raise AssetError(
        f"asset '{name}' ({asset.description}) not found.\nSearched:\n  {searched}\n"
        f"Expected files: {need}\nObtain: {asset.obtain}\nLicence: {asset.licence}\n"
        "Set FACERECON_ASSETS to the folder that holds '<name>/' subfolders."
    )


def path(name: str, filename: str, explicit: str | os.PathLike | None = None) -> Path:
    """Path of one file of an asset."""
    p = resolve(name, explicit) / filename
    if not p.is_file():
        raise AssetError(f"asset '{name}' at {p.parent} lacks {filename}")
    return p


def sha256(file: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class AssetStatus:
    name: str
    state: str  # "found", "missing", "bad hash"
    location: Path | None
    detail: str = ""


def check(name: str, verify_hash: bool = True) -> AssetStatus:
    asset = _get(name)
    folder = find(name)
    if folder is None:
        return AssetStatus(name, "missing", None, asset.obtain)
    if verify_hash:
        bad = [f for f, _ in asset.files if (folder / f).is_file() and problem(asset, f, folder / f)]
        if bad:
            return AssetStatus(name, "bad hash", folder, ", ".join(bad))
    return AssetStatus(name, "found", folder)


def verify(name: str, filename: str, file: Path) -> None:
    """Raise AssetError when `file` does not have the registered sha256."""
    why = problem(_get(name), filename, Path(file))
    if why:
        raise AssetError(f"{file}: {why} (asset '{name}': damaged or a different version)")


def source(asset: Asset, filename: str) -> Source | None:
    return dict(asset.sources).get(filename)


def expected_sha256(asset: Asset, filename: str) -> str | None:
    """The registered sha256 of one of the asset's files or extras (None: user-supplied, unchecked)."""
    return dict(asset.files + asset.extras).get(filename)


def read_manifest(name: str) -> dict[str, str]:
    """A ``sha256sum``-format file of ``facerecon/data`` as {member path: sha256}."""
    out = {}
    for line in (DATA / name).read_text().splitlines():
        if line.strip():
            digest, member = line.split(maxsplit=1)
            out[member.strip().removeprefix("*")] = digest
    return out


def members_problem(tar: Path, manifest: dict[str, str]) -> str | None:
    """Why the regular files of a tar archive differ from `manifest` (None: the same set, same sha256s)."""
    import tarfile

    seen = set()
    try:
        with tarfile.open(tar) as tf:
            for m in tf:
                if not m.isfile():
                    continue
                want = manifest.get(m.name)
                if want is None:
                    return f"unexpected member {m.name}"
                h = hashlib.sha256(tf.extractfile(m).read()).hexdigest()
                if h != want:
                    return f"member {m.name}: sha256 {h}, expected {want}"
                seen.add(m.name)
    except (tarfile.TarError, OSError, EOFError) as e:
        return f"not a readable tar archive ({e})"
    missing = sorted(set(manifest) - seen)
    return f"{len(missing)} members missing, e.g. {missing[0]}" if missing else None


def problem(asset: Asset, filename: str, file: Path) -> str | None:
    """Why `file` is not the asset's `filename` (None: it is). A packed file may differ in its bytes
    but not in its members (see `Source.pack`)."""
    expected = expected_sha256(asset, filename)
    if expected is None:
        return None
    got = sha256(file)
    src = source(asset, filename)
    if got == expected or (src is not None and got == src.packed_sha256):
        return None
    if src is not None and src.manifest:
        why = members_problem(file, read_manifest(src.manifest))
        return None if why is None else f"sha256 {got}, expected {expected}, and {why}"
    return f"sha256 {got}, expected {expected}"
