"""Operating points scored on questions their policy was not fitted on, and the choice among
them.

A policy fitted at a price ``lambda`` looks better on its own training questions than it
is: the backward induction stops wherever those questions happened not to gain. So each
fitted operating point carries the accuracy that the same price gives on held-out questions
(an inner cross-fit over the training questions) and its own cost on the training questions
(what a policy spends does not read labels), and a budget picks the point with the best
*held-out* accuracy whose mean cost fits it.

Beside the fitted policies stand the **agreement rules**: adaptive majority written as a
policy table ("sample on while the vote's Bayes factor is under an edge, at most ``k``
samples", the same action in every predicted-difficulty bin). They fit nothing, so their
training figures are already honest, and where the fitted plan cannot beat them on held-out
questions (few calibration questions, or budgets where its cells are thin) the choice falls
to them: the planner never does worse than its simplest member by more than the noise of
the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from ttscale.planner.calibration import CURRENCY_UNITS, Costs, Trajectories
from ttscale.planner.fit import (
    LAMBDAS,
    SAM,
    Fitted,
    Outcome,
    Policy,
    fit_predictors,
    play,
    sweep,
)
from ttscale.planner.plan import ACTIONS, AGREEMENT_EDGES, BUDGET_SE, Point

INNER_FOLDS = 5


@dataclass
class Candidate:
    """An operating point and its held-out estimates: accuracy and mean cost per question
    (per unit, and ``samples``) on questions its policy was not fitted on. ``rule`` names an
    agreement rule; empty for a fitted policy."""

    policy: Policy
    accuracy: float
    costs: dict[str, float]
    rule: str = ""
    rse: float = 0.0  # the mean cost's standard error over questions, relative to it
    race: tuple[int, int] | None = None  # (k, m): k samples race, the first m vote

    def cost(self, unit: str) -> float:
        return self.costs[unit]

    def upper(self, unit: str) -> float:
        """The mean cost ``BUDGET_SE`` standard errors up: what a budget is checked against,
        so that held-out questions (and a choice that favours points whose cost happened to
        look low) keep within it."""
        return self.costs[unit] * (1.0 + BUDGET_SE * self.rse)

    def point(self) -> Point:
        """The plan file's form: action names per table, the held-out figures."""
        def names(t: np.ndarray | None) -> tuple[tuple[str, ...], ...]:
            return () if t is None else tuple(tuple(ACTIONS[a] for a in row) for row in t)

        p = self.policy
        return Point(p.lam, self.accuracy, self.costs["tokens"], self.costs["flops"],
                     self.costs["seconds"], self.costs["samples"], names(p.tu),
                     names(p.au), names(p.tv), names(p.av), self.rule, self.rse,
                     self.race or ())


def agreement_policies(stages: Sequence[int], cells: int,
                       agree: int = len(AGREEMENT_EDGES) + 1,
                       answer: str = "majority") -> list[tuple[Policy, str]]:
    """Adaptive majority as policy tables over the sample counts ``stages``: sample on while
    the agreement bin is below ``t`` (stop once the Bayes factor passes edge ``t``; for
    ``t = agree`` never stop early), up to ``stages[cap]`` samples; answer by ``answer``
    (``majority``, or ``brevity``: the same rules answering by the brevity-weighted vote).

    Example:
        >>> rules = agreement_policies((1, 2, 4), 10)
        >>> len(rules), rules[0][1], rules[1][1], rules[-1][1]
        (11, 'majority@1', 'bayes factor > 3, at most 2 samples', 'majority@4')
        >>> rules[2][0].tu[0].tolist()  # t = 2: sample on in agreement bins 0 and 1
        [3, 3, 0, 0, 0, 3, 3, 0, 0, 0]
        >>> agreement_policies((1, 2, 4), 10, answer="brevity")[-1][1]
        'brevity vote@4'
    """
    edges = (*AGREEMENT_EDGES, None)
    end = ACTIONS.index(answer)
    fixed, suffix = ("majority", "") if answer == "majority" else ("brevity vote",
                                                                   ", brevity vote")
    out = [(Policy(0.0, np.full((len(stages), cells), end), np.full((len(stages), cells), end),
                   None, None), f"{fixed}@{stages[0]}")]
    for cap in range(1, len(stages)):
        for t in range(1, agree + 1):
            tu = np.full((len(stages), cells), end)
            tu[:cap] = np.where((np.arange(cells) % agree) < t, SAM, end)
            edge = edges[t - 1]
            label = (f"{fixed}@{stages[cap]}" if edge is None else
                     f"bayes factor > {edge:g}, at most {stages[cap]} samples{suffix}")
            out.append((Policy(0.0, tu, np.full((len(stages), cells), end), None, None),
                        label))
    return out


def _rse(per_question: np.ndarray) -> float:
    mean = float(per_question.mean())
    if mean <= 0 or len(per_question) < 2:
        return 0.0
    return float(per_question.std(ddof=1) / np.sqrt(len(per_question)) / mean)


def _summary(out: Outcome, unit: str) -> tuple[float, dict[str, float], float]:
    return (out.accuracy, {u: out.mean(u) for u in (*CURRENCY_UNITS, "samples")},
            _rse(out.costs[unit].mean(axis=1)))


def candidates(tr: Trajectories, fitted: Fitted, train: np.ndarray, costs: Costs, unit: str,
               *, bins: int, inner: int = INNER_FOLDS, seed: int = 0,
               lambdas: Sequence[float] = LAMBDAS) -> list[Candidate]:
    """Every operating point fitted on ``train`` (with ``fitted``'s predictors), scored by an
    inner cross-fit over the training questions at the same price, and every agreement rule
    scored on the training questions.

    Example:
        >>> from ttscale.planner.calibration import CalQuestion, trajectories
        >>> qs = [CalQuestion(str(i), (0, 0, i % 2, 0), (True, False), (10,) * 4, (8,) * 4,
        ...                   (False,) * 4) for i in range(6)]
        >>> tr = trajectories(qs, (1, 2, 4), orders=4)
        >>> every = np.ones(6, dtype=bool)
        >>> c = candidates(tr, fit_predictors(tr, every, 1), every, Costs(), "tokens", bins=1)
        >>> min(x.cost("tokens") for x in c), max(x.cost("tokens") for x in c)
        (10.0, 40.0)
        >>> [x.rule for x in c if x.rule][:2]
        ['majority@1', 'bayes factor > 3, at most 2 samples']
    """
    rows = np.flatnonzero(train)
    fitted_points = sweep(tr, fitted, train, costs, unit, lambdas)
    # inner cross-fit: each training question played at every price by a plan fitted on the
    # other inner folds
    k = max(2, min(inner, len(rows)))
    perm = np.random.default_rng(seed + 104729).permutation(len(rows))
    fold = np.empty(len(rows), dtype=np.int64)
    fold[perm] = np.arange(len(rows)) % k
    acc = np.zeros((len(lambdas), len(rows)))
    for f in range(k):
        inner_train = np.zeros_like(train)
        inner_train[rows[fold != f]] = True
        test = rows[fold == f]
        inner_fit = fit_predictors(tr, inner_train, bins)
        for li, (pol, _out) in enumerate(sweep(tr, inner_fit, inner_train, costs, unit,
                                               lambdas)):
            out = play(tr, inner_fit, pol, test, costs)
            acc[li, fold == f] = out.correct.mean(axis=1)
    # accuracy held out, cost in sample: the actions were chosen for the training questions'
    # labels, so their accuracy there flatters the policy, but what the policy spends
    # depends on its cells and actions only (label-free), so its cost on the training
    # questions is what it spends on new ones. The inner fits' cost belongs to other
    # policies: on 16 questions a policy fitted at the same price spent 150 tokens where
    # the one shipped spent 489.
    found = []
    for li, (pol, out) in enumerate(fitted_points):
        _a, spent, rse = _summary(out, unit)
        found.append(Candidate(pol, float(acc[li].mean()), spent, "", rse))
    for answer in ("majority", "brevity"):
        for pol, label in agreement_policies(tr.stages, fitted.bins, fitted.agree, answer):
            a, c, rse = _summary(play(tr, fitted, pol, rows, costs), unit)
            found.append(Candidate(pol, a, c, label, rse))
    # races fit nothing either; one needs its k samples on every question, train or not
    usable = [tr.ravail is not None and bool(tr.ravail[:, c].all())
              for c in range(len(tr.races))]
    # a race's tables are never read (auto runs the race); they answer after the probe
    answer_now = agreement_policies(tr.stages, fitted.bins, fitted.agree)[0][0]
    for race, ok in zip(tr.races, usable, strict=True):
        if ok:
            a, c, rse = _summary(play_race(tr, fitted, race, rows, costs), unit)
            found.append(Candidate(answer_now, a, c, f"first {race[1]} of {race[0]} to finish",
                                   rse, race))
    return found


def play_race(tr: Trajectories, fitted: Fitted, race: tuple[int, int], rows: np.ndarray,
              costs: Costs) -> Outcome:
    """A race (``k`` samples, the first ``m`` to finish vote) played on the questions
    ``rows`` over all their orders, as :func:`ttscale.planner.fit.play` plays a policy.

    Example:
        >>> from ttscale.planner.calibration import CalQuestion, trajectories
        >>> qs = [CalQuestion(str(i), (0, 1, 0, 1), (True, False), (10, 30, 12, 40),
        ...                   (6, 26, 8, 36), (False,) * 4, 4) for i in range(4)]
        >>> tr = trajectories(qs, (1, 2, 4), orders=2, races=True)
        >>> every = np.ones(4, dtype=bool)
        >>> out = play_race(tr, fit_predictors(tr, every, 1), (4, 2), np.arange(4), Costs())
        >>> out.accuracy, out.mean("tokens"), out.mean("samples")
        (1.0, 48.0, 4.0)
    """
    ci = tr.races.index(race)
    assert tr.rok is not None and tr.rtok is not None
    ok = tr.rok[rows, :, ci]
    out = {"samples": np.full(ok.shape, float(race[0]))}
    for unit in CURRENCY_UNITS:
        out[unit] = tr.rtok[rows, :, ci] * costs.per_token(unit)[0]
    return Outcome(ok, out, fitted.bu[rows, :, 0] // fitted.agree)


def choose(found: Sequence[Candidate], budget: float, unit: str) -> Candidate:
    """The candidate with the best held-out accuracy whose held-out mean cost, ``BUDGET_SE``
    standard errors up, fits ``budget`` (the cheaper on ties; the cheapest of all when none fits).

    Example:
        >>> p = Policy(0.0, np.zeros((1, 1)), np.zeros((1, 1)), None, None)
        >>> c = [Candidate(p, 0.5, {"tokens": 10.0}), Candidate(p, 0.7, {"tokens": 30.0}),
        ...      Candidate(p, 0.6, {"tokens": 20.0}, "rule")]
        >>> choose(c, 25.0, "tokens").rule, choose(c, 5.0, "tokens").accuracy
        ('rule', 0.5)
    """
    fits = [c for c in found if c.upper(unit) <= budget]
    if not fits:
        return min(found, key=lambda c: c.cost(unit))
    return max(fits, key=lambda c: (c.accuracy, -c.cost(unit)))


EFFORT_MARGIN = 0.01  # an effort level must beat majority at its cost by a point (held out)
EFFORT_ANCHORS = {"low": 2, "medium": 8}  # samples of the majority vote each level is set by


def _majority_at(found: Sequence[Candidate], cost: float, unit: str) -> float:
    """Majority's accuracy at ``cost``, interpolated in log cost between the fixed-n
    majority candidates (the nearest end outside them)."""
    pts = sorted((c.cost(unit), c.accuracy) for c in found if c.rule.startswith("majority@"))
    if cost <= pts[0][0]:
        return pts[0][1]
    for (c1, a1), (c2, a2) in pairwise(pts):
        if c1 <= cost <= c2:
            f = float(np.log(cost / c1) / np.log(c2 / c1)) if c2 > c1 > 0 else 0.0
            return a1 + f * (a2 - a1)
    return pts[-1][1]


def effort_choice(found: Sequence[Candidate], unit: str,
                  margin: float = EFFORT_MARGIN) -> dict[str, Candidate]:
    """The operating point of each effort level, from held-out figures only: a level must
    beat majority at its own cost by ``margin``; ``low`` is the most accurate such point
    within majority@2's cost, ``medium`` the cheapest such point that also beats majority@8
    by ``margin``, ``high`` the most accurate such point within majority at the most
    samples' cost. Where no point qualifies, the nearest that does best is taken: low the
    cheapest qualifying point, medium the most accurate qualifying one within majority@8's
    cost, high the most accurate of all.

    Example:
        >>> p = Policy(0.0, np.zeros((1, 1)), np.zeros((1, 1)), None, None)
        >>> c = [Candidate(p, a, {"tokens": t}, r) for a, t, r in ((0.5, 1.0, "majority@1"),
        ...      (0.55, 2.0, "majority@2"), (0.6, 8.0, "majority@8"), (0.62, 16, "majority@16"),
        ...      (0.56, 1.5, ""), (0.62, 5.0, ""), (0.64, 12.0, ""))]
        >>> {k: v.cost("tokens") for k, v in effort_choice(c, "tokens").items()}
        {'low': 1.5, 'medium': 5.0, 'high': 12.0}
    """
    def clears(c: Candidate) -> bool:
        return c.accuracy >= _majority_at(found, c.cost(unit), unit) + margin

    majority = {c.rule: c for c in found if c.rule.startswith("majority@")}
    most = max(majority.values(), key=lambda c: c.cost(unit))
    anchor = {k: majority.get(f"majority@{n}", most) for k, n in EFFORT_ANCHORS.items()}
    good = sorted((c for c in found if clears(c)), key=lambda c: (c.cost(unit), -c.accuracy))
    best = max(found, key=lambda c: (c.accuracy, -c.cost(unit)))
    if not good:
        return {"low": anchor["low"], "medium": anchor["medium"], "high": best}

    def top(cands: Sequence[Candidate]) -> Candidate | None:
        return max(cands, key=lambda c: (c.accuracy, -c.cost(unit))) if cands else None

    low = top([c for c in good if c.cost(unit) <= anchor["low"].cost(unit)]) or good[0]
    medium = next((c for c in good if c.accuracy >= anchor["medium"].accuracy + margin
                   and c.cost(unit) >= low.cost(unit)), None) or top(
        [c for c in good if low.cost(unit) <= c.cost(unit) <= anchor["medium"].cost(unit)]) \
        or low
    high = top([c for c in good if medium.cost(unit) <= c.cost(unit) <= most.cost(unit)]) \
        or best
    return {"low": low, "medium": medium, "high": high}
