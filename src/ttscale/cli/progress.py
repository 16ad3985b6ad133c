"""The progress displays of the CLI: the phase spinner of ``solve`` and the bar of
``models install``. Both draw on stderr and only on a terminal."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class _ElapsedColumn(ProgressColumn):
    """Seconds since the solve started, with one decimal (the phases are short)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.elapsed or 0.0:.1f}s", style="dim")


class PhaseDisplay:
    """A transient spinner on ``console`` naming the current phase and the elapsed time.

    It draws only on a terminal: piped or redirected, it prints nothing at all, so logs and
    ``--json`` output stay clean. Call it with a phase message (it is a ``Progress``
    callback for :func:`ttscale.solve.solve`).

    Example:
        >>> with PhaseDisplay(Console(file=None, force_terminal=False)) as show:
        ...     show("sampling 8 traces")
        >>> show.phase
        'sampling 8 traces'
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.phase = ""
        self.started = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if console.is_terminal and not console.is_dumb_terminal:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), _ElapsedColumn(),
                console=console, transient=True)

    def __call__(self, message: str) -> None:
        self.phase = message
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=message)

    def __enter__(self) -> PhaseDisplay:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.phase or "starting", total=None)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()  # transient: the spinner line is erased



class InstallBar:
    """One progress bar on ``console`` for ``ttscale models install``: a models.install
    progress callback ``(done, total, what)``. Like :class:`PhaseDisplay` it draws only on
    a terminal; piped, the command's own lines are all there is.

    Example:
        >>> with InstallBar(Console(file=None, force_terminal=False)) as bar:
        ...     bar(1, 24, "downloading part 1 of 22")
        >>> bar.done, bar.what
        (1, 'downloading part 1 of 22')
    """

    def __init__(self, console: Console) -> None:
        self.done, self.what = 0, ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if console.is_terminal and not console.is_dumb_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=console, transient=True)

    def __call__(self, done: int, total: int, what: str) -> None:
        self.done, self.what = done, what
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total, description=what)

    def __enter__(self) -> InstallBar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("starting pip", total=None)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
