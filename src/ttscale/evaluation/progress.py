"""What a long library job reports while it works, for a caller to show as it likes.

The library never prints: :func:`ttscale.evaluate`, :func:`ttscale.replay` and the SPRM
steps call ``progress(Progress(...))`` instead; the CLI turns phase messages into lines on
stderr and counted events into progress bars.

Example:
    >>> seen = []
    >>> report(seen.append, "loading", "loading m (fake)...")
    >>> report(None, "eval", done=1, total=2, unit="questions")  # no callback: nothing
    >>> seen[0].message
    'loading m (fake)...'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One step of a job: a phase with a line for a person, or a count of units done.

    ``phase`` names what is going on (``loading``, ``temperature``, ``eval``, ``features``,
    ``training``, ``replay``). An event without ``unit`` is a line for a person
    (``message``); one with a ``unit`` (questions, epochs) counts: ``done`` of ``total``
    (``None`` while unknown), ``message`` then describes the count if set, and
    ``new_tokens`` is what generation has spent so far in this job.
    """

    phase: str
    message: str = ""
    done: int = 0
    total: int | None = None
    new_tokens: int = 0
    unit: str = ""


ProgressFn = Callable[[Progress], None]


def report(progress: ProgressFn | None, phase: str, message: str = "", *, done: int = 0,
           total: int | None = None, new_tokens: int = 0, unit: str = "") -> None:
    """Send one :class:`Progress` to ``progress`` when there is a callback.

    Example:
        >>> seen = []
        >>> report(seen.append, "eval", "questions", done=3, total=40, unit="questions")
        >>> seen[0].done, seen[0].total, seen[0].unit
        (3, 40, 'questions')
    """
    if progress is not None:
        progress(Progress(phase, message, done, total, new_tokens, unit))
