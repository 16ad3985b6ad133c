"""Running the app with uvicorn: in the foreground (``ttscale serve``) or in a thread.

uvicorn shuts down gracefully on SIGINT / SIGTERM: it stops accepting connections, lets
the requests in flight finish (for at most the request timeout), then the app waits for
its workers and the caller closes the backend.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from types import TracebackType
from typing import Any

from ttscale.backends.base import Backend
from ttscale.errors import BackendError, require
from ttscale.server.service import Settings

KEYS_ENV = "TTSCALE_API_KEYS"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def exposure_warning(host: str, keys: tuple[str, ...]) -> str | None:
    """The one-line warning for a server others can reach without a key, else None.

    Example:
        >>> exposure_warning("127.0.0.1", ()) is None, exposure_warning("0.0.0.0", ("k",))
        (True, None)
    """
    if keys or is_loopback(host):
        return None
    return (f"warning: serving on {host} without an API key: anyone who can reach this port "
            f"can use the model; set {KEYS_ENV} or pass --api-key")


def keys_from(flag: list[str] | None, env: str | None) -> tuple[str, ...]:
    """API keys from ``--api-key`` (repeatable) and the comma-separated environment value.

    Example:
        >>> keys_from(["a"], " b, c ,")
        ('a', 'b', 'c')
    """
    keys = list(flag or []) + [k.strip() for k in (env or "").split(",")]
    return tuple(dict.fromkeys(k for k in keys if k))


def _config(backend: Backend, settings: Settings, host: str, port: int,
            log_level: str) -> Any:
    uvicorn: Any = require("uvicorn", "server")
    from ttscale.server.app import create_app

    return uvicorn.Config(
        create_app(backend, settings), host=host, port=port, log_level=log_level,
        # in-flight requests get as long to finish as any request may take
        timeout_graceful_shutdown=max(1, int(settings.timeout)),
        # keep-alive connections idle this long are closed; clients reconnect silently
        timeout_keep_alive=5,
    )


def serve(backend: Backend, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Serve until interrupted (SIGINT / SIGTERM), then finish the requests in flight.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> serve(FakeBackend(), Settings(), port=8000)  # doctest: +SKIP
    """
    uvicorn: Any = require("uvicorn", "server")
    uvicorn.Server(_config(backend, settings, host, port, log_level)).run()


class Background:
    """The server in a background thread, for tests, benchmarks and notebooks.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> with Background(FakeBackend(), Settings()) as srv:  # doctest: +SKIP
        ...     print(srv.url)   # http://127.0.0.1:PORT/v1
    """

    def __init__(self, backend: Backend, settings: Settings | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        uvicorn: Any = require("uvicorn", "server")
        self.server: Any = uvicorn.Server(
            _config(backend, settings or Settings(), host, port, log_level))
        self.host = host
        self.port = port
        self._thread = threading.Thread(target=self.server.run, name="ttscale-serve",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 30) -> Background:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise BackendError(f"the server did not start on {self.host}:{self.port}: "
                                   "is the port taken?")
            time.sleep(0.01)
        # port 0 asks the system for a free port: read back the one it gave
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 60) -> None:
        """Ask the server to exit as SIGTERM would, and wait until it has."""
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> Background:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
