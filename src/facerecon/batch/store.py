"""The batch's two tables and its resume state, kept so that a SIGKILL at any instant loses nothing
that was recorded and records nothing twice.

Rows go to small Parquet *part* files under ``OUT/.parts/``, each written whole (temp file, fsync,
rename, fsync of the folder) and holding complete items only (all faces of an image, or its
failure). An item is *done* exactly when a part (or the consolidated table) holds it: an item
whose part was not yet renamed when the process died is redone, and its output files, written
atomically under the same stems, are replaced rather than duplicated. `consolidate` merges the
parts into ``OUT/results.parquet`` and ``OUT/failures.parquet`` (atomically; duplicate keys, left
by a kill between the merge and the parts' removal, are dropped) and then removes the parts.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from ..errors import MissingExtraError


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("batch", "pyarrow", "facerecon batch's Parquet tables") from None
    return pa, pq


def results_schema():
    """One row per reconstructed face. Pixels are the input file's (before any downscaling), centres
    at integers; angles in degrees; translation in mm; times in seconds."""
    pa, _ = _pa()
    f32 = pa.list_(pa.float32())
    return pa.schema([
        ("source", pa.string()),        # absolute path of the input
        ("face", pa.int32()),           # 0 = largest face of the image
        ("stem", pa.string()),          # output files: OUT/faces/<stem>.*
        ("status", pa.string()),        # "ok"
        ("method", pa.string()),
        ("model", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()),  # the file's size (EXIF-oriented)
        ("scale", pa.float32()),        # decoded pixels per file pixel (< 1: downscaled)
        ("frames", pa.int32()),         # frames in the file (animated GIF, multi-page TIFF: first used)
        ("box", f32),                   # (4,) x0, y0, x1, y1
        ("score", pa.float32()),
        ("yaw", pa.float64()), ("pitch", pa.float64()), ("roll", pa.float64()),
        ("translation_mm", f32),        # (3,)
        ("params", f32),                # (D,) flat coefficients in the layout's order; null without
        ("landmarks", f32),             # (136,) 68 x (x, y)
        ("t_load", pa.float64()), ("t_detect", pa.float64()), ("t_reconstruct", pa.float64()),
        ("t_save", pa.float64()), ("t_total", pa.float64()),
        ("finished", pa.float64()),     # when the worker finished the input (Unix time, seconds)
        ("times", pa.string()),         # JSON: the method's own steps
        ("outputs", pa.list_(pa.string())),  # files written, relative to OUT
        ("worker", pa.string()),
        ("node", pa.string()),          # the host (local engine) or the Ray node id the face was done on
    ])


def failures_schema():
    """One row per input that gave no face: `reason` a short name (`facerecon.io.image.REASONS`,
    or no_face, no_match, worker_crashed, error), `message` one line naming the file."""
    pa, _ = _pa()
    return pa.schema([("source", pa.string()), ("reason", pa.string()), ("message", pa.string()),
                      ("t_total", pa.float64()), ("worker", pa.string())])


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_table(table, path: Path) -> None:
    """Write a Parquet file durably and atomically (temp, fsync, rename, fsync the folder)."""
    _, pq = _pa()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _conform(table, schema):
    """`table` in `schema`: columns an older version did not write (e.g. `node`) become nulls."""
    pa, _ = _pa()
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


class ResultStore:
    """The tables of one output folder: `record` items, `flush` them as a part, `done` keys, `consolidate`.

    flush_items / flush_seconds: a part is written after this many items or seconds, whichever
    first (what a kill can cost: that much work redone, never lost records).
    """

    RESULTS = "results.parquet"
    FAILURES = "failures.parquet"

    def __init__(self, out: Path, flush_items: int = 256, flush_seconds: float = 2.0):
        self.out = Path(out)
        self.parts = self.out / ".parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        self.flush_items, self.flush_seconds = flush_items, flush_seconds
        self._rows: list[dict] = []
        self._fails: list[dict] = []
        self._n = 0
        self._last = time.monotonic()
        self._run = uuid.uuid4().hex[:8]
        self._seq = 0
        for tmp in self.parts.glob(".*.tmp"):  # parts a killed run did not finish: not done
            tmp.unlink(missing_ok=True)

    # -- reading -----------------------------------------------------------------------------------
    def _files(self, kind: str) -> list[Path]:
        main = self.out / (self.RESULTS if kind == "res" else self.FAILURES)
        return ([main] if main.exists() else []) + sorted(self.parts.glob(f"{kind}-*.parquet"))

    def done(self, failures: bool = True) -> set[str]:
        """Sources already recorded (with a face, and with `failures` also those that failed)."""
        _, pq = _pa()
        keys: set[str] = set()
        for f in self._files("res") + (self._files("fail") if failures else []):
            keys.update(pq.read_table(f, columns=["source"]).column("source").to_pylist())
        return keys

    # -- writing -----------------------------------------------------------------------------------
    def record(self, rows: list[dict], failure: dict | None) -> None:
        """One whole item: its face rows, or its failure."""
        self._rows += rows
        if failure is not None:
            self._fails.append(failure)
        self._n += 1
        if self._n >= self.flush_items or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        pa, _ = _pa()
        if self._rows:
            _write_table(pa.Table.from_pylist(self._rows, schema=results_schema()),
                         self.parts / f"res-{self._run}-{self._seq:06d}.parquet")
        if self._fails:
            _write_table(pa.Table.from_pylist(self._fails, schema=failures_schema()),
                         self.parts / f"fail-{self._run}-{self._seq:06d}.parquet")
        self._seq += 1
        self._rows, self._fails, self._n, self._last = [], [], 0, time.monotonic()

    def consolidate(self) -> tuple[int, int]:
        """Merge the parts into the two tables; returns their row counts (faces, failures)."""
        self.flush()
        return self._merge("res", self.RESULTS, results_schema(), ("source", "face")), \
            self._merge("fail", self.FAILURES, failures_schema(), ("source",))

    def _merge(self, kind: str, name: str, schema, key: tuple[str, ...]) -> int:
        pa, pq = _pa()
        files = self._files(kind)
        parts = [f for f in files if f.parent == self.parts]
        target = self.out / name
        if not parts and target.exists():
            return pq.read_metadata(target).num_rows
        tables = [_conform(pq.read_table(f), schema) for f in files]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        cols = [table.column(k).to_pylist() for k in key]
        seen, keep = set(), []
        for i, k in enumerate(zip(*cols)):
            if k not in seen:
                seen.add(k)
                keep.append(i)
        if len(keep) < table.num_rows:
            table = table.take(pa.array(keep, pa.int64()))
        _write_table(table, target)
        for f in parts:
            f.unlink()
        return table.num_rows

    def reset(self) -> None:
        """Forget every record of this folder (a run that does not resume)."""
        for f in self._files("res") + self._files("fail"):
            f.unlink()


def summary_json(out: Path, info: dict) -> None:
    """OUT/summary.json: the last run's counts, rate and settings (atomically)."""
    from ..io.atomic import write_text

    write_text(Path(out) / "summary.json", json.dumps(info, indent=1, default=str))


__all__ = ["ResultStore", "failures_schema", "results_schema", "summary_json"]
