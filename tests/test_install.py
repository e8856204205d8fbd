"""The package installs on Python 3.10–3.13: no exact pins in its metadata, and pip resolves the
core dependencies and the extras for each version from PyPI (binary wheels only, nothing
installed: `pip install --dry-run --python-version 3.1x --only-binary=:all: --report`).

Torch for any Python but this machine's 3.11 is a multi-GB CUDA download here, so other versions
are proven by resolution, not by running the suite. The resolution tests are slow (~1 min each
under load) and skip when PyPI is unreachable."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSIONS = ["3.10", "3.11", "3.12", "3.13"]
# Extras resolved together per version (numpy 2 must be allowed: nothing here may pin numpy<2).
TOGETHER = "onnx,render,train,demo,dev,eval,serve,serve-test,video,batch,vrn"
# Extras resolved on their own, with the versions they must support. `detect` is empty since FaceMesh
# runs on our PyTorch port; `mediapipe-legacy` (the reference backend) is marked python_version<3.13.
ALONE = {"detect": VERSIONS, "mediapipe-legacy": VERSIONS, "ray": VERSIONS}
# Extras that cannot resolve from wheels alone, and why (they are not part of any supported install path).
SOURCE_ONLY = {"dlib": "face-recognition-models>=0.3 is published only as an sdist (a 100 MB data package)"}
KNOWN_PINNED: dict[str, str] = {}  # extras allowed an exact pin, and why (none today)


def requirements() -> list[tuple[str, Requirement]]:
    proj = PYPROJECT["project"]
    out = [("core", Requirement(r)) for r in proj["dependencies"]]
    for extra, reqs in proj.get("optional-dependencies", {}).items():
        out += [(extra, Requirement(r)) for r in reqs]
    return out


def test_metadata_has_no_exact_or_upper_pins_on_core_packages():
    pins = [f"[{where}] {r}" for where, r in requirements()
            if where not in KNOWN_PINNED and any(s.operator in ("==", "===", "~=") for s in r.specifier)]
    assert not pins, f"exact pins in pyproject.toml: {pins}"
    core = {r.name: r for where, r in requirements() if where == "core"}
    assert not any(s.operator in ("<", "<=") for s in core["numpy"].specifier), "numpy 2 must be allowed"
    assert core["torch"].specifier.contains("2.13.0") and core["torch"].specifier.contains("2.20.0")
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"


def test_extras_named_in_the_resolution_lists_exist():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert set(TOGETHER.split(",")) | set(ALONE) <= extras
    assert extras == set(TOGETHER.split(",")) | set(ALONE) | set(SOURCE_ONLY), "every extra is resolved somewhere"


def pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if not pypi_reachable():
        pytest.skip("PyPI unreachable: cannot resolve for other Python versions")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    return next(out.glob("facerecon-*.whl"))


def resolve(wheel: Path, version: str, extras: str, tmp_path: Path) -> dict[str, str]:
    """{package: version} pip would install for `version` (its report), or fail with pip's error."""
    report = tmp_path / f"report-{version}.json"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
           "--python-version", version, "--only-binary=:all:", "--report", str(report),
           f"facerecon[{extras}] @ {wheel.as_uri()}"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr[-3000:]}"
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_core_and_extras_resolve(wheel, version, tmp_path):
    got = resolve(wheel, version, TOGETHER, tmp_path)
    assert {"torch", "numpy", "scipy", "onnxruntime", "scikit-image", "facerecon"} <= set(got)
    # With nothing holding it back, the newest numpy (2.x) is picked: the metadata allows numpy 2.
    assert int(got["numpy"].split(".")[0]) >= 2, got["numpy"]


@pytest.mark.slow
@pytest.mark.parametrize("extra,version", [(e, v) for e, vs in ALONE.items() for v in vs])
def test_extra_resolves_alone(wheel, extra, version, tmp_path):
    got = resolve(wheel, version, extra, tmp_path)
    assert "facerecon" in got and "torch" in got
