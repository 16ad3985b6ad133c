"""Errors a user can act on: each message is one sentence that names the fix."""

from __future__ import annotations


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
