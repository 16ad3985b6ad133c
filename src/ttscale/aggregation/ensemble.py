"""Ensembles over several sources (models or prompts) that answer the same questions.

**The per-source vote.** Source ``i`` draws some samples of question ``q`` (all of them, or as
many as an adaptive-N rule asks for); its vote is the share of its answered drawn samples that
each candidate answer got, ``s_i(a)`` (all zero when none answered). Its *top* answer is its
majority (ties to the earliest drawn). Candidates are the answers any source voted for,
equivalent answers merged (math-verify), in first-seen order; the ensemble picks
``argmax_a score(a)``, ties to the earliest candidate. A source whose weight is zero is never
asked, so the tokens of an ensemble on a question are the tokens its weighted sources spent.

**Methods** (``fit`` sees calibration questions with their gold; ``predict`` never does):

- ``equal``: ``score(a) = Σ_i s_i(a)``: each source one vote, split by its shares.
- ``first_order`` (Beyond Majority Voting, 2025): ``score(a) = Σ_i w_i s_i(a)`` with
  ``w_i = max(0, log(p_i (K - 1) / (1 - p_i)))``; ``p_i`` is the calibration accuracy of source
  i's top answer, smoothed ``(correct + 0.5) / (questions + 1)`` so it is never 0 or 1; ``K`` is
  the question's number of candidates (at least 2). Why per question: the formula assumes a
  wrong source spreads over the K - 1 wrong answers; the candidates actually proposed are the
  answers in play, where a fixed K (1000 for AIME) would make every weight nearly equal.
- ``milp`` (Best-of-Infinity's weighted ensemble): weights that maximise the number of
  calibration questions whose weighted vote is correct. With ``d_iqb = s_i(gold_q) - s_i(b)``::

      max  Σ_q z_q
      s.t. Σ_i w_i d_iqb >= m - M (1 - z_q)   for every question q, wrong candidate b
           Σ_i w_i = 1,  0 <= w_i <= 1,  z_q ∈ {0, 1}

  ``m = 1e-3`` asks for a strict win, ``M = 1 + m`` switches a constraint off (``|d| <= 1``);
  a question whose gold no source proposed has ``z_q = 0``. Many weight vectors reach the same
  count, so a second MILP keeps the count (``Σ z_q >= best``) and maximises the smallest
  margin ``δ`` of the questions it gets right (``Σ_i w_i d_iqb >= δ - M (1 - z_q)``).
  Solved with ``scipy.optimize.milp`` (HiGHS).
- ``second_order``, agreement discounted by shared mistakes (in the spirit of inverse
  surprisingly popular: a vote that another source's vote already predicts counts less). From
  calibration, the rate at which source i repeats source j's mistakes,
  ``r_ij = #{q: top_j wrong, top_i = top_j} / (#{q: top_j wrong} + 1)`` (shrunk towards 0:
  no evidence, no discount). On a question,
  ``score(a) = Σ_i s_i(a) · (1 - max_{j≠i} r_ij s_j(a))``: each source's vote for ``a`` keeps
  only the part that the source it copies most (among those also voting ``a``) does not
  explain. Two sources that err together and agree count little more than one, and a source
  that is right when the crowd is wrong keeps its full vote.
- ``best_cv``: the single source with the best calibration accuracy (ties: the first).
- ``best_hindsight``: the single best source on every question, the held-out one included:
  a reference, not a method (it sees the labels it is scored on).

``cross_validate`` fits on all but one question (leave-one-out) or on k - 1 folds and
predicts the rest, so no question's own label is used to answer it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.answers import group_answers
from ttscale.errors import ConfigError

METHODS = ("equal", "first_order", "milp", "second_order", "best_cv", "best_hindsight")
MARGIN = 1e-3


@dataclass(frozen=True)
class QuestionVotes:
    """One question: candidates (merged answers), their correctness, each source's shares
    ``shares[i][c]`` and the tokens each source spent on its vote."""

    id: str
    candidates: tuple[str, ...]
    correct: tuple[bool, ...]
    shares: tuple[tuple[float, ...], ...]
    tokens: tuple[float, ...]

    def top(self, i: int) -> int | None:
        """Source i's majority candidate (ties: the earliest candidate); None if it has none."""
        row = self.shares[i]
        if not row or max(row) <= 0:
            return None
        return row.index(max(row))


def question_votes(qid: str, gold_correct: Callable[[str], bool],
                   votes: Sequence[Sequence[str | None]],
                   tokens: Sequence[float]) -> QuestionVotes:
    """Build a question from each source's drawn answers (in draw order) and tokens.

    Example:
        >>> q = question_votes("q", lambda a: a == "7", [["7", "7", "3"], ["3", None]],
        ...                    [30, 20])
        >>> q.candidates, q.correct, [[round(x, 2) for x in s] for s in q.shares], q.top(1)
        (('7', '3'), (True, False), [[0.67, 0.33], [0.0, 1.0]], 1)
    """
    distinct: list[str] = []
    for answers in votes:
        for a in answers:
            if a is not None and a not in distinct:
                distinct.append(a)
    groups = group_answers(distinct)
    cand_of = {distinct[i]: k for k, g in enumerate(groups) for i in g}
    reps = tuple(distinct[g[0]] for g in groups)
    shares = []
    for answers in votes:
        counts = [0] * len(reps)
        for a in answers:
            if a is not None:
                counts[cand_of[a]] += 1
        total = sum(counts)
        shares.append(tuple(c / total if total else 0.0 for c in counts))
    return QuestionVotes(qid, reps, tuple(gold_correct(r) for r in reps), tuple(shares),
                         tuple(float(t) for t in tokens))


@dataclass(frozen=True)
class Fitted:
    """What a method learned from calibration: per-source weights and, for second_order,
    the co-error rates ``rates[i][j]``."""

    method: str
    weights: tuple[float, ...]
    rates: tuple[tuple[float, ...], ...] = ()


def _accuracy(train: Sequence[QuestionVotes], i: int) -> tuple[int, int]:
    hits = 0
    for q in train:
        t = q.top(i)
        hits += t is not None and q.correct[t]
    return hits, len(train)


def first_order_weight(p: float, k: int) -> float:
    """``max(0, log(p (K - 1) / (1 - p)))``, the first-order optimal weight.

    Example:
        >>> round(first_order_weight(0.9, 2), 4), round(first_order_weight(0.5, 11), 4)
        (2.1972, 2.3026)
        >>> first_order_weight(0.05, 2)
        0.0
    """
    if not 0 < p < 1 or k < 2:
        raise ConfigError(f"first-order weights need 0 < p < 1 and K >= 2, got p={p}, K={k}")
    return max(0.0, math.log(p * (k - 1) / (1 - p)))


def milp_weights(train: Sequence[QuestionVotes], sources: int) -> tuple[float, ...]:
    """Weights maximising the calibration questions won, then the smallest margin (see the
    module docstring for the formulation).

    Example:
        >>> a = QuestionVotes("a", ("1", "2"), (True, False), ((1.0, 0.0), (0.0, 1.0)), (1, 1))
        >>> b = QuestionVotes("b", ("1", "2"), (True, False), ((0.4, 0.6), (1.0, 0.0)), (1, 1))
        >>> [round(w, 3) for w in milp_weights([a, b], 2)]
        [0.625, 0.375]
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    big = 1.0 + MARGIN
    rows, qs = [], []
    for k, q in enumerate(train):
        for g in (c for c, ok in enumerate(q.correct) if ok):
            for b in (c for c, ok in enumerate(q.correct) if not ok):
                rows.append([q.shares[i][g] - q.shares[i][b] for i in range(sources)])
                qs.append(k)
    n_q = len(train)
    winnable = [any(q.correct) for q in train]
    upper_z = [1.0 if w else 0.0 for w in winnable]
    d = np.array(rows).reshape(len(rows), sources)
    z_cols = np.zeros((len(rows), n_q))
    z_cols[np.arange(len(rows)), qs] = -big
    simplex = np.concatenate([np.ones(sources), np.zeros(n_q)])
    # stage 1: as many questions won as possible
    a1 = np.hstack([d, z_cols])
    cons = [LinearConstraint(simplex, 1.0, 1.0)]
    if rows:
        cons.append(LinearConstraint(a1, MARGIN - big, np.inf))
    c1 = np.concatenate([np.zeros(sources), -np.ones(n_q)])
    integrality = np.concatenate([np.zeros(sources), np.ones(n_q)])
    bounds = Bounds(np.zeros(sources + n_q), np.concatenate([np.ones(sources), upper_z]))
    first = milp(c1, constraints=cons, integrality=integrality, bounds=bounds)
    if first.x is None:
        return tuple([1.0 / sources] * sources)
    best = round(-first.fun)
    # stage 2: the same count, the largest smallest margin δ (the last variable)
    a2 = np.hstack([d, z_cols, -np.ones((len(rows), 1))])
    count = np.concatenate([np.zeros(sources), np.ones(n_q), [0.0]])
    cons2 = [LinearConstraint(np.append(simplex, 0.0), 1.0, 1.0),
             LinearConstraint(count, best, np.inf)]
    if rows:
        cons2.append(LinearConstraint(a2, -big, np.inf))
    c2 = np.zeros(sources + n_q + 1)
    c2[-1] = -1.0
    second = milp(c2, constraints=cons2, integrality=np.append(integrality, 0.0),
                  bounds=Bounds(np.append(bounds.lb, MARGIN), np.append(bounds.ub, 1.0)))
    x = second.x if second.x is not None else first.x
    w = np.clip(x[:sources], 0.0, None)
    w = np.where(w < 1e-9, 0.0, w)  # solver dust would make a source "consulted"
    return tuple(float(v) for v in w / w.sum())


def fit(method: str, train: Sequence[QuestionVotes], sources: int) -> Fitted:
    """Learn ``method`` from calibration questions ``train`` (their labels are used).

    Example:
        >>> a = QuestionVotes("a", ("1", "2"), (True, False), ((1.0, 0.0), (0.0, 1.0)), (1, 1))
        >>> fit("best_cv", [a], 2).weights, fit("equal", [a], 2).weights
        ((1.0, 0.0), (1.0, 1.0))
    """
    if method not in METHODS:
        raise ConfigError(f"unknown ensemble method {method!r}: choose one of "
                          f"{', '.join(METHODS)}")
    if method == "equal":
        return Fitted(method, (1.0,) * sources)
    if method in ("best_cv", "best_hindsight"):
        accs = [_accuracy(train, i)[0] for i in range(sources)]
        best = accs.index(max(accs))
        return Fitted(method, tuple(1.0 if i == best else 0.0 for i in range(sources)))
    if method == "first_order":
        ps = [(h + 0.5) / (m + 1) for h, m in (_accuracy(train, i) for i in range(sources))]
        return Fitted(method, tuple(ps))  # weights need K: computed per question in scores()
    if method == "milp":
        return Fitted(method, milp_weights(train, sources))
    rates = []
    for i in range(sources):
        row = []
        for j in range(sources):
            wrong = same = 0
            for q in train:
                tj = q.top(j)
                if tj is not None and q.correct[tj]:
                    continue
                wrong += 1
                same += tj is not None and q.top(i) == tj
            row.append(same / (wrong + 1))
        rates.append(tuple(row))
    return Fitted(method, (1.0,) * sources, tuple(rates))


def effective_weights(fitted: Fitted, q: QuestionVotes) -> tuple[float, ...]:
    """The weights used on ``q``: first_order's depend on the question's K.

    Example:
        >>> q = QuestionVotes("q", ("1", "2", "3"), (True, False, False), ((1.0, 0.0, 0.0),), (9,))
        >>> effective_weights(Fitted("equal", (1.0,)), q)
        (1.0,)
        >>> [round(w, 3) for w in effective_weights(Fitted("first_order", (0.75,)), q)]  # K = 3
        [1.792]
    """
    if fitted.method == "first_order":
        k = max(2, len(q.candidates))
        return tuple(first_order_weight(p, k) for p in fitted.weights)
    return fitted.weights


def scores(fitted: Fitted, q: QuestionVotes) -> list[float]:
    """Each candidate's ensemble score on ``q`` (labels of ``q`` are not read).

    Example:
        >>> q = QuestionVotes("q", ("1", "2"), (True, False), ((0.2, 0.8), (1.0, 0.0)), (1, 1))
        >>> scores(Fitted("milp", (0.25, 0.75)), q)
        [0.8, 0.2]
    """
    s = len(q.shares)
    w = effective_weights(fitted, q)
    cands = range(len(q.candidates))
    if fitted.method != "second_order" or s < 2:
        return [sum(w[i] * q.shares[i][c] for i in range(s)) for c in cands]
    r = fitted.rates
    return [sum(q.shares[i][c] * (1 - max(r[i][j] * q.shares[j][c] for j in range(s) if j != i))
                for i in range(s)) for c in cands]


def predict(fitted: Fitted, q: QuestionVotes) -> int | None:
    """The winning candidate (ties: the earliest); None when no weighted source answered.

    Example:
        >>> q = QuestionVotes("q", ("1", "2"), (True, False), ((0.2, 0.8), (1.0, 0.0)), (1, 1))
        >>> predict(Fitted("milp", (0.25, 0.75)), q), predict(Fitted("milp", (1.0, 0.0)), q)
        (0, 1)
    """
    sc = scores(fitted, q)
    w = effective_weights(fitted, q)
    voted = [c for c in range(len(q.candidates))
             if any(w[i] > 0 and q.shares[i][c] > 0 for i in range(len(q.shares)))]
    if not voted:
        return None
    return max(voted, key=lambda c: (sc[c], -c))


def cost(fitted: Fitted, q: QuestionVotes) -> float:
    """Tokens of the sources the ensemble consults on ``q`` (weight > 0).

    Example:
        >>> q = QuestionVotes("q", ("7",), (True,), ((1.0,), (1.0,)), (30.0, 20.0))
        >>> cost(Fitted("best_cv", (1.0, 0.0)), q), cost(Fitted("equal", (1.0, 1.0)), q)
        (30.0, 50.0)
    """
    w = effective_weights(fitted, q)
    return sum(t for t, wi in zip(q.tokens, w, strict=True) if wi > 0)


@dataclass(frozen=True)
class CVResult:
    """Cross-validated predictions: per question the prediction, correctness, tokens and
    the weights of the fold that answered it."""

    method: str
    predictions: tuple[int | None, ...]
    correct: tuple[bool, ...]
    tokens: tuple[float, ...]
    weights: tuple[tuple[float, ...], ...]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)

    @property
    def mean_tokens(self) -> float:
        return sum(self.tokens) / len(self.tokens)


def cross_validate(questions: Sequence[QuestionVotes], method: str,
                   folds: int = 0) -> CVResult:
    """Fit on the other folds, predict each held-out question; ``folds=0``: leave-one-out.
    ``best_hindsight`` is fitted on every question (it is the hindsight reference).

    Example:
        >>> qa = QuestionVotes("a", ("1", "2"), (True, False), ((1.0, 0.0), (0.0, 1.0)), (5, 9))
        >>> qb = QuestionVotes("b", ("3", "4"), (True, False), ((1.0, 0.0), (0.0, 1.0)), (5, 9))
        >>> r = cross_validate([qa, qb], "best_cv")
        >>> r.accuracy, r.mean_tokens, r.weights
        (1.0, 5.0, ((1.0, 0.0), (1.0, 0.0)))
    """
    if not questions:
        raise ConfigError("no questions to cross-validate")
    sources = len(questions[0].shares)
    if any(len(q.shares) != sources for q in questions):
        raise ConfigError("every question needs a vote from every source")
    n = len(questions)
    k = n if folds == 0 else folds
    if not 2 <= k <= n:
        raise ConfigError(f"folds must be between 2 and the {n} questions (0: leave-one-out), "
                          f"got {folds}")
    fold_of = [i % k for i in range(n)]
    preds: list[int | None] = [None] * n
    toks = [0.0] * n
    weights: list[tuple[float, ...]] = [()] * n
    everything = fit(method, questions, sources) if method == "best_hindsight" else None
    for f in range(k):
        held = [i for i in range(n) if fold_of[i] == f]
        fitted = everything or fit(method, [questions[i] for i in range(n)
                                            if fold_of[i] != f], sources)
        for i in held:
            preds[i] = predict(fitted, questions[i])
            toks[i] = cost(fitted, questions[i])
            weights[i] = tuple(round(w, 4) for w in effective_weights(fitted, questions[i]))
    correct = tuple(p is not None and questions[i].correct[p] for i, p in enumerate(preds))
    return CVResult(method, tuple(preds), correct, tuple(toks), tuple(weights))
