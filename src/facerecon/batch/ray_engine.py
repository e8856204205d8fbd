"""`--engine ray`: the same items through Ray Data, on a local Ray started here or an existing
cluster (`address`). Actors (one per worker, `threads` CPUs each) hold the loaded models; the
driver streams the inputs in chunks (so its memory stays flat) and records the results exactly as
the local engine does. On a multi-node cluster the inputs and the output folder must be on a
filesystem every node sees at the same path (docs/batch.md).

A crash that kills an actor (native code, out of memory) is attributed as in the local engine: an
actor writes the input it is on to a marker file (OUT/.parts/inflight-<host>-<pid>) and removes it
when done; Ray restarts the actor but does not retry the task (a crashing input would crash it
again, forever), the Dataset fails, and the driver records the inputs of the markers left behind as
"worker_crashed" and runs the rest of the chunk again.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

from .. import threads as thread_policy
from ..errors import FaceReconError, MissingExtraError
from .inputs import InputItem
from .work import BatchConfig, build_reconstructor, failure, process_item

log = logging.getLogger(__name__)


class _Actor:
    """A Ray Data callable class: built once per actor (models loaded), then called per batch."""

    def __init__(self, cfg: BatchConfig, n_threads: int):
        from .. import log as facerecon_log

        facerecon_log.configure(-1)
        thread_policy.apply(n_threads)
        self.cfg = cfg
        self.rec = build_reconstructor(cfg)
        self.marker = _markers(cfg) / f"inflight-{socket.gethostname()}-{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        out = []
        for source, stem in zip(batch["source"], batch["stem"]):
            self.marker.write_text(str(source))
            out.append(pickle.dumps(process_item(self.rec, self.cfg, str(source), str(stem))))
        self.marker.unlink(missing_ok=True)
        return {"source": list(batch["source"]), "result": out}


def _markers(cfg: BatchConfig) -> Path:
    d = Path(cfg.output) / ".parts"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtraError("ray", "ray[data]", "facerecon batch --engine ray") from None
    return ray


class RayEngine:
    """workers actors x threads CPUs each. address: None starts a local Ray sized to this
    machine's cores (workers x threads <= cores); "auto" or "ray://host:port" joins a cluster,
    where `workers` may exceed one machine's cores. chunk: items per Ray Dataset."""

    name = "ray"

    def __init__(self, cfg: BatchConfig, workers: int = 1, threads: int | None = None, address: str | None = None,
                 chunk: int = 4096):
        self.cfg = cfg
        if address:
            self.workers, self.threads = max(1, workers), max(1, threads or 1)
        else:
            self.workers, self.threads = thread_policy.split_cores(workers, threads)
        self.address = address
        self.chunk = chunk
        self._started = False
        self.applied: dict[str, int] = {}

    def _init(self):
        ray = _ray()
        if not ray.is_initialized():
            env = {"env_vars": thread_policy.thread_env(self.threads)}
            kw = {"runtime_env": env, "log_to_driver": False, "include_dashboard": False,
                  "logging_level": logging.ERROR}
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=thread_policy.available_cores(), **kw)
            self._started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.verbose_progress = False
        return ray

    def _dataset(self, ray, chunk: list[InputItem]):
        ds = ray.data.from_items([{"source": it.source, "stem": it.stem} for it in chunk],
                                 override_num_blocks=max(1, min(len(chunk), 256)))  # small blocks: results stream
        # Restart a dead actor, but never retry its task: the same input would kill it again.
        return ds.map_batches(_Actor, fn_constructor_kwargs={"cfg": self.cfg, "n_threads": self.threads},
                              batch_size=1, concurrency=self.workers, num_cpus=self.threads,
                              max_restarts=-1, max_task_retries=0)

    def _run_chunk(self, ray, chunk: list[InputItem], markers: Path):
        pending = {it.source: it for it in chunk}
        while pending:
            try:
                for row in self._dataset(ray, list(pending.values())).iter_rows():
                    rows, fail = pickle.loads(row["result"])
                    yield pending.pop(row["source"]), rows, fail
            except Exception as e:  # noqa: BLE001 - Ray wraps an actor's death in several types
                left = []
                for m in markers.glob("inflight-*"):
                    left.append(m.read_text())
                    m.unlink()
                left = [s for s in left if s in pending]
                if not left:
                    raise FaceReconError(f"the Ray job failed: {str(e).splitlines()[0]}") from None
                if len(left) == 1:
                    s = left[0]
                    log.warning("a Ray actor died on %s; running the rest of its chunk again", s)
                    yield pending.pop(s), [], failure(s, "worker_crashed",
                                                      f"{s}: the Ray actor died while reconstructing it")
                else:  # several actors were busy when the job failed: each suspect alone finds the culprit
                    for s in left:
                        yield from self._run_chunk(ray, [pending.pop(s)], markers)

    def run(self, items: Iterator[InputItem]) -> Iterator[tuple[InputItem, list[dict], dict | None]]:
        items = iter(items)
        first = next(items, None)
        if first is None:  # nothing to do: no Ray is started
            return
        items = itertools.chain([first], items)
        ray = self._init()
        markers = _markers(self.cfg)
        for m in markers.glob("inflight-*"):
            m.unlink()
        try:
            while True:
                chunk = list(itertools.islice(items, self.chunk))
                if not chunk:
                    return
                yield from self._run_chunk(ray, chunk, markers)
        finally:
            if self._started:
                ray.shutdown()


__all__ = ["RayEngine"]
