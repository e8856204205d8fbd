"""Shared fixtures: locate assets and data beside the repository (../shared) unless set by env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent / "shared"
if "FACERECON_ASSETS" not in os.environ and (_shared / "assets").is_dir():
    os.environ["FACERECON_ASSETS"] = str(_shared / "assets")


def data_root() -> Path | None:
    d = Path(os.environ.get("FACERECON_DATA", _shared / "data"))
    return d if d.is_dir() else None


def need_asset(name: str):
    """Skip the calling test when asset `name` is not found (with the reason)."""
    from facerecon import assets

    if assets.find(name) is None:
        pytest.skip(f"asset '{name}' not found (set FACERECON_ASSETS to a folder holding {name}/)")
    return assets.resolve(name)


def need_data(sub: str) -> Path:
    d = data_root()
    if d is None or not (d / sub).exists():
        pytest.skip(f"data '{sub}' not found (set FACERECON_DATA to the folder holding {sub}/)")
    return d / sub


@pytest.fixture(scope="session")
def ict_model():
    need_asset("ict-facekit")
    from facerecon.models import load_model

    return load_model("ict")


@pytest.fixture(scope="session")
def astronaut_path(tmp_path_factory):
    """scikit-image's bundled astronaut photo (public domain) as a PNG file; skips without skimage."""
    pytest.importorskip("skimage")
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(p)
    return p
