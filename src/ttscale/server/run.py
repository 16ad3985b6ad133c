"""Running the app with uvicorn: in the foreground (``ttscale serve``) or in a thread.

uvicorn shuts down gracefully on SIGINT / SIGTERM: it stops accepting connections, lets
the requests of clients still connected finish (for at most ``shutdown_timeout``; those of
clients gone were cancelled when they left), then the app cancels what still runs, waits
for its workers (each stops at the backend's next token) and the caller closes the backend.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from types import TracebackType
from typing import Any

from ttscale.backends.base import Backend
from ttscale.errors import BackendError, ConfigError, require
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
    if any(not k.strip() for k in flag or []):  # an unset variable, as in --api-key "$KEY"
        raise ConfigError("--api-key is empty: give a non-empty key, or leave --api-key out "
                          "to serve without one")
    keys = list(flag or []) + [k.strip() for k in (env or "").split(",")]
    return tuple(dict.fromkeys(k for k in keys if k))


def check_port(host: str, port: int) -> None:
    """Fail at once, before a model loads, when ``host:port`` cannot be listened on.

    Example:
        >>> import socket
        >>> with socket.socket() as taken:
        ...     taken.bind(("127.0.0.1", 0)); taken.listen()
        ...     check_port("127.0.0.1", taken.getsockname()[1])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: port ... on 127.0.0.1 is in use: stop what listens ...
    """
    import errno
    import socket

    try:  # with port 0 too: the system picks a free port, but the host must be ours
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r} ({exc.strerror}): give an address of "
                          "this machine, e.g. --host 127.0.0.1") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use: stop what listens "
                                  "there or choose another with --port") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): choose "
                              "another --host or --port") from None


def _config(backend: Backend, settings: Settings, host: str, port: int,
            log_level: str) -> Any:
    uvicorn: Any = require("uvicorn", "server")
    from ttscale.server.app import create_app

    return uvicorn.Config(
        create_app(backend, settings), host=host, port=port, log_level=log_level,
        # the requests of connected clients get this long to finish, then are cancelled
        timeout_graceful_shutdown=max(1, round(min(settings.timeout,
                                                   settings.shutdown_timeout))),
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
