"""Cancelling work in flight: a token that a caller sets and every backend call under it sees.

``solve(..., cancel=token)`` runs its strategy inside ``token.scope()``. Backends read the
token of the calling context with :func:`current` when a call starts and hand it to the
threads that do the work: llama.cpp stops a request at its next token, an HTTP stream is
closed (the server stops decoding), a wait is cut short. The call then raises
:class:`ttscale.errors.Cancelled`. The token travels in a context variable rather than in
every signature so that the calls a strategy, a verifier or a cache make on a backend all
honour it, exactly as cancel scopes do in anyio and trio; it is explicit where it starts
(the ``cancel`` argument) and scoped to the call (a ``with`` block), never global.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ttscale.errors import Cancelled

_CURRENT: contextvars.ContextVar[Cancel | None] = contextvars.ContextVar(
    "ttscale_cancel", default=None)


class Cancel:
    """A one-way switch: once set it stays set. Thread-safe; ``set`` may be called from a
    signal handler or another thread while the work runs.

    Example:
        >>> token = Cancel()
        >>> token.is_set
        False
        >>> token.set("the client left")
        >>> token.is_set, token.reason
        (True, 'the client left')
        >>> token.check()
        Traceback (most recent call last):
        ...
        ttscale.errors.Cancelled: cancelled: the client left
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def __repr__(self) -> str:
        return f"Cancel(set={self.is_set})"

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, reason: str = "interrupted") -> None:
        """Cancel; the first reason given is kept."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking as soon as the token is set; whether it is."""
        return self._event.wait(seconds)

    def check(self) -> None:
        """Raise ``Cancelled`` when set: the work must stop here."""
        if self._event.is_set():
            raise Cancelled(f"cancelled: {self.reason}")

    @contextmanager
    def scope(self) -> Iterator[Cancel]:
        """Make this the token of every backend call made in the block (this thread or
        task; threads started inside get it passed explicitly)."""
        reset = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(reset)


def current() -> Cancel | None:
    """The token of the calling context, or None outside any ``scope``.

    Example:
        >>> token = Cancel()
        >>> with token.scope():
        ...     current() is token
        True
        >>> current() is None
        True
    """
    return _CURRENT.get()


def is_cancelled(token: Cancel | None) -> bool:
    """Whether ``token`` is given and set (None never is).

    Example:
        >>> is_cancelled(None)
        False
    """
    return token is not None and token.is_set
