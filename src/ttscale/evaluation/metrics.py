"""Scaling curves from stored samples: pass@k, and majority / weighted votes over subsets.

A question's samples are replayed instead of regenerated: accuracy at ``k`` samples is the mean
correctness of the vote over ``resamples`` random subsets of size ``k`` drawn without
replacement. Equivalence (math-verify, :mod:`ttscale.answers`) is computed once per question:
each distinct answer string gets a class id, and a subset only counts class ids.

The confidence interval of a curve point is the normal approximation over questions:
``mean ± 1.96 · sd / sqrt(questions)`` with the sample standard deviation of the per-question
accuracies (zero width with a single question).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.answers import equivalent, group_answers
from ttscale.errors import ConfigError

Sample = tuple[str | None, int, float | None]
"""One stored sample: its answer (``None``: none given), completion tokens, score or ``None``."""

AGGREGATES = ("majority", "weighted")
BINS = (("easy", 0.5, 1.0), ("medium", 0.1, 0.5), ("hard", 0.0, 0.1))
Z95 = 1.959963984540054


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``.

    Example:
        >>> pass_at_k(10, 0, 3), pass_at_k(10, 10, 1), pass_at_k(4, 1, 1)
        (0.0, 1.0, 0.25)
        >>> round(pass_at_k(5, 2, 2), 4)
        0.7
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ConfigError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, "
                          f"k={k}: ask for k at most the number of samples")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(frozen=True)
class Prepared:
    """One question's samples as class ids (``-1``: no answer), with each class's correctness."""

    classes: tuple[int, ...]
    tokens: tuple[int, ...]
    scores: tuple[float, ...]
    correct: tuple[bool, ...]

    @property
    def pass_rate(self) -> float:
        """The fraction of all samples that are correct."""
        if not self.classes:
            return 0.0
        return sum(c >= 0 and self.correct[c] for c in self.classes) / len(self.classes)


def prepare(samples: Sequence[Sample], gold: str) -> Prepared:
    """Class ids of a question's samples, equivalence decided once per distinct answer string.

    Example:
        >>> p = prepare([("0.5", 3, None), ("2", 5, None), ("1/2", 4, None), (None, 1, None)],
        ...             "1/2")
        >>> p.classes, p.correct
        ((0, 1, 0, -1), (True, False))
    """
    distinct: list[str] = []
    for answer, _, _ in samples:
        if answer is not None and answer not in distinct:
            distinct.append(answer)
    class_of: dict[str, int] = {}
    reps: list[str] = []
    for cid, group in enumerate(group_answers(distinct)):
        reps.append(distinct[group[0]])
        for i in group:
            class_of[distinct[i]] = cid
    return Prepared(
        tuple(-1 if a is None else class_of[a] for a, _, _ in samples),
        tuple(t for _, t, _ in samples),
        tuple(0.0 if s is None else float(s) for _, _, s in samples),
        tuple(equivalent(rep, gold) for rep in reps))


def _vote(p: Prepared, drawn: Sequence[int], aggregate: str) -> bool:
    """Whether the vote of the drawn samples is correct; ties go to the earliest-drawn class."""
    weight: dict[int, float] = {}  # insertion order = order first drawn
    for i in drawn:
        c = p.classes[i]
        if c >= 0:
            weight[c] = weight.get(c, 0.0) + (1.0 if aggregate == "majority" else p.scores[i])
    if not weight:
        return False
    best = max(weight.values())
    winner = next(c for c, w in weight.items() if w == best)
    return p.correct[winner]


def _check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ConfigError(f"unknown aggregate {aggregate!r}: choose one of "
                          f"{', '.join(AGGREGATES)}")


def replay(p: Prepared, k: int, resamples: int, rng: random.Random,
           aggregate: str = "majority") -> tuple[float, float]:
    """Mean correctness and mean tokens of the vote over ``resamples`` subsets of size ``k``.

    With ``k`` equal to the number of samples there is one subset, taken in sample order, so
    the result is exact and ties go to the earliest class as in a plain majority vote.
    """
    _check_aggregate(aggregate)
    n = len(p.classes)
    if not 1 <= k <= n:
        raise ConfigError(f"k must be between 1 and the {n} samples of the question, got {k}")
    if resamples < 1:
        raise ConfigError(f"resamples must be a positive number, got {resamples}")
    if k == n:
        return float(_vote(p, range(n), aggregate)), float(sum(p.tokens))
    hits, tokens = 0, 0
    for _ in range(resamples):
        drawn = rng.sample(range(n), k)
        hits += _vote(p, drawn, aggregate)
        tokens += sum(p.tokens[i] for i in drawn)
    return hits / resamples, tokens / resamples


def subsample_accuracy(samples: Sequence[Sample], gold: str, k: int, resamples: int,
                       rng: random.Random, aggregate: str = "majority") -> tuple[float, float]:
    """Mean correctness and mean tokens of ``aggregate`` over random size-``k`` subsets.

    ``majority`` counts votes per equivalence class, ``weighted`` sums the sample scores
    (``None`` counts 0); ties go to the earliest-drawn class.

    Example:
        >>> s = [("1/2", 10, None), ("0.5", 10, None), ("3", 10, None)]
        >>> subsample_accuracy(s, "0.5", 3, 50, random.Random(0))
        (1.0, 30.0)
        >>> subsample_accuracy(s, "3", 3, 50, random.Random(0), "weighted")
        (0.0, 30.0)
    """
    return replay(prepare(samples, gold), k, resamples, rng, aggregate)


@dataclass(frozen=True)
class QuestionSamples:
    """A question's gold answer and its stored samples, in sampling order."""

    id: str
    gold: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class CurvePoint:
    """Accuracy at ``n`` samples: mean over questions, 95% normal-approximation interval,
    mean tokens per question, and per difficulty bin ``(name, questions, accuracy)``."""

    strategy: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_tokens: float
    questions: int
    bins: tuple[tuple[str, int, float | None], ...]


def difficulty(pass_rate: float) -> str:
    """The bin of a question's own pass rate: easy 0.5-1, medium 0.1-0.5, hard 0-0.1.

    Example:
        >>> difficulty(1.0), difficulty(0.5), difficulty(0.1), difficulty(0.05)
        ('easy', 'easy', 'medium', 'hard')
    """
    for name, low, _high in BINS:
        if pass_rate >= low:
            return name
    return "hard"


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its 95% normal-approximation interval over ``values``.

    Example:
        >>> [round(x, 4) for x in mean_ci([1.0, 0.0, 1.0, 0.0])]
        [0.5, -0.0658, 1.0658]
        >>> mean_ci([0.75])
        (0.75, 0.75, 0.75)
    """
    if not values:
        raise ConfigError("no questions to average: import samples into the run first")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, m, m
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    half = Z95 * sd / math.sqrt(len(values))
    return m, m - half, m + half


def curve(questions: Sequence[QuestionSamples], ks: Sequence[int], strategy: str = "majority",
          resamples: int = 200, seed: int = 0) -> list[CurvePoint]:
    """Accuracy and tokens against the number of samples, one point per ``k``.

    ``strategy``: ``majority`` or ``weighted`` (also ``weighted_best_of_n``). One
    ``random.Random(seed)`` draws every subset, so a curve is reproducible.

    Example:
        >>> qs = [QuestionSamples("a", "2", (("2", 5, None), ("3", 5, None), ("2", 5, None))),
        ...       QuestionSamples("b", "7", (("1", 4, None),) * 3)]
        >>> p = curve(qs, [3])[0]
        >>> p.accuracy, p.mean_tokens, p.bins
        (0.5, 13.5, (('easy', 1, 1.0), ('medium', 0, None), ('hard', 1, 0.0)))
    """
    aggregate = "weighted" if strategy in ("weighted", "weighted_best_of_n") else strategy
    _check_aggregate(aggregate)
    prepared = [prepare(q.samples, q.gold) for q in questions]
    bins = [difficulty(p.pass_rate) for p in prepared]
    rng = random.Random(seed)
    points = []
    for k in ks:
        accs, toks = [], []
        for p in prepared:
            a, t = replay(p, k, resamples, rng, aggregate)
            accs.append(a)
            toks.append(t)
        m, low, high = mean_ci(accs)
        per_bin = []
        for name, _, _ in BINS:
            inside = [a for a, b in zip(accs, bins, strict=True) if b == name]
            per_bin.append((name, len(inside), sum(inside) / len(inside) if inside else None))
        points.append(CurvePoint(strategy, k, m, low, high, sum(toks) / len(toks),
                                 len(prepared), tuple(per_bin)))
    return points
