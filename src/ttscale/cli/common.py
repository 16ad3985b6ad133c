"""What every ``ttscale`` command shares: how failures are reported (one sentence on stderr
and an exit code, never a traceback) and how a backend is opened from the options.

Exit codes: 2 for bad options or names, 1 for failures at run time (backend, model files),
130 when interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

from ttscale import models
from ttscale.errors import BudgetExceeded, ConfigError, TtscaleError

EXIT_RUNTIME = 1
EXIT_USAGE = 2  # click's own code for usage errors: bad option values read the same
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
MAX_PARALLEL = 32  # llama.cpp slots beyond this cost context memory for little speed-up


def fail(message: str, code: int) -> NoReturn:
    """Write ``message`` on stderr and end the command with exit code ``code``.

    Example:
        >>> try:
        ...     fail("error: --n must be positive", EXIT_USAGE)
        ... except typer.Exit as stop:
        ...     stop.exit_code
        2
    """
    # Plain write, not rich: rich would wrap a long sentence at 80 columns when piped and
    # read "[extra]" in "pip install 'ttscale[hf]'" as markup.
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def say(message: str, console: Console | None = None) -> None:
    """Print one plain sentence on stderr (or on ``console``), never wrapped.

    Messages hold paths and commands that a user copies: rich would otherwise break them at
    80 columns when stderr is a pipe or a log file, and read "[extra]" as markup. Going
    through the command's own console keeps a live progress bar drawn below the sentence.

    Example:
        >>> say("wrote runs/x.jsonl: 3 questions", Console(file=sys.stdout, width=10))
        wrote runs/x.jsonl: 3 questions
    """
    (console or Console(stderr=True)).print(message, markup=False, highlight=False,
                                            soft_wrap=True)


@contextmanager
def reported() -> Iterator[None]:
    """Turn the errors a user can act on into one sentence on stderr and an exit code.

    Example:
        >>> try:
        ...     with reported():
        ...         raise ConfigError("--n must be a positive number")
        ... except typer.Exit as stop:  # "error: --n must be a positive number" went to stderr
        ...     stop.exit_code
        2
    """
    try:
        yield
    except (ConfigError, BudgetExceeded) as exc:  # the invocation must change
        fail(f"error: {exc}", EXIT_USAGE)
    except TtscaleError as exc:  # the environment must change: server, model file, extra
        fail(f"error: {exc}", EXIT_RUNTIME)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if os.environ.get("TTSCALE_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.filename is not None:  # a path the system refused
            fail(f"error: cannot use {exc.filename} ({exc.strerror}): check that the path "
                 "exists and this user may write there", EXIT_RUNTIME)
        fail(f"error: unexpected {type(exc).__name__}: {exc} (a bug in ttscale: rerun with "
              "TTSCALE_DEBUG=1 for the traceback and report it)", EXIT_RUNTIME)


@contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """While active, send everything written to file descriptor 1 to stderr instead.

    Native code (llama.cpp) can print to the process's stdout behind Python's back; with
    ``--json`` stdout must hold the JSON document and nothing else.

    Example:
        >>> with stdout_to_stderr(False):  # inactive: stdout stays where it is
        ...     print('{"answer": "42"}')
        {"answer": "42"}
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no real descriptors (embedded use): nothing native to redirect
        yield
        return
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def backend_options(backend: str, model: str | None, base_url: str | None,
                     threads: int | None, n: int, ctx_per_slot: int = 2048) -> dict[str, Any]:
    """The constructor options each backend understands.

    Example:
        >>> backend_options("llamacpp", None, None, 4, n=8)
        {'model': None, 'parallel': 8, 'threads': 4, 'ctx_per_slot': 2048}
        >>> backend_options("openai", "qwen", "http://127.0.0.1:8000/v1", None, 8)
        {'model': 'qwen', 'base_url': 'http://127.0.0.1:8000/v1'}
    """
    if backend == "llamacpp":
        # One decoding slot per sample decodes all samples of a call in one batch.
        return {"model": model, "parallel": max(1, min(n, MAX_PARALLEL)), "threads": threads,
                "ctx_per_slot": ctx_per_slot}
    if backend == "fake":
        return {}  # scripted: always "The answer is 42."
    opts: dict[str, Any] = {}
    if model is not None:
        opts["model"] = model
    if base_url is not None:
        opts["base_url"] = base_url
    return opts


def loading_message(backend: str, model: str | None, base_url: str | None) -> str:
    """The line shown while a backend loads its model or connects to its server.

    Example:
        >>> loading_message("openai", None, "http://127.0.0.1:8000/v1")
        'connecting to http://127.0.0.1:8000/v1'
        >>> loading_message("fake", None, None)
        'loading model (fake backend)'
    """
    if backend == "llamacpp":
        return f"loading model {model or models.DEFAULT_MODEL}"
    if backend == "openai":
        where = base_url or "the default server"
        return f"loading model {model} from {where}" if model else f"connecting to {where}"
    return f"loading model {model or f'({backend} backend)'}"
