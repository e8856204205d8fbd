"""`--engine local`: N worker processes (spawned) on this machine, each holding its own models.

Each worker has one pipe to the driver and at most `depth` inputs in flight, so when a worker dies
(a crash in native code, the OOM killer) the input it was working on is known: it is recorded as
failed ("worker_crashed") and the worker is restarted; the inputs queued behind it are sent again.
Workers start with the thread policy's environment (`facerecon.threads`) already set, so their
OpenMP and numba pools are sized once, right.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from multiprocessing.connection import wait

from .. import threads as thread_policy
from ..errors import FaceReconError
from .inputs import InputItem
from .work import BatchConfig, build_reconstructor, failure, process_item

log = logging.getLogger(__name__)


def _worker_main(conn, cfg: BatchConfig, n_threads: int, cores: list[int] | None) -> None:
    from .. import log as facerecon_log

    facerecon_log.configure(-1)
    if cores:
        thread_policy.pin(cores)
    applied = thread_policy.apply(n_threads)
    try:
        rec = build_reconstructor(cfg)
    except Exception as e:  # noqa: BLE001 - a setup error (missing asset, bad method) ends the batch
        conn.send(("init_error", f"{type(e).__name__}: {e}" if not isinstance(e, FaceReconError) else str(e)))
        return
    conn.send(("ready", applied))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        source, stem = msg
        conn.send(("done", process_item(rec, cfg, source, stem)))


class _Worker:
    def __init__(self, ctx, cfg, n_threads, cores):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg, n_threads, cores), daemon=True)
        self.proc.start()
        child.close()
        self.queue: collections.deque[InputItem] = collections.deque()
        self.ready = False


class LocalEngine:
    """workers x threads <= cores (`threads.split_cores`); pin: pin worker i to its own cores."""

    name = "local"

    def __init__(self, cfg: BatchConfig, workers: int = 1, threads: int | None = None, pin: bool = False,
                 depth: int = 2):
        self.cfg = cfg
        self.workers, self.threads = thread_policy.split_cores(workers, threads)
        self.pin = pin
        self.depth = depth
        self.applied: dict[str, int] = {}  # the thread counts a worker reported in force

    def _cores(self, i: int) -> list[int] | None:
        if not self.pin:
            return None
        mine = sorted(os.sched_getaffinity(0))
        return [mine[(i * self.threads + k) % len(mine)] for k in range(self.threads)]

    def _start(self, ctx, i: int) -> _Worker:
        # The child's OpenMP/numba read these at start-up: set them for the spawn only.
        saved = dict(os.environ)
        thread_policy.apply_env(self.threads)
        try:
            return _Worker(ctx, self.cfg, self.threads, self._cores(i))
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def close(self) -> None:
        """Nothing to wait for: run() has joined its workers."""

    def run(self, items: Iterator[InputItem]) -> Iterator[tuple[InputItem, list[dict], dict | None]]:
        """Yields (item, face rows, failure) for every item, in completion order."""
        items = iter(items)
        first = next(items, None)
        if first is None:  # nothing to do (e.g. all done before): no worker is started
            return
        ctx = mp.get_context("spawn")
        workers = [self._start(ctx, i) for i in range(self.workers)]
        retry: collections.deque[InputItem] = collections.deque([first])
        exhausted = False
        try:
            while True:
                for w in workers:
                    while len(w.queue) < self.depth and not (exhausted and not retry):
                        if retry:
                            item = retry.popleft()
                        else:
                            item = next(items, None)
                            if item is None:
                                exhausted = True
                                break
                        w.queue.append(item)
                        w.conn.send((item.source, item.stem))
                if exhausted and not retry and not any(w.queue for w in workers):
                    return
                ready = wait([w.conn for w in workers] + [w.proc.sentinel for w in workers])
                for i, w in enumerate(workers):
                    if w.conn in ready or w.proc.sentinel in ready:
                        msg = None
                        try:
                            if w.conn.poll():
                                msg = w.conn.recv()
                        except (EOFError, OSError):
                            msg = None
                        if msg is not None and msg[0] == "init_error":
                            raise FaceReconError(f"batch worker could not start: {msg[1]}")
                        if msg is not None and msg[0] == "ready":
                            w.ready = True
                            self.applied = msg[1]
                        elif msg is not None and msg[0] == "done":
                            rows, fail = msg[1]
                            yield w.queue.popleft(), rows, fail
                        elif not w.proc.is_alive():
                            w.proc.join()
                            code = w.proc.exitcode
                            if w.queue:
                                bad = w.queue.popleft()
                                retry.extend(w.queue)
                                yield bad, [], failure(bad.source, "worker_crashed",
                                                       f"{bad.source}: the worker died (exit code {code}) "
                                                       "while reconstructing it")
                            if not w.ready:
                                raise FaceReconError(f"batch worker died while starting (exit code {code})")
                            log.warning("batch worker %d died (exit code %s); restarting it", i, code)
                            workers[i] = self._start(ctx, i)
        finally:
            for w in workers:
                try:
                    w.conn.send(None)
                except (OSError, BrokenPipeError):
                    pass
            for w in workers:
                w.proc.join(timeout=10)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join()


__all__ = ["LocalEngine"]
