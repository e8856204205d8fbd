"""Logging: one place that configures facerecon's loggers and keeps native libraries quiet.

Library modules log through ``logging.getLogger(__name__)`` and never print; the command line
calls `configure(verbosity)` once (``--quiet`` / ``--verbose``). Native code (MediaPipe's
TensorFlow-Lite and absl) writes straight to file descriptor 2, past Python's logging, so
`native_stderr_to_log` captures that descriptor around such calls and re-emits its lines as DEBUG
records of the ``facerecon.native`` logger: visible with ``--verbose``, gone otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_native = logging.getLogger("facerecon.native")
_lock = threading.Lock()
_bars: dict[str, bool | None] = {"enabled": None}


class _StderrHandler(logging.StreamHandler):
    """Writes to the given stream, or to whatever `sys.stderr` is at the time of each record (so a
    replaced sys.stderr, e.g. a test's capture, never leaves the handler writing to a closed one)."""

    def __init__(self, stream=None):
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed or sys.stderr
        super().emit(record)


def configure(verbosity: int = 0, stream=None) -> None:
    """-1 quiet (errors only), 0 warnings (default), 1 info, 2+ debug (native library output too)."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger("facerecon")
    root.setLevel(level)
    for h in [h for h in root.handlers if getattr(h, "_facerecon", False)]:
        root.removeHandler(h)
    h = _StderrHandler(stream)
    h.setFormatter(logging.Formatter("facerecon: %(levelname)s: %(message)s"))
    h._facerecon = True
    root.addHandler(h)
    root.propagate = False
    _bars["enabled"] = None if verbosity >= 0 else False


def set_progress(enabled: bool | None) -> None:
    """Progress bars of long library work (fits, videos): True on, False off, None: on unless the
    command line asked for --quiet (`configure(-1)`)."""
    _bars["enabled"] = enabled


def progress(iterable=None, show: bool = True, **kwargs):
    """A tqdm bar (to stderr) for long library work, shown when `show` unless `--quiet` /
    `set_progress(False)`. Keyword arguments go to tqdm (desc, total, unit, leave, ...)."""
    from tqdm import tqdm

    kwargs["disable"] = not show or _bars["enabled"] is False
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


@contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Capture what native code writes to fd 2 inside the block; re-emit it as DEBUG log lines.

    Python-level writes to sys.stderr inside the block are captured too, so keep the block to the
    native call itself. Re-entrant calls (and calls from other threads while one is active) run
    uncaptured rather than racing over the descriptor."""
    if not _lock.acquire(blocking=False):
        yield
        return
    try:
        fd = 2  # native code writes to descriptor 2 whatever Python's sys.stderr is
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        saved = os.dup(fd)
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), fd)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except (AttributeError, ValueError, OSError):
                    pass
                os.dup2(saved, fd)
                os.close(saved)
                tmp.seek(0)
                for line in tmp.read().decode("utf-8", "replace").splitlines():
                    if line.strip():
                        _native.debug(line)
    finally:
        _lock.release()


__all__ = ["configure", "native_stderr_to_log", "progress", "set_progress"]
