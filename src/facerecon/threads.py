"""The thread policy of every entry point (API, CLI, batch workers): one explicit count for each pool.

A process runs `n` compute threads, where `n` is the caller's choice or, by default, the cores this
process may use (`os.sched_getaffinity`) divided by the number of worker processes. `apply(n)` sets:

- torch: intra-op threads = n, inter-op threads = 1 (our graphs are sequential; a second pool of
  `cores` threads only oversubscribes). The fitter's landmark stages still drop to one thread
  (`fit.threads.num_threads`).
- numba (the renderer's z-buffer): `numba.set_num_threads(min(n, NUMBA_NUM_THREADS))`.
- the environment of this process and of every process it starts: ``OMP_NUM_THREADS``,
  ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``NUMEXPR_NUM_THREADS`` = n (and
  ``NUMBA_NUM_THREADS`` = n for worker processes: numba refuses a change of it in a running process), and ``OMP_WAIT_POLICY=PASSIVE`` / ``KMP_BLOCKTIME=0``: OpenMP threads that finish their share
  sleep instead of spinning. Spinning is what turns a busy machine's fair 2x slowdown into 4-8x: a
  spinning thread holds a core that the process's own next op (or another process) needs. The OpenMP
  runtime reads these once, when it is loaded, so they act fully only in processes started after
  `apply` (batch workers, `facerecon` itself: `cli.main` applies the environment before torch loads).
- MediaPipe (TFLite/XNNPACK) exposes no thread count through its Python API; batch workers are
  pinned to their own cores (`pin`) so that its pool stays inside the worker's share.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "NUMBA_NUM_THREADS")
# Sleep, don't spin, when an OpenMP region ends (GNU and Intel runtimes).
WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def available_cores() -> int:
    """The number of cores this process may run on (its affinity mask; cgroup quotas are not read)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def split_cores(workers: int, threads: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) with workers x threads <= cores.

    threads None: cores // workers (at least 1). A request above the cores is cut down (logged);
    more workers than cores get one thread each (the only case where the product exceeds them).
    """
    cores = cores or available_cores()
    workers = max(1, int(workers))
    if workers > cores:
        log.warning("%d workers on %d cores: the workers will share cores", workers, cores)
    fair = max(1, cores // workers)
    if threads is None:
        return workers, fair
    threads = max(1, int(threads))
    if threads > fair:
        log.warning("%d workers x %d threads exceeds %d cores: %d threads each", workers, threads, cores, fair)
        threads = fair
    return workers, threads


def thread_env(n: int) -> dict[str, str]:
    """The environment variables of the policy for processes that will run `n` threads."""
    return {**{k: str(int(n)) for k in THREAD_ENV}, **WAIT_ENV}


def apply_env(n: int, environ=None) -> None:
    """Write `thread_env(n)` into `environ` (default os.environ): for the OpenMP runtime of this
    process when torch is not loaded yet, and for every process started afterwards."""
    (os.environ if environ is None else environ).update(thread_env(n))


def prefer_passive_wait(environ=None) -> None:
    """Set the OpenMP wait policy (`WAIT_ENV`) unless the user set it (or set
    ``FACERECON_THREAD_POLICY=off``): effective when called before torch is imported (the CLI does,
    first thing; so does `facerecon.api` when it is imported before torch)."""
    env = os.environ if environ is None else environ
    if env.get("FACERECON_THREAD_POLICY", "").lower() == "off":
        return
    for k, v in WAIT_ENV.items():
        env.setdefault(k, v)


def apply(n: int | None = None) -> dict[str, int]:
    """Apply the policy to this process with `n` threads (None: `available_cores()`).

    Returns the counts now in force: {'torch': ..., 'torch_interop': ..., 'numba': ...} (numba
    absent when it is not installed)."""
    import torch

    n = max(1, int(n or available_cores()))
    env = thread_env(n)
    # numba raises at its next parallel launch if NUMBA_NUM_THREADS changes after its pool started:
    # this process's numba count is set below, the variable only for processes it starts.
    env.pop("NUMBA_NUM_THREADS")
    os.environ.update(env)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first inter-op work; the pool then stays as it is
        pass
    out = {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads()}
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return out
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    out["numba"] = numba.get_num_threads()
    return out


def pin(cores: list[int]) -> None:
    """Run this process (all its threads, MediaPipe's included) on `cores` only (Linux; else no-op)."""
    try:
        os.sched_setaffinity(0, set(cores))
    except (AttributeError, OSError) as e:  # pragma: no cover - not Linux, or a restricted container
        log.debug("cannot pin to cores %s: %s", cores, e)


__all__ = ["THREAD_ENV", "WAIT_ENV", "apply", "apply_env", "available_cores", "pin", "prefer_passive_wait", "split_cores",
           "thread_env"]
