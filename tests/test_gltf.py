"""Our GLB files pass the Khronos glTF-Validator (npm `gltf-validator`, run by scripts/validate_gltf.cjs)
with 0 errors and 0 warnings. Skips without node/npm or when npm cannot install the validator."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from facerecon.io.export import export

from .conftest import need_asset
from .test_export import _item, _reconstruction

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = "gltf-validator@2.0.0-dev.3.10"


@pytest.fixture(scope="module")
def validate():
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node/npm not installed")
    from facerecon.assets import cache_dir

    prefix = cache_dir() / "npm"
    if not (prefix / "node_modules" / "gltf-validator" / "package.json").is_file():
        r = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", VALIDATOR],
                           capture_output=True, text=True, timeout=300, check=False)
        if r.returncode:
            pytest.skip(f"npm could not install {VALIDATOR}: {r.stderr[-500:]}")

    def run(*files: Path) -> list[dict]:
        env = {**os.environ, "NODE_PATH": str(prefix / "node_modules")}
        r = subprocess.run(["node", str(ROOT / "scripts" / "validate_gltf.cjs"), *map(str, files)],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
        assert r.returncode in (0, 1), r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    return run


def test_glb_passes_the_khronos_validator(tmp_path, validate):
    it = _item()
    textured = export(it, tmp_path, "tex", ("glb",))[0]
    coloured = export(dataclasses.replace(it, images={}), tmp_path, "col", ("glb",))[0]
    broken = tmp_path / "broken.glb"
    broken.write_bytes(textured.read_bytes()[:-100])  # the check can fail
    reports = validate(textured, coloured, broken)
    for rep in reports[:2]:
        assert rep["errors"] == 0 and rep["warnings"] == 0, rep
    assert reports[2]["errors"] > 0


@pytest.mark.slow
@pytest.mark.assets
def test_ict_glb_passes_the_khronos_validator(tmp_path, validate, ict_model):
    need_asset("ict-facekit")
    rec, _ = _reconstruction(ict_model)
    glb = rec.save(tmp_path, ("glb",), stem="f")[0]
    rep = validate(glb)[0]
    assert rep["errors"] == 0 and rep["warnings"] == 0, rep
