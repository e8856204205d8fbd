"""`run_batch`: inputs → engine → the two tables, resumable, with a progress bar."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .inputs import InputItem, iter_inputs
from .store import ResultStore, summary_json
from .work import BatchConfig, failure

log = logging.getLogger(__name__)

# Exit codes of `facerecon batch`.
EXIT_OK = 0
EXIT_SOME_FAILED = 3


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one run: images reconstructed / failed / skipped as done before; faces written;
    seconds; faces per second over the run; the tables' row counts after consolidation;
    first_s: seconds to the first finished input (worker start-up, models loaded);
    steady_faces_per_s: faces per second after it."""

    images_ok: int
    images_failed: int
    skipped_done: int
    faces: int
    seconds: float
    faces_per_s: float
    table_faces: int
    table_failures: int
    first_s: float = 0.0
    steady_faces_per_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.table_failures == 0 else EXIT_SOME_FAILED


def make_engine(cfg: BatchConfig, engine: str = "local", workers: int = 1, threads: int | None = None,
                address: str | None = None, **kw):
    if engine == "local":
        from .local import LocalEngine

        return LocalEngine(cfg, workers, threads, **kw)
    if engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(cfg, workers, threads, address=address, **kw)
    raise ValueError(f"unknown engine '{engine}'; choose local or ray")


def run_batch(inputs: Iterable[str], cfg: BatchConfig, engine: str = "local", workers: int = 1,
              threads: int | None = None, address: str | None = None, resume: bool = True,
              recursive: bool = False, progress: bool = True, flush_items: int = 256,
              flush_seconds: float = 2.0, limit: int | None = None, **engine_options) -> BatchSummary:
    """Reconstruct every input into `cfg.output`; see `facerecon batch --help` and docs/batch.md.

    resume: skip inputs the tables already hold (finished or failed); False starts the tables
    anew. limit: stop after this many new inputs (tests, benchmarks). Bad inputs are recorded in
    failures.parquet and never stop the run.
    """
    from tqdm import tqdm

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out, flush_items, flush_seconds)
    if not resume:
        store.reset()
    # Temp files of atomic writes a kill interrupted (outputs never start with a dot).
    for tmp in (out / "faces").glob(".*"):
        tmp.unlink(missing_ok=True)
    store.consolidate()  # a killed run's parts become table rows before anything is redone
    seen = store.done()  # grows by one key per new input (~100 bytes): the only per-input memory
    skipped = ok = failed = faces = 0
    eng = make_engine(cfg, engine, workers, threads, address, **engine_options)

    def todo() -> Iterator[InputItem]:
        nonlocal skipped, failed
        n = 0
        for item in iter_inputs(inputs, recursive):
            if item.source in seen:
                skipped += 1
                continue
            seen.add(item.source)
            if item.problem is not None:
                store.record([], failure(item.source, *item.problem))
                failed += 1
                log.warning("skipped %s", item.problem[1])
                continue
            yield item
            n += 1
            if limit is not None and n >= limit:
                return

    t_first, faces_first = None, 0
    t0 = time.perf_counter()
    bar = tqdm(unit="img", desc=f"batch ({eng.name}, {eng.workers}x{eng.threads} threads)", disable=not progress,
               dynamic_ncols=True, smoothing=0.05)
    try:
        for item, rows, fail in eng.run(todo()):
            store.record(rows, fail)
            if fail is not None:
                failed += 1
                log.warning("skipped %s", fail["message"])
            else:
                ok += 1
                faces += len(rows)
            bar.update(1)
            dt = time.perf_counter() - t0
            if t_first is None:
                t_first, faces_first = dt, faces
            bar.set_postfix(faces_per_s=f"{faces / dt:.2f}" if dt > 0 else "-", failed=failed, refresh=False)
    finally:
        bar.close()
        try:
            n_faces, n_fail = store.consolidate()
        finally:
            eng.close()  # e.g. Ray's node stopping, which overlapped the consolidation
    dt = time.perf_counter() - t0
    t_first = dt if t_first is None else t_first
    steady = (faces - faces_first) / (dt - t_first) if dt > t_first else 0.0
    s = BatchSummary(ok, failed, skipped, faces, dt, faces / dt if dt > 0 else 0.0, n_faces, n_fail, t_first, steady)
    summary_json(out, {**asdict(s), "engine": eng.name, "workers": eng.workers, "threads": eng.threads,
                       "worker_threads": getattr(eng, "applied", {}),
                       "engine_timings": getattr(eng, "timings", {}),
                       "nodes": sorted(getattr(eng, "nodes", ())),
                       "config": asdict(cfg)})
    return s


__all__ = ["EXIT_OK", "EXIT_SOME_FAILED", "BatchSummary", "make_engine", "run_batch"]
