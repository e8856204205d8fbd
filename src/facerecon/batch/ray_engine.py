"""`--engine ray`: the same items on Ray actors, on a local Ray started here or an existing cluster
(`address`). Each actor (one per worker, `threads` CPUs each) loads the models once; the driver
streams the inputs and records the results exactly as the local engine does. On a multi-node
cluster the inputs and the output folder must be on a filesystem every node sees at the same path
(docs/batch.md).

Two ways to feed the actors (`api`):

- "actors" (default): a pool of plain actors, each sent calls of `batch` inputs with at most
  `depth` calls in flight, so the driver's memory stays flat and an actor never waits for work.
  The results come back as the calls' return values (a few kB per input: inline, no object store).
- "data": Ray Data (`map_batches` on an actor pool over datasets of `chunk` inputs). The same
  results, with Ray Data's planning and streaming executor on top: on 2 cores it costs start-up and
  throughput (docs/batch.md, "Measured"), so it is kept for clusters that schedule Ray Data jobs.

A crash that kills an actor (native code, out of memory) is attributed as in the local engine: an
actor writes the input it is on to a marker file (OUT/.parts/inflight-...) and removes it when its
call is done; Ray restarts the actor but does not retry the call (a crashing input would crash it
again, forever), and the driver records the input of the marker left behind as "worker_crashed"
and sends the rest again.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .. import threads as thread_policy
from ..errors import FaceReconError, MissingExtraError
from .inputs import InputItem
from .work import BatchConfig, build_reconstructor, failure, process_item

log = logging.getLogger(__name__)

APIS = ("actors", "data")
#: How long an actor may take to (re)start: Ray restarts a crashed one, whose models load again.
RESTART_TIMEOUT_S = 300.0


def _markers(cfg: BatchConfig) -> Path:
    d = Path(cfg.output) / ".parts"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside a Ray worker: the host is the node
        return socket.gethostname()


class _Worker:
    """What an actor holds and does: models loaded once, then inputs in calls of several.

    tag names its marker file: OUT/.parts/inflight-<tag>-<host>-<pid> holds the input being
    reconstructed (one file per actor process, so a restarted actor never overwrites the marker
    its dead predecessor left)."""

    def __init__(self, cfg: BatchConfig, n_threads: int, tag: str):
        from .. import log as facerecon_log

        facerecon_log.configure(-1)
        # On a cluster the actor's process did not start with the policy's environment: set it
        # before torch loads (below, in build_reconstructor) so OpenMP reads it.
        thread_policy.apply_env(n_threads)
        self.cfg = cfg
        self.node = _node_id()
        self.marker = _markers(cfg) / f"inflight-{tag}-{socket.gethostname()}-{os.getpid()}"
        self.error = None
        self.applied: dict[str, int] = {}
        try:
            self.applied = thread_policy.apply(n_threads)
            self.rec = build_reconstructor(cfg)
        except Exception as e:  # noqa: BLE001 - a setup error (missing asset, bad method) ends the batch
            self.error = str(e) if isinstance(e, FaceReconError) else f"{type(e).__name__}: {e}"

    def ready(self) -> tuple[str | None, dict, str]:
        """(setup error or None, thread counts in force, node id)."""
        return self.error, self.applied, self.node

    def run(self, items: list[tuple[str, str]]) -> list[tuple[str, list[dict], dict | None]]:
        """[(source, stem)] -> [(source, face rows, failure)], in order."""
        if self.error:  # a restarted actor whose setup failed
            raise FaceReconError(f"batch worker could not start: {self.error}")
        out = []
        for source, stem in items:
            self.marker.write_text(source)
            rows, fail = process_item(self.rec, self.cfg, source, stem)
            for r in rows:
                r["node"] = self.node
            out.append((source, rows, fail))
        self.marker.unlink(missing_ok=True)
        return out


class _DataActor(_Worker):
    """A Ray Data callable class over `_Worker` (api="data")."""

    def __init__(self, cfg: BatchConfig, n_threads: int):
        super().__init__(cfg, n_threads, "data")
        if self.error:
            raise FaceReconError(f"batch worker could not start: {self.error}")

    def __call__(self, batch: dict) -> dict:
        done = self.run([(str(s), str(t)) for s, t in zip(batch["source"], batch["stem"])])
        return {"source": [s for s, _, _ in done], "result": [pickle.dumps((r, f)) for _, r, f in done]}


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray[data]", "facerecon batch --engine ray") from None
    return ray


class RayEngine:
    """workers actors x threads CPUs each. address: None starts a local Ray sized to this
    machine's cores (workers x threads <= cores); "auto" or "ray://host:port" joins a cluster,
    where `workers` may exceed one machine's cores.

    api: "actors" (default; $FACERECON_RAY_API overrides) or "data" (Ray Data). batch: inputs per
    actor call (api="actors") or per `map_batches` batch ("data"); depth: calls in flight per actor;
    chunk: inputs per Ray Dataset ("data")."""

    name = "ray"

    def __init__(self, cfg: BatchConfig, workers: int = 1, threads: int | None = None, address: str | None = None,
                 api: str | None = None, batch: int = 8, depth: int = 2, chunk: int = 4096):
        self.cfg = cfg
        if address:
            self.workers, self.threads = max(1, workers), max(1, threads or 1)
        else:
            self.workers, self.threads = thread_policy.split_cores(workers, threads)
        self.address = address
        self.api = api or os.environ.get("FACERECON_RAY_API", "actors")
        if self.api not in APIS:
            raise ValueError(f"unknown Ray api '{self.api}'; choose from {', '.join(APIS)}")
        self.batch, self.depth, self.chunk = max(1, batch), max(1, depth), chunk
        self._started = False
        self.applied: dict[str, int] = {}
        self.nodes: set[str] = set()  # the nodes whose actors did work
        self.timings: dict[str, float] = {}  # start-up: ray.init, actors ready (seconds)
        self._stopping: threading.Thread | None = None

    # -- start-up ---------------------------------------------------------------------------------
    def _init(self):
        ray = _ray()
        t = time.perf_counter()
        if not ray.is_initialized():
            kw = {"log_to_driver": False, "include_dashboard": False, "logging_level": logging.ERROR}
            if self.address:
                # The actors set the policy's environment themselves (`_Worker`): no runtime_env,
                # whose per-job setup costs seconds and keeps the cluster's prestarted workers idle.
                ray.init(address=self.address, **kw)
            else:
                # The raylet and every worker it starts inherit this environment; the workers Ray
                # prestarts then become the actors as they are (a runtime_env would start new ones).
                # Only the policy's keys are restored after: ray.init sets variables of its own
                # (RAY_AUTH_MODE) that later sessions in this process rely on.
                env = thread_policy.thread_env(self.threads)
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    # address="local": a Ray of our own, even when this machine runs a cluster
                    # (`ray start`), which ray.init() without an address would join.
                    ray.init(address="local", num_cpus=thread_policy.available_cores(),
                             object_store_memory=128 * 2**20,
                             _system_config={"enable_metrics_collection": False}, **kw)
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
            self._started = True
        self.timings["ray_init_s"] = time.perf_counter() - t
        return ray

    def _actor_class(self, ray):
        return ray.remote(_Worker).options(num_cpus=self.threads, max_restarts=-1, max_task_retries=0)

    # -- api="actors" -----------------------------------------------------------------------------
    def _run_actors(self, ray, items: Iterator[InputItem], markers: Path):
        cls = self._actor_class(ray)
        tags = [f"a{i}" for i in range(self.workers)]
        actors = [cls.remote(self.cfg, self.threads, tag) for tag in tags]
        t_start = time.perf_counter()
        calls: dict = {}  # ObjectRef -> (actor index, [InputItem]) of work calls in flight
        readies = {a.ready.remote(): i for i, a in enumerate(actors)}
        busy = [0] * len(actors)
        ready = [False] * len(actors)
        restart_deadline = [t_start + RESTART_TIMEOUT_S] * len(actors)  # for its (re)start
        retry: collections.deque[InputItem] = collections.deque()
        blind = 0  # actor deaths in a row that no marker explained
        exhausted = False
        try:
            while True:
                for i, a in enumerate(actors):
                    while ready[i] and busy[i] < self.depth:
                        take = [retry.popleft() for _ in range(min(len(retry), self.batch))]
                        if len(take) < self.batch and not exhausted:
                            more = list(itertools.islice(items, self.batch - len(take)))
                            exhausted = len(more) < self.batch - len(take)
                            take += more
                        if not take:
                            break
                        calls[a.run.remote([(it.source, it.stem) for it in take])] = (i, take)
                        busy[i] += 1
                if not calls and not readies:
                    if exhausted and not retry:
                        return
                    raise FaceReconError("no Ray actor is left to run the batch")
                done, _ = ray.wait(list(readies) + list(calls), num_returns=1)
                ref = done[0]
                if ref in readies:
                    i = readies.pop(ref)
                    try:
                        error, self.applied, node = ray.get(ref)
                        log.debug("Ray actor %d ready on node %s", i, node)
                    except ray.exceptions.ActorUnavailableError:
                        # Restarting after a crash (its models load again): ask again until it is up.
                        if time.perf_counter() > restart_deadline[i]:
                            raise FaceReconError(f"a Ray actor was not up again {RESTART_TIMEOUT_S:.0f} s after "
                                                 "it (re)started") from None
                        time.sleep(0.2)
                        readies[actors[i].ready.remote()] = i
                        continue
                    except ray.exceptions.RayActorError as e:
                        raise FaceReconError(f"a Ray actor died while starting: {str(e).splitlines()[0]}") from None
                    if error:
                        raise FaceReconError(f"batch worker could not start: {error}")
                    ready[i] = True
                    if all(ready) and "actors_ready_s" not in self.timings:
                        self.timings["actors_ready_s"] = time.perf_counter() - t_start
                    continue
                i, take = calls.pop(ref)
                busy[i] -= 1
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # process_item never raises: a setup error
                    why = str(getattr(e, "cause", None) or e).splitlines()[0]
                    raise FaceReconError(f"a Ray actor failed: {why}") from None
                except ray.exceptions.RayActorError:
                    # The actor died in this call (or before it began). Its marker names the input it
                    # was on; that one is recorded, the others are sent again (to the restarted actor
                    # or another). Markers are per process, so a restarted actor's own never confuses.
                    by_source = {it.source: it for it in take}
                    culprit = None
                    for m in markers.glob(f"inflight-{tags[i]}-*"):
                        s = m.read_text()
                        if s in by_source:
                            culprit = by_source.pop(s)
                            m.unlink(missing_ok=True)
                    retry.extend(by_source.values())
                    # Ray restarts it; no work goes to it until its `ready` answers (a call sent to a
                    # restarting actor fails at once, and its inputs would bounce until the restart ends).
                    if ready[i]:
                        ready[i] = False
                        restart_deadline[i] = time.perf_counter() + RESTART_TIMEOUT_S
                        readies[actors[i].ready.remote()] = i
                    if culprit is None:
                        blind += 1
                        if blind > 3 * self.workers + 3:
                            raise FaceReconError("Ray actors keep dying outside any input") from None
                        continue
                    blind = 0
                    log.warning("a Ray actor died on %s; it is restarted and the batch goes on", culprit.source)
                    yield culprit, [], failure(culprit.source, "worker_crashed",
                                               f"{culprit.source}: the Ray actor died while reconstructing it")
                    continue
                blind = 0
                by_source = {it.source: it for it in take}
                for source, rows, fail in results:
                    self.nodes.update(r["node"] for r in rows)
                    yield by_source[source], rows, fail
        finally:
            for a in actors:
                ray.kill(a)
            actors.clear()
            calls.clear()
            readies.clear()

    # -- api="data" -------------------------------------------------------------------------------
    def _dataset(self, ray, chunk: list[InputItem]):
        import ray.data
        from ray.data import ActorPoolStrategy

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.verbose_progress = False
        n_blocks = max(1, min(-(-len(chunk) // self.batch), 256))  # blocks of about `batch` inputs
        ds = ray.data.from_items([{"source": it.source, "stem": it.stem} for it in chunk], override_num_blocks=n_blocks)
        # Restart a dead actor, but never retry its task: the same input would kill it again.
        return ds.map_batches(_DataActor, fn_constructor_kwargs={"cfg": self.cfg, "n_threads": self.threads},
                              batch_size=self.batch, compute=ActorPoolStrategy(size=self.workers),
                              num_cpus=self.threads, max_restarts=-1, max_task_retries=0)

    def _run_chunk(self, ray, chunk: list[InputItem], markers: Path):
        pending = {it.source: it for it in chunk}
        while pending:
            try:
                for row in self._dataset(ray, list(pending.values())).iter_rows():
                    rows, fail = pickle.loads(row["result"])
                    self.nodes.update(r["node"] for r in rows)
                    yield pending.pop(row["source"]), rows, fail
            except Exception as e:  # noqa: BLE001 - Ray wraps an actor's death in several types
                left = []
                for m in markers.glob("inflight-data-*"):
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

    def _run_data(self, ray, items: Iterator[InputItem], markers: Path):
        while True:
            chunk = list(itertools.islice(items, self.chunk))
            if not chunk:
                return
            yield from self._run_chunk(ray, chunk, markers)

    def run(self, items: Iterator[InputItem]) -> Iterator[tuple[InputItem, list[dict], dict | None]]:
        """Yields (item, face rows, failure) for every item, in completion order."""
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
            yield from (self._run_actors if self.api == "actors" else self._run_data)(ray, items, markers)
        finally:
            if self._started:
                # Every result is in: stopping the node (~1 s, Ray stops its processes one after the
                # other) overlaps the driver's writing of the tables; close() waits for it.
                self._stopping = threading.Thread(target=ray.shutdown, name="ray-shutdown")
                self._stopping.start()

    def close(self) -> None:
        """Wait until the Ray this engine started has stopped (run_batch calls it last)."""
        if self._stopping is not None:
            self._stopping.join()
            self._stopping = None


__all__ = ["APIS", "RayEngine"]
