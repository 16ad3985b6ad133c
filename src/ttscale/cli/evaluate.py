"""How ``ttscale eval``, ``eval import-samples``, ``eval replay`` and ``report`` show their
work: the library's progress events as lines and bars on stderr, the curve points as a
table or JSON lines. The work itself is :mod:`ttscale.evaluation.api`'s."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ttscale.cli.common import say
from ttscale.cli.render import curve_table, print_output
from ttscale.evaluation.api import EvalRun, Imported
from ttscale.evaluation.progress import Progress as Event
from ttscale.evaluation.progress import ProgressFn
from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.report.outputs import json_lines
from ttscale.evaluation.runs.store import FILE_NAME


def _columns(phase: str, unit: str) -> tuple[ProgressColumn, ...]:
    if phase == "eval":
        return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[rate]}"))
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(unit), TimeElapsedColumn())


@contextmanager
def shown(err: Console | None = None) -> Iterator[ProgressFn]:
    """A ``progress`` callback for the library that prints phase lines on stderr and draws
    one bar per counted phase (questions, epochs); bars stay on screen when done.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with shown(Console(file=out)) as show:
        ...     show(Event("load", "loading model smollm2-135m"))
        >>> out.getvalue()
        'loading model smollm2-135m\\n'
    """
    err = err or Console(stderr=True)
    bars: dict[str, tuple[Progress, TaskID, float]] = {}

    def show(e: Event) -> None:
        if not e.unit:
            say(e.message, err)
            return
        if e.phase not in bars:
            bar = Progress(*_columns(e.phase, e.unit), console=err, transient=False)
            bar.start()
            task = bar.add_task(e.message or e.phase, total=e.total, rate="")
            bars[e.phase] = (bar, task, time.perf_counter())
        bar, task, started = bars[e.phase]
        rate = e.new_tokens / max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=e.done, total=e.total,
                   rate=f"{rate:,.1f} tok/s" if e.phase == "eval" else "")

    try:
        yield show
    finally:
        for bar, _task, _started in bars.values():
            bar.stop()


def print_points(points: Sequence[CurvePoint], *, as_json: bool, title: str,
                 resamples: int, seed: int) -> None:
    """The table on stdout, or the points as JSON lines as results.jsonl holds them.

    Example:
        >>> p = CurvePoint("majority", 4, 0.5, 0.2, 0.8, 120.0, 10, ())
        >>> print_points([p], as_json=True, title="10 questions", resamples=200, seed=0)
        ... # doctest: +ELLIPSIS
        {"strategy": "majority", "n": 4, "accuracy": 0.5, ..., "resamples": 200, "seed": 0}
    """
    if as_json:
        lines = json_lines(points, resamples=resamples, seed=seed)
        sys.stdout.write("".join(line + "\n" for line in lines))
    else:
        console = Console()
        # on a terminal the table fits it; piped, it takes the width it needs
        fits = console.is_terminal or bool(os.environ.get("COLUMNS"))
        print_output(curve_table(points, title, width=console.width if fits else None),
                     console)


def print_run(run: EvalRun, *, as_json: bool, err: Console | None = None) -> None:
    """What ``ttscale eval`` shows when a run ends: the summary line, then the points.

    Example:
        >>> import tempfile
        >>> from ttscale.evaluation.api import evaluate
        >>> run = evaluate("svamp", tempfile.mkdtemp(), ids="0-1", ns=[1], backend="fake")
        >>> print_run(run, as_json=True, err=Console(file=sys.stdout))  # doctest: +ELLIPSIS
        2 questions: 2 samples generated now, 0 replayed from .../run.sqlite; ... new tokens in ...
        {"strategy": "majority", "n": 1, ...}
        ...
    """
    o = run.outcome
    say(f"{o.questions} questions: {o.new_samples} samples generated now, "
        f"{o.cached_samples} replayed from {run.run_dir / FILE_NAME}; "
        f"{o.new_usage.total_tokens:,} new tokens in {o.seconds:.0f} s",
        err or Console(stderr=True))
    print_points(run.points, as_json=as_json, title=f"{run.questions} questions",
                 resamples=run.resamples, seed=run.seed)


def interrupted(out: Path, err: Console | None = None) -> None:
    """The line for a run stopped with Ctrl-C: where its work is and how to resume.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / FILE_NAME).write_bytes(b"")  # what a run stored before Ctrl-C
        >>> interrupted(out, Console(file=sys.stdout, width=200))  # doctest: +ELLIPSIS
        interrupted: everything generated so far is stored in .../run.sqlite; run the same ...
    """
    if (Path(out) / FILE_NAME).is_file():
        say(f"interrupted: everything generated so far is stored in {Path(out) / FILE_NAME}; "
            "run the same command again to resume", err or Console(stderr=True))


def print_imported(imported: Imported) -> None:
    """The line ``ttscale eval import-samples`` ends with: what was read and stored.

    Example:
        >>> import contextlib
        >>> with contextlib.redirect_stderr(sys.stdout):
        ...     print_imported(Imported(Path("runs/boinf"), 1, 3, 3))
        imported 1 question, 3 samples (3 new) into runs/boinf
    """
    questions = "question" if imported.questions == 1 else "questions"
    samples = "sample" if imported.samples == 1 else "samples"
    say(f"imported {imported.questions} {questions}, {imported.samples} {samples} "
        f"({imported.new} new) into {imported.run_dir}")
