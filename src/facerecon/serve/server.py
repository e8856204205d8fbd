"""Running the app: `serve_forever` for `facerecon serve`, `BackgroundServer` for tests and notebooks."""

from __future__ import annotations

import logging
import socket
import threading
import time

from ..errors import FaceReconError, MissingExtraError

log = logging.getLogger(__name__)


def _uvicorn():
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("serve", "uvicorn", "facerecon serve") from None
    return uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_forever(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` until interrupted (Ctrl-C)."""
    uvicorn = _uvicorn()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except OSError as e:
        raise FaceReconError(f"cannot listen on {host}:{port} ({e})") from None


class BackgroundServer:
    """`app` served by uvicorn in a daemon thread: `with BackgroundServer(app) as s: s.url`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        uvicorn = _uvicorn()
        self.host, self.port = host, port or free_port(host)
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="facerecon-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        t0 = time.monotonic()
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > timeout:
                raise FaceReconError(f"the server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self):  # -> self, started
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
