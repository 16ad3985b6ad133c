"""Adaptive N replayed on stored samples: a stopping rule against majority over all of them.

One *order* is a random permutation of a question's stored samples (drawn without
replacement). The rule sees them one at a time (or ``batch`` at a time, deciding only at the
end of each batch, as an online sampler would); the tokens of every drawn sample are counted,
answered or not; the vote is the majority of the drawn samples (``None`` never votes, ties to
the earliest-drawn class, as in :mod:`ttscale.evaluation.replay.metrics`). A curve point
averages over ``orders`` permutations per question, all drawn from one ``random.Random(seed)``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ttscale.aggregation.stopping import StoppingRule, Tally, rule_label
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.metrics import (
    CurvePoint,
    Prepared,
    QuestionSamples,
    difficulty,
    point_of,
    prepare,
)


@dataclass(frozen=True)
class Outcome:
    """One replay of one question: the winning class (None: no answer), whether it is
    correct, samples drawn and tokens spent."""

    winner: int | None
    correct: bool
    drawn: int
    tokens: int


def replay_order(p: Prepared, rule: StoppingRule, order: Sequence[int],
                 batch: int = 1) -> Outcome:
    """Feed the samples of ``p`` to ``rule`` in ``order``; stop when it says so.

    Example:
        >>> from ttscale.aggregation.stopping import BayesFactorRule
        >>> p = Prepared((0, 0, 0, 0, 1), (5, 5, 5, 5, 9), (0.0,) * 5, (True, False))
        >>> replay_order(p, BayesFactorRule(threshold=10), range(5))
        Outcome(winner=0, correct=True, drawn=3, tokens=15)
        >>> replay_order(p, BayesFactorRule(threshold=10), range(5), batch=2).drawn
        4
    """
    if batch < 1:
        raise ConfigError(f"batch must be a positive number of samples, got {batch}")
    local: dict[int, int] = {}  # stored class id -> tally class id (first-drawn order)
    tally = Tally()
    for i in list(order)[: rule.n_max]:
        c = p.classes[i]
        cls: int | None = None
        if c >= 0:
            cls = local.setdefault(c, len(local))
        tally = tally.add(cls, p.tokens[i])
        if tally.drawn % batch == 0 and rule.should_stop(tally):
            break
    lead = tally.leader
    winner = None if lead is None else next(c for c, k in local.items() if k == lead)
    return Outcome(winner, winner is not None and p.correct[winner], tally.drawn, tally.tokens)


def orders_for(n: int, count: int, rng: random.Random) -> list[list[int]]:
    """``count`` random permutations of ``range(n)``.

    Example:
        >>> orders = orders_for(4, 3, random.Random(0))
        >>> len(orders), all(sorted(o) == [0, 1, 2, 3] for o in orders)
        (3, True)
    """
    return [rng.sample(range(n), n) for _ in range(count)]


class Replayable(Protocol):
    """A question a method replays: its samples' classes, and its own pass rate."""

    @property
    def id(self) -> str: ...

    @property
    def classes(self) -> tuple[int, ...]: ...

    @property
    def pass_rate(self) -> float: ...


Q = TypeVar("Q", bound=Replayable)


def per_question(questions: Sequence[Q], n: int, orders: int, seed: int,
                 play: Callable[[Q, Callable[[], list[list[int]]]], list[Outcome]],
                 ) -> tuple[list[float], list[float], list[str]]:
    """Each question's mean accuracy and tokens over the outcomes ``play`` returns for it
    (given the question and a draw of ``orders`` random orders of its samples, which it may
    skip), and its difficulty bin; every question needs ``n`` samples.

    Example:
        >>> import types
        >>> q = types.SimpleNamespace(id="q", classes=(0, 0), pass_rate=1.0)
        >>> per_question([q], 2, 3, 0, lambda q, draw: [Outcome(0, True, 2, 10)] * len(draw()))
        ([1.0], [10.0], ['easy'])
    """
    if orders < 1:
        raise ConfigError(f"orders must be a positive number, got {orders}")
    rng = random.Random(seed)
    accs, toks, bins = [], [], []
    for q in questions:
        count = len(q.classes)
        if n > count:
            raise ConfigError(f"question {q.id} has {count} samples, fewer than n={n}: ask "
                              "for fewer")
        outs = play(q, functools.partial(orders_for, count, orders, rng))
        accs.append(sum(o.correct for o in outs) / len(outs))
        toks.append(sum(o.tokens for o in outs) / len(outs))
        bins.append(difficulty(q.pass_rate))
    return accs, toks, bins


def replay_question(samples: Sequence[tuple[str | None, int]] | QuestionSamples, gold: str,
                    rule: StoppingRule, *, orders: int = 5, seed: int = 0,
                    batch: int = 1) -> tuple[float, float, float]:
    """Mean accuracy, tokens and samples drawn of ``rule`` on one question's samples
    (``(answer or None, tokens)`` pairs) over ``orders`` random orders.

    Example:
        >>> from ttscale.aggregation.stopping import BudgetedBayesFactorRule
        >>> s = [("7", 100)] * 10 + [("3", 100)]
        >>> replay_question(s, "7", BudgetedBayesFactorRule(), orders=5, seed=1)
        (1.0, 400.0, 4.0)
    """
    if isinstance(samples, QuestionSamples):
        samples = [(s[0], s[1]) for s in samples.samples]
    p = prepare([(a, t, None) for a, t in samples], gold)
    outs = [replay_order(p, rule, o, batch)
            for o in orders_for(len(p.classes), orders, random.Random(seed))]
    k = len(outs)
    return (sum(o.correct for o in outs) / k, sum(o.tokens for o in outs) / k,
            sum(o.drawn for o in outs) / k)


def adaptive_curve(questions: Sequence[QuestionSamples], rule: StoppingRule, *,
                   orders: int = 5, seed: int = 0, batch: int = 1,
                   label: str | None = None) -> CurvePoint:
    """One curve point for ``rule``: accuracy (95% CI over questions) and mean tokens per
    question, ``n`` = the rule's ``n_max``; strategy ``adaptive_majority[<rule>]``.

    Example:
        >>> from ttscale.aggregation.stopping import BayesFactorRule
        >>> qs = [QuestionSamples("a", "2", (("2", 5, None),) * 6),
        ...       QuestionSamples("b", "7", (("1", 4, None), ("7", 4, None)) * 3)]
        >>> p = adaptive_curve(qs, BayesFactorRule(threshold=10, n_max=6), orders=3)
        >>> p.strategy, p.n, p.accuracy < 1.0, p.mean_tokens < 5 * 6 + 4 * 6
        ('adaptive_majority[bayes_factor(threshold=10)]', 6, True, True)
    """
    if orders < 1:
        raise ConfigError(f"orders must be a positive number, got {orders}")
    rng = random.Random(seed)
    accs, toks, bins = [], [], []
    for q in questions:
        p = prepare(q.samples, q.gold)
        outs = [replay_order(p, rule, o, batch) for o in orders_for(len(p.classes), orders, rng)]
        accs.append(sum(o.correct for o in outs) / orders)
        toks.append(sum(o.tokens for o in outs) / orders)
        bins.append(difficulty(p.pass_rate))
    return point_of(label or f"adaptive_majority[{rule_label(rule)}]", rule.n_max, accs, toks,
                    bins)
