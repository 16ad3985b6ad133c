"""Errors a user can act on: each message is one sentence that names the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class TtscaleError(Exception):
    """Base class: every error ttscale raises on purpose derives from it."""


class ConfigError(TtscaleError, ValueError):
    """A parameter, name or option is invalid."""


class BackendError(TtscaleError):
    """The model backend failed or could not be reached."""


class ModelError(TtscaleError):
    """A model is missing, unknown or corrupt."""


class Cancelled(TtscaleError):
    """The work was cancelled while it ran (Ctrl-C, a client that left, a deadline)."""


class BudgetExceeded(TtscaleError):
    """The compute budget cannot pay for even one sample."""


class MissingExtra(TtscaleError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or fail with the ``pip install`` that provides it.

    Example:
        >>> require("json", "core").__name__
        'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{module} is not installed: run pip install 'ttscale[{extra}]'"
        ) from exc


@contextmanager
def only_errors_logged(*libraries: str) -> Iterator[None]:
    """While a Hugging Face library call runs, ``libraries`` (``huggingface_hub``,
    ``datasets``: each with its own ``utils.logging``) log errors only: a failed call becomes
    one ttscale sentence, not that sentence after the library's warnings (an offline hub
    download logs every retry). ``TTSCALE_DEBUG=1`` shows them all.

    Example:
        >>> with only_errors_logged("json"):  # a module without that logging: left alone
        ...     pass
    """
    import importlib
    import os

    logs = []
    if not os.environ.get("TTSCALE_DEBUG"):
        for name in libraries:
            try:
                found = importlib.import_module(f"{name}.utils.logging")
            except ImportError:
                continue
            logs.append((found, found.get_verbosity()))
            found.set_verbosity_error()
    try:
        yield
    finally:
        for found, verbosity in logs:
            found.set_verbosity(verbosity)
