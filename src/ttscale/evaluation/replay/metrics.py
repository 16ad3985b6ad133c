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

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.answers import equivalent, group_answers
from ttscale.errors import ConfigError

Sample = tuple[str | None, int, float | None] | tuple[str | None, int, float | None, int]
"""One stored sample: its answer (``None``: none given), tokens, verifier score or ``None``,
and optionally the tokens its verification cost (counted only by aggregates that use scores)."""

AGGREGATES = ("majority", "weighted", "best", "pass", "short")
# strategy names a curve accepts -> the aggregate that replays them
STRATEGY_AGGREGATES = {"majority": "majority", "weighted": "weighted",
                       "weighted_best_of_n": "weighted", "best_of_n": "best", "pass@k": "pass",
                       "short": "short"}
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
    verify_tokens: tuple[int, ...] = ()

    def cost(self, i: int, aggregate: str) -> int:
        """Tokens sample ``i`` costs under ``aggregate``: its verification too if scored."""
        if aggregate in ("weighted", "best") and self.verify_tokens:
            return self.tokens[i] + self.verify_tokens[i]
        return self.tokens[i]

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
    for sample in samples:
        answer = sample[0]
        if answer is not None and answer not in distinct:
            distinct.append(answer)
    class_of: dict[str, int] = {}
    reps: list[str] = []
    for cid, group in enumerate(group_answers(distinct)):
        reps.append(distinct[group[0]])
        for i in group:
            class_of[distinct[i]] = cid
    return Prepared(
        tuple(-1 if s[0] is None else class_of[s[0]] for s in samples),
        tuple(s[1] for s in samples),
        tuple(0.0 if s[2] is None else float(s[2]) for s in samples),
        tuple(equivalent(rep, gold) for rep in reps),
        tuple(s[3] if len(s) > 3 else 0 for s in samples))


@functools.lru_cache(maxsize=4096)
def _prepared(samples: tuple[Sample, ...], gold: str) -> Prepared:
    # curves of several strategies over one run decide equivalence once per question
    return prepare(samples, gold)


def _vote(p: Prepared, drawn: Sequence[int], aggregate: str) -> bool:
    """Whether the vote of the drawn samples is correct; ties go to the earliest-drawn class.
    ``pass`` is correct when any drawn sample is."""
    weight: dict[int, float] = {}  # insertion order = order first drawn
    for i in drawn:
        c = p.classes[i]
        if c < 0:
            continue
        if aggregate == "pass":
            if p.correct[c]:
                return True
        elif aggregate == "best":
            weight[c] = max(weight.get(c, 0.0), p.scores[i])
        else:
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

    Example:
        >>> p = prepare([("4", 30, None), ("5", 40, None), ("4", 30, None)], "4")
        >>> replay(p, 3, 1, random.Random(0))  # all three samples: one exact vote
        (1.0, 100.0)
        >>> [round(x, 2) for x in replay(p, 1, 1, random.Random(0), "pass")]
        [0.67, 33.33]
    """
    _check_aggregate(aggregate)
    n = len(p.classes)
    if not 1 <= k <= n:
        raise ConfigError(f"k must be between 1 and the {n} samples of the question, got {k}")
    if resamples < 1:
        raise ConfigError(f"resamples must be a positive number, got {resamples}")
    if aggregate == "pass":
        # exact, no draws: the unbiased estimator, with the mean tokens of k samples
        c = sum(cl >= 0 and p.correct[cl] for cl in p.classes)
        return pass_at_k(n, c, k), k * sum(p.tokens) / n
    if aggregate == "short":
        draws = [range(n)] if k == n else [rng.sample(range(n), k) for _ in range(resamples)]
        races = [race(p, d) for d in draws]
        return (sum(ok for ok, _t in races) / len(races),
                sum(t for _ok, t in races) / len(races))
    if k == n:
        return float(_vote(p, range(n), aggregate)), float(sum(p.cost(i, aggregate)
                                                               for i in range(n)))
    return _replay_subsets(p, k, resamples, rng, aggregate)


def race(p: Prepared, drawn: Sequence[int]) -> tuple[bool, float]:
    """A race among the samples ``drawn`` (:mod:`ttscale.strategies.short`): whether the
    vote of the first half to finish (the shortest; ties to the shortest's class) is right,
    and its tokens: each sample cut one token past the last voter's length. A question's
    samples share its prompt, so ordering and cutting their total tokens cuts their
    completions.

    Example:
        >>> p = prepare([("4", 50, None), ("5", 20, None), ("4", 90, None), ("5", 30, None)],
        ...             "4")
        >>> race(p, [0, 1, 2, 3])  # 20 and 30 finish first: 5; the others stop at 31
        (False, 112.0)
    """
    ranked = sorted(enumerate(drawn), key=lambda x: (p.tokens[x[1]], x[0]))
    voters = [i for _j, i in ranked[: (len(ranked) + 1) // 2]]
    cut = p.tokens[voters[-1]] + 1
    return _vote(p, voters, "majority"), float(sum(min(p.tokens[i], cut) for i in drawn))


def _replay_subsets(p: Prepared, k: int, resamples: int, rng: random.Random,
                    aggregate: str) -> tuple[float, float]:
    """All ``resamples`` votes at once with numpy (the same rules as ``_vote``): a curve
    replays tens of thousands of subsets, too many for a Python loop to stay interactive."""
    import numpy as np

    n = len(p.classes)
    gen = np.random.default_rng(rng.getrandbits(64))  # reproducible from the caller's rng
    drawn = np.argsort(gen.random((resamples, n)), axis=1)[:, :k]  # rows: draw order
    cost = np.array([p.cost(i, aggregate) for i in range(n)], dtype=np.float64)
    tokens = float(cost[drawn].sum(axis=1).mean())
    classes = np.array(p.classes, dtype=np.int64)[drawn]
    if not p.correct:
        return 0.0, tokens
    correct = np.array(p.correct, dtype=bool)
    valid = classes >= 0
    if aggregate == "pass":
        hits = (valid & correct[np.where(valid, classes, 0)]).any(axis=1)
        return float(hits.mean()), tokens
    rows = np.broadcast_to(np.arange(resamples)[:, None], classes.shape)
    r, c = rows[valid], classes[valid]
    scores = np.array(p.scores, dtype=np.float64)[drawn][valid]
    total = np.full((resamples, len(p.correct)), -np.inf)
    if aggregate == "best":
        np.maximum.at(total, (r, c), scores)
    else:
        np.maximum.at(total, (r, c), 0.0)  # seen classes start at 0
        np.add.at(total, (r, c), 1.0 if aggregate == "majority" else scores)
    # ties go to the class drawn first, as in _vote
    first = np.full(total.shape, n)
    np.minimum.at(first, (r, c), np.broadcast_to(np.arange(k), classes.shape)[valid])
    best = total.max(axis=1, keepdims=True)
    tied = (total == best) & np.isfinite(total)
    winner = np.where(tied, first, n + 1).argmin(axis=1)
    hits = correct[winner] & valid.any(axis=1)
    return float(hits.mean()), tokens


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
    mean tokens per question, per difficulty bin ``(name, questions, accuracy)``, and the
    mean FLOPs and wall seconds per question when the run recorded them."""

    strategy: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_tokens: float
    questions: int
    bins: tuple[tuple[str, int, float | None], ...]
    # mean tokens per question in each bin of ``bins`` (None where the bin is empty)
    bin_tokens: tuple[float | None, ...] = ()
    mean_flops: float | None = None  # per question, where the run measured it
    mean_seconds: float | None = None  # wall seconds per question, where measured
    # ``auto`` only: per predicted-difficulty bin after the probe (hardest first), the mean
    # tokens per question spent in it (None where empty) and the share of questions in it
    predicted_tokens: tuple[float | None, ...] = ()
    predicted_share: tuple[float, ...] = ()


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


def by_bin(accs: Sequence[float], toks: Sequence[float], bins: Sequence[str],
           ) -> tuple[tuple[tuple[str, int, float | None], ...], tuple[float | None, ...]]:
    """Per difficulty bin: (name, questions, mean accuracy) and the mean tokens.

    Example:
        >>> by_bin([1.0, 0.0], [10.0, 30.0], ["easy", "hard"])
        ((('easy', 1, 1.0), ('medium', 0, None), ('hard', 1, 0.0)), (10.0, None, 30.0))
    """
    per_bin, tokens = [], []
    for name, _, _ in BINS:
        inside = [i for i, b in enumerate(bins) if b == name]
        n = len(inside)
        per_bin.append((name, n, sum(accs[i] for i in inside) / n if n else None))
        tokens.append(sum(toks[i] for i in inside) / n if n else None)
    return tuple(per_bin), tuple(tokens)


def point_of(strategy: str, n: int, accs: Sequence[float], toks: Sequence[float],
             bins: Sequence[str]) -> CurvePoint:
    """The curve point of per-question accuracies, mean tokens and difficulty bins: their
    mean with its 95% interval, the mean tokens, and both per bin.

    Example:
        >>> p = point_of("majority", 4, [1.0, 0.0], [10.0, 30.0], ["easy", "hard"])
        >>> p.accuracy, p.mean_tokens, p.questions, p.bin_tokens
        (0.5, 20.0, 2, (10.0, None, 30.0))
    """
    m, low, high = mean_ci(accs)
    per_bin, bin_tokens = by_bin(accs, toks, bins)
    return CurvePoint(strategy, n, m, low, high, sum(toks) / len(toks), len(accs), per_bin,
                      bin_tokens)


def curve(questions: Sequence[QuestionSamples], ks: Sequence[int], strategy: str = "majority",
          resamples: int = 200, seed: int = 0) -> list[CurvePoint]:
    """Accuracy and tokens against the number of samples, one point per ``k``.

    ``strategy``: ``majority``, ``weighted`` (also ``weighted_best_of_n``), ``best_of_n``,
    ``pass@k`` (unbiased, exact) or ``short`` (a race of ``k``, the first half to finish
    voting). One ``random.Random(seed)`` draws every subset, so a curve
    is reproducible.

    Example:
        >>> qs = [QuestionSamples("a", "2", (("2", 5, None), ("3", 5, None), ("2", 5, None))),
        ...       QuestionSamples("b", "7", (("1", 4, None),) * 3)]
        >>> p = curve(qs, [3])[0]
        >>> p.accuracy, p.mean_tokens, p.bins
        (0.5, 13.5, (('easy', 1, 1.0), ('medium', 0, None), ('hard', 1, 0.0)))
    """
    aggregate = STRATEGY_AGGREGATES.get(strategy, strategy)
    _check_aggregate(aggregate)
    prepared = [_prepared(tuple(q.samples), q.gold) for q in questions]
    bins = [difficulty(p.pass_rate) for p in prepared]
    rng = random.Random(seed)
    points = []
    for k in ks:
        accs, toks = [], []
        for p in prepared:
            a, t = replay(p, k, resamples, rng, aggregate)
            accs.append(a)
            toks.append(t)
        points.append(point_of(strategy, k, accs, toks, bins))
    return points


def paired_difference(questions: Sequence[QuestionSamples], k: int, strategy: str,
                      baseline: str = "majority", resamples: int = 200,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean per-question accuracy of ``strategy`` minus ``baseline`` at ``k`` samples, and its
    95% interval. Both replay the very same subsets of each question, so the interval is that
    of the paired difference: much narrower than the two accuracies' own intervals suggest.

    Example:
        >>> qs = [QuestionSamples("a", "2", (("2", 5, 0.1), ("3", 5, 0.9), ("2", 5, 0.1))),
        ...       QuestionSamples("b", "7", (("7", 4, 0.9), ("1", 4, 0.1), ("1", 4, 0.1)))]
        >>> paired_difference(qs[1:], 3, "weighted_best_of_n")  # weights overturn a wrong vote
        (1.0, 1.0, 1.0)
        >>> [round(x, 2) for x in paired_difference(qs, 3, "weighted_best_of_n")]  # and a right
        [0.0, -1.96, 1.96]
    """
    aggregates = [STRATEGY_AGGREGATES.get(s, s) for s in (strategy, baseline)]
    for a in aggregates:
        _check_aggregate(a)
    master = random.Random(seed)
    diffs = []
    for q in questions:
        p = _prepared(tuple(q.samples), q.gold)
        state = master.getrandbits(64)  # one draw per question: both strategies replay it
        mine, base = (replay(p, k, resamples, random.Random(state), g)[0] for g in aggregates)
        diffs.append(mine - base)
    return mean_ci(diffs)
