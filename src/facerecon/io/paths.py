"""Turning command-line inputs (files, folders, glob patterns) into image paths."""

from __future__ import annotations

import glob
import os
from pathlib import Path

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})


def expand_inputs(items, recursive: bool = False, keep_missing: bool = False) -> tuple[list[Path], list[str]]:
    """Files, folders (image extensions only) and glob patterns -> (unique paths, problems).

    recursive: folders and `**` globs are searched recursively. keep_missing: a plain path that does
    not exist is kept (a caller that records per-item failures reports it), instead of becoming the
    problem "PATH: no such file". A folder without images is the problem "PATH: folder holds no
    images". Paths come in input order (a folder's and a glob's sorted); duplicates, the same file
    reached twice, are dropped.
    """
    out: list[Path] = []
    problems: list[str] = []
    for item in items:
        s = os.fspath(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in (p.rglob("*") if recursive else p.iterdir())
                           if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not found:
                problems.append(f"{s}: folder holds no images")
            out += found
        elif p.exists() or (keep_missing and not any(c in s for c in "*?[")):
            out.append(p)
        else:
            found = sorted(Path(q) for q in glob.glob(s, recursive=recursive) if Path(q).is_file())
            if not found:
                problems.append(f"{s}: no such file")
            out += found
    seen, uniq = set(), []
    for p in out:
        k = p.resolve()
        if k not in seen:
            seen.add(k)
            uniq.append(p)
    return uniq, problems
