"""Streaming a batch's inputs: folders, glob patterns and manifests become one path at a time.

Nothing is listed in full: folders are walked with `os.scandir` (directory order), globs with
`glob.iglob`, manifests read line by line, so memory does not grow with the number of inputs.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..io.image import VIDEO_EXTS
from ..io.paths import IMAGE_EXTS

MANIFEST_EXTS = frozenset({".txt", ".lst", ".csv", ".tsv"})
# Columns of a CSV/TSV manifest that hold the path, in order of preference (else the first column).
PATH_COLUMNS = ("path", "file", "filename", "image", "source")
# A folder's files that are items: images, and videos (so that one in an image folder is reported).
ITEM_EXTS = IMAGE_EXTS | VIDEO_EXTS


@dataclass(frozen=True)
class InputItem:
    """One input: `source` the absolute path (the key of the results tables), `stem` the output
    file stem (the file's stem + 8 hex digits of the path's hash: unique, and the same on resume),
    `problem` a failure known before reading it (a pattern that matched nothing), else None."""

    source: str
    stem: str
    problem: tuple[str, str] | None = None


def stem_of(source: str) -> str:
    h = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{Path(source).stem}_{h}"


def _item(path: str) -> InputItem:
    src = os.path.abspath(path)
    return InputItem(src, stem_of(src))


def _walk(folder: str, recursive: bool) -> Iterator[str]:
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir(follow_symlinks=False)  # no cycles through linked folders
                except OSError:
                    is_dir = False
                if is_dir:
                    if recursive:
                        stack.append(e.path)
                elif os.path.splitext(e.name)[1].lower() in ITEM_EXTS:
                    yield e.path  # broken symlinks too: they are reported, not silently dropped


def _manifest(path: Path) -> Iterator[str]:
    base = path.parent
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        if path.suffix.lower() in (".csv", ".tsv"):
            rows = csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            header = next(rows, None)
            if header is None:
                return
            names = [h.strip().lower() for h in header]
            col = next((names.index(c) for c in PATH_COLUMNS if c in names), None)
            if col is None:  # no header: the first row is an item too
                col = 0
                rows = _chain([header], rows)
            for row in rows:
                if len(row) > col and row[col].strip():
                    yield str(base / row[col].strip())
        else:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield str(base / line)


def _chain(first, rest):
    yield from first
    yield from rest


def iter_inputs(items: Iterable[str | os.PathLike], recursive: bool = False) -> Iterator[InputItem]:
    """Folders (image and video files; `recursive`: subfolders too), glob patterns (`**` with
    `recursive`), manifests (.txt/.lst: one path a line, '#' comments; .csv/.tsv: a column named
    path/file/filename/image/source, else the first; relative paths are relative to the manifest)
    and single files, as `InputItem`s. A path that does not exist is yielded (its read fails with a
    named reason); a pattern that matches nothing is an item with a problem. Not deduplicated."""
    for item in items:
        s = os.fspath(item)
        p = Path(s)
        if p.is_dir():
            for q in _walk(s, recursive):
                yield _item(q)
        elif p.is_file() and p.suffix.lower() in MANIFEST_EXTS:
            for q in _manifest(p):
                yield _item(q)
        elif p.exists() or p.is_symlink() or not any(c in s for c in "*?["):
            yield _item(s)
        else:
            found = False
            for q in glob.iglob(s, recursive=recursive):
                if not os.path.isdir(q):
                    found = True
                    yield _item(q)
            if not found:
                yield InputItem(s, stem_of(s), ("no_match", f"{s}: the pattern matches no file"))


__all__ = ["ITEM_EXTS", "MANIFEST_EXTS", "InputItem", "iter_inputs", "stem_of"]
