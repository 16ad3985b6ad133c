"""A run's files: results.jsonl (every curve point with its replay settings), curves.png
and report.html; rebuilt from the store and results.jsonl alone by :func:`rebuild_report`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from ttscale.evaluation.replay.metrics import CurvePoint
    >>> p = CurvePoint("majority", 1, 0.5, 0.1, 0.9, 100.0, 4, ())
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_outputs(Path(d), [p], resamples=1, seed=0, report=False)
    ...     '"resamples": 1' in (Path(d) / RESULTS).read_text()
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.replay.summary import earlier_points
from ttscale.evaluation.runs.records import QuestionRecord, load_records

RESULTS = "results.jsonl"


def json_lines(points: Sequence[CurvePoint], *, resamples: int, seed: int) -> list[str]:
    """Each point as one line of JSON with the replay settings behind it.

    Example:
        >>> p = CurvePoint("majority", 4, 0.5, 0.2, 0.8, 120.0, 10, ())
        >>> json_lines([p], resamples=200, seed=0)  # doctest: +ELLIPSIS
        ['{"strategy": "majority", "n": 4, "accuracy": 0.5, ..., "resamples": 200, "seed": 0}']
    """
    return [json.dumps({**asdict(p), "resamples": resamples, "seed": seed}) for p in points]


def write_results(run_dir: Path, points: Sequence[CurvePoint], *, resamples: int,
                  seed: int) -> list[str]:
    """results.jsonl of ``points``; returns its lines (JSON, no newline).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> p = CurvePoint("majority", 4, 0.5, 0.2, 0.8, 120.0, 10, ())
        >>> lines = write_results(d, [p], resamples=200, seed=0)
        >>> (d / RESULTS).read_text() == lines[0] + "\\n", json.loads(lines[0])["n"]
        (True, 4)
    """
    lines = json_lines(points, resamples=resamples, seed=seed)
    (Path(run_dir) / RESULTS).write_text("".join(line + "\n" for line in lines),
                                         encoding="utf-8")
    return lines


def write_outputs(run_dir: Path, points: Sequence[CurvePoint], *, resamples: int, seed: int,
                  extra: Sequence[CurvePoint] = (), report: bool = True,
                  loaded: tuple[dict[str, Any], list[QuestionRecord]] | None = None) -> None:
    """results.jsonl of ``points`` and ``extra`` (earlier invocations' points), and with
    ``report`` their curves.png and report.html (matplotlib draws the plot); ``loaded``:
    the run's records without log-probabilities, if already read.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> now, before = (CurvePoint("majority", n, 0.5, 0.2, 0.8, 60.0 * n, 10, ())
        ...                for n in (4, 1))
        >>> write_outputs(d, [now], resamples=200, seed=0, extra=[before], report=False)
        >>> [json.loads(line)["n"] for line in (d / RESULTS).read_text().splitlines()]
        [4, 1]
    """
    from ttscale.evaluation.report import html

    write_results(run_dir, [*points, *extra], resamples=resamples, seed=seed)
    if report:
        html.write_report(run_dir, [*points, *extra], loaded=loaded)


def rebuild_report(run_dir: Path) -> Path:
    """report.html and curves.png again, from results.jsonl and every other (strategy, n)
    the run stored (without either, no curves).

    Example:
        >>> import tempfile
        >>> from ttscale.evaluation.api import evaluate
        >>> run = evaluate("svamp", tempfile.mkdtemp(), ids="0-1", ns=[1], backend="fake",
        ...                report_files=False)
        >>> rebuild_report(run.run_dir).name, (run.run_dir / "curves.png").is_file()
        ('report.html', True)
    """
    from ttscale.evaluation.report import html

    # fails with one sentence when not a run; earlier points need no log-probabilities
    settings, records = load_records(run_dir, logprobs=False)
    path = Path(run_dir) / RESULTS
    points: list[CurvePoint] = []
    resamples, seed = 200, 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            resamples = row.pop("resamples", resamples)
            seed = row.pop("seed", seed)
            row["bins"] = tuple(tuple(b) for b in row["bins"])
            for key in ("bin_tokens", "predicted_tokens", "predicted_share"):
                row[key] = tuple(row.get(key, ()))
            points.append(CurvePoint(**row))
    if settings.get("kind") == "eval":
        points += earlier_points(records, {(p.strategy, p.n) for p in points},
                                 resamples=resamples, seed=seed)
    return html.write_report(Path(run_dir), points)
