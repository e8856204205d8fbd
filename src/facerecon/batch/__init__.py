"""Batch reconstruction at scale: streamed inputs, worker processes or Ray, resumable Parquet tables.

    from facerecon.batch import BatchConfig, run_batch
    s = run_batch(["photos/"], BatchConfig("out", method="regress"), workers=2)
    s.faces_per_s, s.exit_code   # out/results.parquet, out/failures.parquet, out/faces/*

`inputs` streams folders, globs and manifests; `work` is what a worker does with one input;
`store` keeps the tables crash-safe; `local` and `ray_engine` are the two engines; `run` ties them.
"""

from .inputs import InputItem, iter_inputs
from .run import EXIT_OK, EXIT_SOME_FAILED, BatchSummary, make_engine, run_batch
from .store import ResultStore, failures_schema, results_schema
from .work import BatchConfig, process_item

__all__ = ["EXIT_OK", "EXIT_SOME_FAILED", "BatchConfig", "BatchSummary", "InputItem", "ResultStore",
           "failures_schema", "iter_inputs", "make_engine", "process_item", "results_schema", "run_batch"]
