"""Every verifier of a run side by side, on the same stored samples.

For each verifier that scored a run (``self_judge``, ``sprm``, a PRM...): the trace-level
AUROC of its scores against correctness, the mean AUROC within a question (how well it ranks a
question's own samples, which is what selection needs), and best-of-n and weighted best-of-n
by its scores against majority voting at the same n, with the paired difference. Only questions
with at least n samples, every one scored by every verifier, count, so all figures come from
the same samples and subsets (one seed draws the same subsets for every strategy). ``samples``
keeps each question's first stored samples only: a run whose questions hold more samples than
were all judged (an eval at n up to 8 judges samples 0-7 of a question that has 16) still
compares every question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ttscale.answers import equivalent
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.metrics import CurvePoint, curve, paired_difference
from ttscale.evaluation.runs.imports import stored_settings
from ttscale.evaluation.runs.records import (
    QuestionRecord,
    load_records,
    question_samples,
    with_costs,
)
from ttscale.evaluation.runs.store import Store
from ttscale.stats import auroc

SCORED = ("best_of_n", "weighted_best_of_n")


@dataclass(frozen=True)
class Difference:
    """A scored strategy's accuracy minus majority's at the same n, paired over questions
    (the same subsets of each question), with its 95% interval."""

    strategy: str
    n: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class VerifierFigures:
    """One verifier on the compared samples: trace AUROC, its scored strategies' points
    (named ``best_of_n [NAME]`` and ``weighted_best_of_n [NAME]``) and their differences
    against majority, and the mean within-question AUROC over the questions that have both
    right and wrong samples."""

    verifier: str
    traces: int
    correct: int
    auroc: float | None
    points: tuple[CurvePoint, ...]
    source: str = ""  # what the name stood for when it scored (an SPRM head's file), if known
    differences: tuple[Difference, ...] = ()
    within_auroc: float | None = None
    within_questions: int = 0


@dataclass(frozen=True)
class Comparison:
    """Majority's points and each verifier's figures, over the same questions."""

    questions: int
    skipped: int
    majority: tuple[CurvePoint, ...]
    verifiers: tuple[VerifierFigures, ...]

    @property
    def points(self) -> list[CurvePoint]:
        """Every point: majority's, then each verifier's (for a table or a plot)."""
        return [*self.majority, *(p for v in self.verifiers for p in v.points)]


def _complete(record: QuestionRecord, n: int) -> bool:
    return len(record.traces) >= n and all(t.score is not None for t in record.traces)


def _labels(records: Sequence[QuestionRecord]) -> list[int]:
    return [int(t.answer is not None and equivalent(r.gold, t.answer))
            for r in records for t in r.traces]


def _within_aurocs(records: Sequence[QuestionRecord]) -> list[float]:
    """Each question's own AUROC, over the questions with both right and wrong samples."""
    out = []
    for r in records:
        labels = _labels([r])
        if 0 < sum(labels) < len(labels):
            found = auroc([float(t.score or 0.0) for t in r.traces], labels)
            if found is not None:
                out.append(found)
    return out


def compare_verifiers(run_dir: str | Path, ns: Sequence[int], *,
                      verifiers: Sequence[str] | None = None, resamples: int = 200,
                      seed: int = 0, samples: int | None = None) -> Comparison:
    """Compare the run's verifiers (all, or those named) at each n of ``ns``.

    Example:
        >>> compare_verifiers("/nonexistent", [8])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: /nonexistent holds no run store (run.sqlite): ...
    """
    settings = stored_settings(run_dir)
    if not ns or min(ns) < 1:
        raise ConfigError("-n takes positive sample counts such as 8 or 1,2,4,8")
    if samples is not None and samples < max(ns):
        raise ConfigError(f"--samples {samples} is fewer than the largest n ({max(ns)}): keep "
                          "at least as many samples as the largest n")
    with Store.open(run_dir, settings) as store:
        stored = store.verifiers()
        sources = {v: store.bound(f"verifier:{v}") or "" for v in stored}
    names = list(verifiers) if verifiers else stored
    missing = [v for v in names if v not in stored]
    if not stored or missing:
        raise ConfigError(
            f"{run_dir} has no scores from {', '.join(missing) or 'any verifier'}: score it "
            "with ttscale eval --verifier NAME or ttscale sprm eval first"
            + (f" (it has {', '.join(stored)})" if stored else ""))
    by_name = {v: [replace(r, traces=r.traces[:samples]) for r in load_records(run_dir, v)[1]]
               for v in names}
    n_max = max(ns)
    keep = set.intersection(*({r.id for r in recs if _complete(r, n_max)}
                              for recs in by_name.values()))
    total = len(next(iter(by_name.values())))
    if not keep:
        raise ConfigError(f"no question of {run_dir} has {n_max} samples scored by "
                          f"{', '.join(names)}: ask for a smaller -n or score the run first")
    figures = []
    majority: list[CurvePoint] = []
    for name, recs in by_name.items():
        recs = [r for r in recs if r.id in keep]
        drawn = question_samples(recs)
        if not majority:
            majority = with_costs(curve(drawn, ns, "majority", resamples, seed), recs)
        points = [replace(p, strategy=f"{p.strategy} [{name}]")
                  for s in SCORED for p in curve(drawn, ns, s, resamples, seed)]
        diffs = tuple(Difference(s, n, *paired_difference(drawn, n, s, "majority", resamples,
                                                          seed))
                      for s in SCORED for n in ns)
        labels = _labels(recs)
        scores = [float(t.score or 0.0) for r in recs for t in r.traces]
        within = _within_aurocs(recs)
        figures.append(VerifierFigures(
            name, len(labels), sum(labels), auroc(scores, labels), tuple(points),
            sources.get(name, ""), diffs, sum(within) / len(within) if within else None,
            len(within)))
    return Comparison(len(keep), total - len(keep), tuple(majority), tuple(figures))
