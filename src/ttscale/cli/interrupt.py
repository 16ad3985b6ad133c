"""Ctrl-C during a command's work: the first cancels the generation in flight and the
process exits at once with 130; a second exits immediately, never with a traceback.

Python's default handler raises ``KeyboardInterrupt`` in the main thread only: the threads
that wait on llama.cpp or an HTTP server would keep decoding, and the interpreter waits
for them at exit (a whole batch, tens of seconds), printing a traceback if interrupted
again. Here the first Ctrl-C also sets the command's cancel token, which every backend
call in flight watches, and the exit does not wait for any thread.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import NoReturn

from ttscale.cancel import Cancel
from ttscale.errors import Cancelled

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
GRACE_SECONDS = 1.5  # after the first Ctrl-C, the most the clean-up may take


def exit_interrupted() -> NoReturn:
    """Say "interrupted", flush, and end the process now: no thread can hold it up.

    Work the command stored is already committed (the run store writes each batch in a
    transaction), so nothing is lost by not waiting.

    Example:
        >>> try:  # doctest: +SKIP
        ...     run_command()
        ... except KeyboardInterrupt:
        ...     exit_interrupted()  # "interrupted" on stderr; the process exits with 130
    """
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe: nothing more can be said there
            stream.flush()
    with suppress(OSError):
        os.write(2, b"interrupted\n")
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def interruptible(token: Cancel) -> Iterator[Cancel]:
    """Run the block with Ctrl-C bound to ``token``; an interrupted block ends the process.

    The first SIGINT sets ``token`` (the backends stop their requests at the next token)
    and raises ``KeyboardInterrupt`` so that the block unwinds (spinners are cleared,
    backends closed); a watchdog ends the process if that takes over ``GRACE_SECONDS``.
    A second SIGINT ends it at once. Outside the main thread nothing is installed.

    Example:
        >>> with interruptible(Cancel()) as token:
        ...     token.is_set
        False
    """
    if threading.current_thread() is not threading.main_thread():
        yield token
        return
    hits = 0

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            exit_interrupted()
        token.set("interrupted")
        watchdog = threading.Timer(GRACE_SECONDS, exit_interrupted)
        watchdog.daemon = True
        watchdog.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield token
    except (KeyboardInterrupt, Cancelled):
        if token.is_set:
            exit_interrupted()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
