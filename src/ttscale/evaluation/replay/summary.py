"""The curve points of a stored eval run: replayed strategies from its samples, solved ones
(search, sequential) from their result rows, full costs attached; and the points of what
earlier invocations of the same run stored.

Example:
    >>> from ttscale.evaluation.runs.store import ResultRow
    >>> from ttscale.types import Usage
    >>> rows = (ResultRow("eval", "q", "greedy", 1, 0, "4", True, Usage(10, 5)),)
    >>> [(p.strategy, p.n) for p in earlier_points(
    ...     [QuestionRecord("q", "2+2?", "4", (), rows)], set(), resamples=1, seed=0)]
    [('greedy', 1)]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.evaluation.harness import REPLAYED, VERIFIED, EvalConfig
from ttscale.evaluation.replay.metrics import CurvePoint, curve
from ttscale.evaluation.runs.imports import max_n
from ttscale.evaluation.runs.records import (
    QuestionRecord,
    load_records,
    question_samples,
    solved_curve,
    with_costs,
)


def run_points(run_dir: str | Path, cfg: EvalConfig, only: Sequence[str] | None = None, *,
               loaded: tuple[dict[str, Any], list[QuestionRecord]] | None = None,
               ) -> tuple[list[CurvePoint], list[CurvePoint], int]:
    """``cfg``'s points over the questions in ``only`` (default: all), the points of every
    other (strategy, n) the run stored, and the number of questions in the first;
    ``loaded``: what ``load_records(run_dir, logprobs=False)`` returned, if already read.

    Example:
        >>> import tempfile
        >>> from ttscale.evaluation.api import evaluate
        >>> d = tempfile.mkdtemp()
        >>> _ = evaluate("svamp", d, ids="0-1", ns=[1, 2], backend="fake", report_files=False)
        >>> points, earlier, questions = run_points(d, EvalConfig(ns=(1,)))
        >>> [(p.strategy, p.n) for p in points], [(p.strategy, p.n) for p in earlier], questions
        ([('majority', 1), ('pass@k', 1)], [('majority', 2)], 2)
    """
    # the replayed strategies vote on answers and the rest read result rows: no point
    # needs the traces' log-probabilities (DeepConf's replays read them in replay())
    _settings, every = loaded or load_records(run_dir, logprobs=False)
    wanted = set(only) if only is not None else None
    records = every if wanted is None else [r for r in every if r.id in wanted]
    points: list[CurvePoint] = []
    samples = question_samples(records)
    for name in [*cfg.replayed, "pass@k"]:
        if name in VERIFIED and all(s[2] is None for q in samples for s in q.samples):
            continue
        points.extend(curve(samples, [n for n in cfg.ns if n <= max_n(samples)], name,
                            resamples=cfg.resamples, seed=cfg.replay_seed))
    for name in cfg.solved:
        points.extend(solved_curve(records, name, cfg.ns))
    points = with_costs(points, records)
    earlier = earlier_points(every, {(p.strategy, p.n) for p in points},
                             resamples=cfg.resamples, seed=cfg.replay_seed)
    return points, earlier, len(records)


def earlier_points(records: Sequence[QuestionRecord], shown: set[tuple[str, int]], *,
                   resamples: int, seed: int) -> list[CurvePoint]:
    """Points of every (strategy, n) with result rows in the run but not in ``shown``,
    over every question that has them: a run evaluated in several invocations (sampling,
    then each search) reports all of them, not only the last.

    Example:
        >>> import tempfile
        >>> from ttscale.evaluation.api import evaluate
        >>> run = evaluate("svamp", tempfile.mkdtemp(), ids="0-1", ns=[1, 2], backend="fake")
        >>> records = load_records(run.run_dir)[1]
        >>> [(p.strategy, p.n) for p in earlier_points(records, {("majority", 1)}, resamples=4,
        ...                                            seed=0)]
        [('majority', 2)]
    """
    stored: dict[str, set[int]] = {}
    for r in records:
        for row in r.results:
            if (row.strategy, row.n) not in shown:
                stored.setdefault(row.strategy, set()).add(row.n)
    samples = question_samples(records)
    scored = any(s[2] is not None for q in samples for s in q.samples)
    out: list[CurvePoint] = []
    for name, ns in sorted(stored.items()):
        if name in REPLAYED:
            if name in VERIFIED and not scored:
                continue
            out.extend(curve(samples, sorted(n for n in ns if n <= max_n(samples)), name,
                             resamples=resamples, seed=seed))
        else:
            out.extend(solved_curve(records, name, sorted(ns)))
    return with_costs(out, records)
