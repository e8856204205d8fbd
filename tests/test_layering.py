"""The import rules of docs/architecture.md, checked on every module of the package.

- A module imports only from its own package or from packages of LOWER layers (the layer table).
- No module imports another package's private module (a module whose name starts with "_").
- The CLI imports only the entry points the architecture names (the API and a few others).
Every `import` counts, also those inside functions (lazy imports are still dependencies).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "facerecon"
DOC = ROOT / "docs" / "architecture.md"


def layer_table() -> tuple[dict[str, int], set[str]]:
    """unit -> layer from the doc's table rows `| N | `pkg/`, `mod.py` |`, and the CLI's allowed units."""
    layers: dict[str, int] = {}
    cli_allowed: set[str] = set()
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*)\|\s*$", line)
        if m:
            for unit in re.findall(r"`([\w.]+)/?`", m.group(2).split("|")[0]):
                layers[unit.removesuffix(".py")] = int(m.group(1))
        m = re.match(r"\s*-?\s*\*\*CLI imports only\*\*:(.*)$", line)
        if m:
            cli_allowed = {u.removesuffix(".py").rstrip("/") for u in re.findall(r"`([\w./]+)`", m.group(1))}
    return layers, cli_allowed


def unit_of(module: str) -> str:
    """'facerecon.fit.fitter' -> 'fit'; 'facerecon.api' -> 'api'; 'facerecon' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        out.append((name.removesuffix(".__init__"), p))
    return out


def imports_of(module: str, path: Path) -> list[tuple[str, int]]:
    """Absolute facerecon module names imported by `module` (with line numbers)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "facerecon"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "facerecon":
                continue
            # `from pkg import name` may name a submodule: count it as that module.
            for a in node.names:
                sub = f"{target}.{a.name}"
                is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (PKG.parent / Path(*sub.split("."))).is_dir()
                out.append((sub if is_module else target, node.lineno))
    return out


def test_every_unit_has_a_layer():
    layers, _ = layer_table()
    assert layers, f"no layer table found in {DOC}"
    units = {unit_of(m) for m, _ in modules()}
    missing = sorted(units - set(layers))
    assert not missing, f"not in the layer table of docs/architecture.md: {missing}"


def violations() -> list[str]:
    layers, cli_allowed = layer_table()
    bad = []
    for module, path in modules():
        src = unit_of(module)
        for target, line in imports_of(module, path):
            dst = unit_of(target)
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if dst == src or dst == "__init__" and target == "facerecon":
                pass
            elif layers.get(dst, 99) >= layers.get(src, -1):
                bad.append(f"{where}: layer {layers.get(src)} ({src}) may not import layer {layers.get(dst)} ({dst})")
            if dst != src and any(p.startswith("_") and not p.startswith("__") for p in target.split(".")[1:]):
                bad.append(f"{where}: a private module of another package")
            if src == "cli" and dst != src and dst not in cli_allowed and target != "facerecon":
                bad.append(f"{where}: the CLI talks only to {sorted(cli_allowed)}")
    return bad


def test_imports_follow_the_layer_table():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_the_check_catches_violations(tmp_path):
    """The checker itself: an upward import, a sibling's private module and a CLI shortcut are caught."""
    layers, cli_allowed = layer_table()
    assert layers["geometry"] < layers["fit"] < layers["api"] < layers["cli"] and "api" in cli_allowed
    pkg = tmp_path / "src" / "facerecon"
    for d in ("geometry", "render", "cli", "fit"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "render" / "_kernels.py").write_text("")
    (pkg / "geometry" / "up.py").write_text("from ..fit import Fitter\n")
    (pkg / "geometry" / "priv.py").write_text("def f():\n    from ..render._kernels import njit\n")
    (pkg / "cli" / "short.py").write_text("from ..fit import Fitter\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text(DOC.read_text())
    globals()["PKG"], globals()["ROOT"], globals()["DOC"] = pkg, tmp_path, tmp_path / "docs" / "architecture.md"
    try:
        bad = "\n".join(violations())
    finally:
        globals()["PKG"], globals()["ROOT"], globals()["DOC"] = PKG_REAL, ROOT_REAL, DOC_REAL
    assert "geometry/up.py:1 imports facerecon.fit" in bad
    assert "private module" in bad and "geometry/priv.py:2" in bad
    assert "cli/short.py:1" in bad and "the CLI talks only to" in bad


PKG_REAL, ROOT_REAL, DOC_REAL = PKG, ROOT, DOC


@pytest.mark.parametrize("module", ["facerecon.api", "facerecon.cli.main", "facerecon.eval", "facerecon.train",
                                    "facerecon.serve", "facerecon.batch",
                                    "facerecon.dataset",
                                    "facerecon.vrn", "facerecon.methods.vrn",
                                    "facerecon.detect.parsing",
                                    "facerecon.detect.occluders",
                                    "facerecon.prnet.train", "facerecon.methods.prnet"])
def test_entry_points_import(module):
    __import__(module)
