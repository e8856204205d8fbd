"""A named table of plug-ins (reconstruction methods, evaluation methods), filled three ways:
`register(name, obj)` at import time, a lazy ``"package.module:attr"`` string imported on first use,
or a Python entry point in the table's group (installed packages extend it without editing ours).
`get(name)` also accepts a ``"package.module:attr"`` string directly."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import FaceReconError


def import_path(path: str) -> Any:
    """The object at ``"package.module:attr"`` (attr may be dotted); FaceReconError when absent."""
    mod, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise FaceReconError(f"cannot import '{path}': {e}") from e
    return obj


class Registry:
    """name -> object (or lazy import path), with a description per entry.

    kind: what the entries are, for messages ("reconstruction method"); group: the entry-point group
    searched after the registered names (None: none)."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._entries: dict[str, tuple[Any, str]] = {}

    def register(self, name: str, obj: Any, description: str = "", overwrite: bool = False) -> None:
        """Add `obj` (or a lazy "package.module:attr" string) under `name`."""
        if not overwrite and name in self._entries and self._entries[name][0] is not obj:
            raise ValueError(f"{self.kind} '{name}' is already registered (pass overwrite=True to replace it)")
        if isinstance(obj, str) and ":" not in obj:
            raise ValueError(f"lazy path must look like 'package.module:attr', got '{obj}'")
        self._entries[name] = (obj, description)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _entry_points(self) -> dict:
        if not self.group:
            return {}
        try:
            from importlib.metadata import entry_points

            return {ep.name: ep for ep in entry_points(group=self.group)}
        except Exception:  # noqa: BLE001 - broken metadata of another package must not break ours
            return {}

    def available(self) -> dict[str, str]:
        """name -> description of every registered or entry-point entry, sorted by name."""
        out = {n: d for n, (_, d) in self._entries.items()}
        for n, ep in self._entry_points().items():
            out.setdefault(n, f"entry point {ep.value}")
        return dict(sorted(out.items()))

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._entry_points()

    def get(self, name: str) -> Any:
        """The entry `name` (lazy paths imported), or the object at a "package.module:attr" name."""
        if name in self._entries:
            obj = self._entries[name][0]
            return import_path(obj) if isinstance(obj, str) else obj
        eps = self._entry_points()
        if name in eps:
            return eps[name].load()
        if ":" in name:
            return import_path(name)
        raise FaceReconError(f"unknown {self.kind} '{name}'; known: {', '.join(self.available()) or 'none'} "
                             "(or give 'package.module:attr')")
