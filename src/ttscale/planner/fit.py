"""Fitting a plan: a difficulty predictor per probe state, then a marginal-gain allocation.

1. **Predictor.** At every track (``U`` unverified, ``V`` verified) and stage, a logistic
   regression (L2, standardised signals, :func:`scipy.optimize.minimize`) predicts whether the
   answer now (the majority in ``U``, the verifier-weighted one in ``V``) is right. Its
   predicted probability, cut at the training quantiles into ``bins`` bins, is the state's
   *predicted difficulty*.
2. **Allocation.** The states ``(track, stage, bin)`` form a small decision process whose
   values and transitions are read off the calibration trajectories. For a price ``lambda``
   of compute (accuracy per sample's worth), backward induction picks in each state the
   action with the best expected ``accuracy - lambda * cost``: answer by majority, by the
   brevity-weighted vote or by the verifier-weighted vote, verify what was drawn, or sample
   to the next stage. This is the Lagrangian
   form of the knapsack "spend a mean budget on the actions with the highest expected gain
   per unit of cost": every state continues exactly while its marginal gain per cost beats
   ``lambda``. Sweeping ``lambda`` gives the operating points; a budget picks the most
   accurate point whose mean cost on the training questions fits it.
3. **Cross-fitting.** :func:`cross_fit` splits the questions into folds; each fold's
   questions are played by a plan fitted (predictor, bins, policy, and the budget's
   operating point) on the other folds only, so no question's label scores its own plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.calibration import CURRENCY_UNITS, Costs, Trajectories
from ttscale.planner.plan import ACTIONS, AGREEMENT_EDGES, Point, Predictor

MAJ, WEI, VER, SAM, BRE = (ACTIONS.index(a) for a in ("majority", "weighted", "verify",
                                                      "sample", "brevity"))
LAMBDAS = (*tuple(float(x) for x in np.geomspace(0.0001, 1.0, 56)), 10.0)
EPS = 1e-9


def fit_logistic(x: np.ndarray, y: np.ndarray, alpha: float = 1.0,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mean, scale, coefficients and intercept of an L2 logistic regression of ``y`` on ``x``
    (standardised; ``alpha`` the ridge penalty, the intercept unpenalised), by Newton's
    method: a dozen signals and a few thousand rows converge in a handful of steps.

    Example:
        >>> x = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
        >>> _, _, coef, _ = fit_logistic(x, y)
        >>> bool(coef[0] > 0)
        True
    """
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    yy = y.astype(float)
    if yy.min() == yy.max():  # one class only: a constant model
        p = float(np.clip(yy.mean(), 1e-3, 1 - 1e-3))
        return mean, scale, np.zeros(x.shape[1]), float(np.log(p / (1 - p)))
    ridge = np.full(z.shape[1], alpha)
    ridge[0] = 1e-8
    w = np.zeros(z.shape[1])
    for _ in range(50):
        # einsum, not @: BLAS threads fighting over a busy machine's cores are 20x slower
        # than one core's plain loop at this size
        p = 1.0 / (1.0 + np.exp(-np.clip(np.einsum("ij,j->i", z, w), -50, 50)))
        grad = np.einsum("ij,i->j", z, p - yy) + ridge * w
        hess = np.einsum("ij,ik->jk", z * (p * (1 - p))[:, None], z) + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, scale, w[1:], float(w[0])


@dataclass
class Fitted:
    """The predictors of one fit and every row's cell under them: a cell is a predicted-
    difficulty bin crossed with an agreement bin, ``difficulty * agree + agreement``."""

    predictors: list[Predictor]
    bu: np.ndarray  # (Q, R, S) cells in U
    bv: np.ndarray | None
    pu: np.ndarray  # (Q, R, S) predicted probability in U
    difficulty_bins: int
    agree: int = len(AGREEMENT_EDGES) + 1

    @property
    def bins(self) -> int:
        return self.difficulty_bins * self.agree


def fit_predictors(tr: Trajectories, train: np.ndarray, bins: int = 5,
                   alpha: float = 1.0) -> Fitted:
    """Fit a predictor per track and stage on the ``train`` questions (a bool mask) and bin
    every row (held-out ones too) with it.

    Example:
        >>> from ttscale.planner.calibration import CalQuestion, trajectories
        >>> qs = [CalQuestion(str(i), (0, 1, 1, 1) if i % 2 else (0,) * 4, (False, True) if i % 2
        ...                   else (True,), (10,) * 4, (8,) * 4, (False,) * 4) for i in range(8)]
        >>> fitted = fit_predictors(trajectories(qs, (1, 2, 4), orders=4), np.ones(8, dtype=bool))
        >>> [(p.track, p.stage) for p in fitted.predictors], fitted.bu.shape
        ([('U', 0), ('U', 1), ('U', 2)], (8, 4, 3))
    """
    qn, r, s = tr.maj.shape
    bu = np.zeros((qn, r, s), dtype=np.int64)
    pu = np.zeros((qn, r, s))
    bv = np.zeros((qn, r, s), dtype=np.int64) if tr.fv is not None else None
    preds: list[Predictor] = []
    tracks: list[tuple[str, np.ndarray, np.ndarray, tuple[str, ...]]] = [
        ("U", tr.fu, tr.maj, tr.u_names)]
    if tr.fv is not None:
        tracks.append(("V", tr.fv, tr.wok, tr.v_names))
    for name, feats, target, names in tracks:
        for si in range(s):
            rows = (train & tr.avail[:, si])
            if not rows.any():  # no training question reaches this stage: reuse the last
                rows = train & tr.avail[:, max(0, si - 1)]
            x = feats[rows, :, si].reshape(-1, feats.shape[-1])
            y = target[rows, :, si].reshape(-1)
            mean, scale, coef, icpt = fit_logistic(x, y, alpha)
            allx = feats[:, :, si]
            logit = np.einsum("...j,j->...", (allx - mean) / scale, coef) + icpt
            prob = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
            train_p = prob[rows].reshape(-1)
            edges = np.unique(np.quantile(train_p, np.linspace(0, 1, bins + 1)[1:-1]))
            log_bf = tr.fu[:, :, si, tr.u_names.index("log_bf")]
            agree = (np.expm1(log_bf)[..., None] > np.array(AGREEMENT_EDGES)).sum(axis=-1)
            b = (prob[..., None] > edges).sum(axis=-1) * (len(AGREEMENT_EDGES) + 1) + agree
            preds.append(Predictor(name, si, names, tuple(map(float, mean)),
                                   tuple(map(float, scale)), tuple(map(float, coef)), icpt,
                                   tuple(map(float, edges))))
            if name == "U":
                bu[:, :, si] = b
                pu[:, :, si] = prob
            else:
                assert bv is not None
                bv[:, :, si] = b
    return Fitted(preds, bu, bv, pu, bins)


@dataclass
class Policy:
    """Action codes per ``[stage, bin]``: next action and forced answer, per track."""

    lam: float
    tu: np.ndarray
    au: np.ndarray
    tv: np.ndarray | None
    av: np.ndarray | None

    def point(self, outcome: Outcome) -> Point:
        def names(t: np.ndarray | None) -> tuple[tuple[str, ...], ...]:
            return () if t is None else tuple(tuple(ACTIONS[a] for a in row) for row in t)

        return Point(self.lam, outcome.accuracy, outcome.mean("tokens"), outcome.mean("flops"),
                     outcome.mean("seconds"), outcome.mean("samples"), names(self.tu),
                     names(self.au), names(self.tv), names(self.av))


def _fill_empty(table: np.ndarray, seen: np.ndarray) -> None:
    """A bin no training row reached takes the action of the nearest bin that one did."""
    for si in range(table.shape[0]):
        ok = np.flatnonzero(seen[si])
        if ok.size == 0:
            continue
        for b in np.flatnonzero(~seen[si]):
            table[si, b] = table[si, ok[np.abs(ok - b).argmin()]]


def _cell_means(bins: np.ndarray, values: np.ndarray, nb: int,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per bin: the mean of ``values`` (NaN where empty) and the count."""
    count = np.bincount(bins, minlength=nb).astype(float)
    total = np.bincount(bins, weights=values, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan), count


def _monotone(go: np.ndarray, possible: np.ndarray, agree: int) -> np.ndarray:
    """Sampling on wherever a more settled vote of the same predicted difficulty samples on:
    the less the samples agree, the more another one can change. The constraint keeps a
    cell whose few training rows happened not to gain from stopping a scattered vote."""
    grid = go.reshape(-1, agree)
    later = np.flip(np.logical_or.accumulate(np.flip(grid, axis=1), axis=1), axis=1)
    return np.asarray(later.reshape(-1) & possible, dtype=bool)


def allocate(tr: Trajectories, fitted: Fitted, train: np.ndarray, cost_p: np.ndarray,
             cost_v: np.ndarray, lam: float) -> Policy:
    """Backward induction at price ``lam`` over the training rows (costs already in units of
    one sample's worth). A state continues only when its expected value net of the price
    beats answering now by more than rounding.

    Example:
        >>> from ttscale.planner.calibration import CalQuestion, trajectories
        >>> easy = CalQuestion("e", (0,) * 4, (True,), (10,) * 4, (8,) * 4, (False,) * 4)
        >>> hard = CalQuestion("h", (0, 1, 1, 1), (False, True), (10,) * 4, (8,) * 4, (False,) * 4)
        >>> tr, train = trajectories([easy, hard] * 4, (1, 2, 4), orders=4), np.ones(8, dtype=bool)
        >>> fitted = fit_predictors(tr, train)
        >>> [sorted({ACTIONS[a] for a in allocate(tr, fitted, train, tr.ptok / 10, tr.vtok / 10,
        ...                                        lam).tu[0]}) for lam in (0.0, 10.0)]
        [['sample'], ['majority']]
    """
    qn, r, s = tr.maj.shape
    nb = fitted.bins
    verified = tr.fv is not None and fitted.bv is not None
    val_u = np.zeros((qn, r, s))
    val_v = np.zeros((qn, r, s))
    tu, au = np.full((s, nb), MAJ), np.full((s, nb), MAJ)
    tv, av = np.full((s, nb), MAJ), np.full((s, nb), MAJ)
    seen_u = np.zeros((s, nb), dtype=bool)
    seen_v = np.zeros((s, nb), dtype=bool)
    for si in reversed(range(s)):
        q_here = np.flatnonzero(train & tr.avail[:, si])
        qq = np.repeat(q_here, r)
        oo = np.tile(np.arange(r), len(q_here))
        last = si + 1 >= s
        can = np.zeros(len(qq), dtype=bool) if last else tr.avail[qq, si + 1]
        nx = min(si + 1, s - 1)
        maj = tr.maj[qq, oo, si].astype(float)
        if verified:
            assert fitted.bv is not None
            b = fitted.bv[qq, oo, si]
            tm, count = _cell_means(b, maj, nb)
            tw, _ = _cell_means(b, tr.wok[qq, oo, si].astype(float), nb)
            seen_v[si] = count > 0
            ans = np.where(tw > tm + EPS, WEI, MAJ)
            term = np.where(ans == WEI, tw, tm)
            step = (cost_p[qq, oo, nx] - cost_p[qq, oo, si] + cost_v[qq, oo, nx]
                    - cost_v[qq, oo, si])
            gain = np.where(can, val_v[qq, oo, nx] - lam * step, 0.0)
            cont_sum = np.bincount(b, weights=gain, minlength=nb)
            cont_n = np.bincount(b, weights=can.astype(float), minlength=nb)
            with np.errstate(invalid="ignore", divide="ignore"):
                cont = np.where(cont_n > 0, cont_sum / cont_n, -np.inf)
            go = _monotone(cont > term + EPS, cont_n > 0, fitted.agree)
            tv[si] = np.where(go, SAM, ans)
            av[si] = ans
            # each row keeps its own realised return under the policy from here on (not
            # its cell's mean): later cells mix rows of different histories, and their
            # means would misprice this cell's continuing rows
            row_term = np.where(ans[b] == WEI, tr.wok[qq, oo, si], maj)
            val_v[qq, oo, si] = np.where(go[b] & can, gain, row_term)
        b = fitted.bu[qq, oo, si]
        term, count = _cell_means(b, maj, nb)
        brev = tr.bok[qq, oo, si].astype(float)
        tb, _ = _cell_means(b, brev, nb)
        ans_u = np.where(tb > term + EPS, BRE, MAJ)
        term = np.where(ans_u == BRE, tb, term)
        seen_u[si] = count > 0
        act = ans_u.copy()
        value = term.copy()
        if verified:
            ver, _ = _cell_means(b, val_v[qq, oo, si] - lam * cost_v[qq, oo, si], nb)
            better = ver > value + EPS
            act = np.where(better, VER, act)
            value = np.where(better, ver, value)
        step_u = cost_p[qq, oo, nx] - cost_p[qq, oo, si]
        gain = np.where(can, val_u[qq, oo, nx] - lam * step_u, 0.0)
        cont_sum = np.bincount(b, weights=gain, minlength=nb)
        cont_n = np.bincount(b, weights=can.astype(float), minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            cont = np.where(cont_n > 0, cont_sum / cont_n, -np.inf)
        go = _monotone(cont > value + EPS, cont_n > 0, fitted.agree)
        act = np.where(go, SAM, act)
        value = np.where(go, cont, value)
        tu[si] = act
        au[si] = ans_u
        row = np.where(go[b] & can, gain, np.where(ans_u[b] == BRE, brev, maj))
        if verified:
            row = np.where(act[b] == VER, val_v[qq, oo, si] - lam * cost_v[qq, oo, si], row)
        val_u[qq, oo, si] = row
    _fill_empty(tu, seen_u)
    _fill_empty(au, seen_u)
    if not verified:
        return Policy(lam, tu, au, None, None)
    _fill_empty(tv, seen_v)
    _fill_empty(av, seen_v)
    return Policy(lam, tu, au, tv, av)


@dataclass
class Outcome:
    """Per played row: right or not, the stage and track it answered at, and its costs."""

    correct: np.ndarray  # (Q', R) bool
    costs: dict[str, np.ndarray]  # unit -> (Q', R); also "samples"
    probe_bin: np.ndarray  # (Q', R): the predicted-difficulty bin after the probe

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    def mean(self, unit: str) -> float:
        return float(self.costs[unit].mean())


def play(tr: Trajectories, fitted: Fitted, policy: Policy, rows: np.ndarray,
         costs: Costs) -> Outcome:
    """Play ``policy`` on the questions ``rows`` (indices) over all their orders.

    Example:
        >>> from ttscale.planner.calibration import CalQuestion, trajectories
        >>> qs = [CalQuestion(str(i), (0, 1, 1, 1) if i % 2 else (0,) * 4, (False, True) if i % 2
        ...                   else (True,), (10,) * 4, (8,) * 4, (False,) * 4) for i in range(8)]
        >>> tr, every = trajectories(qs, (1, 2, 4), orders=4), np.ones(8, dtype=bool)
        >>> fitted = fit_predictors(tr, every)
        >>> out = play(tr, fitted, allocate(tr, fitted, every, tr.ptok / 10, tr.vtok / 10, 0.0),
        ...            np.arange(8), Costs())
        >>> out.accuracy, out.mean("tokens"), out.correct.shape
        (1.0, 25.0, (8, 4))
    """
    stages = np.array(tr.stages)
    s_max = len(stages)
    q = np.repeat(rows, tr.maj.shape[1])
    o = np.tile(np.arange(tr.maj.shape[1]), len(rows))
    st = np.zeros(len(q), dtype=np.int64)
    ver = np.zeros(len(q), dtype=bool)
    done = np.zeros(len(q), dtype=bool)
    ok = np.zeros(len(q), dtype=bool)
    for _ in range(2 * s_max + 2):
        if done.all():
            break
        a = np.flatnonzero(~done)
        qa, oa, sa, va = q[a], o[a], st[a], ver[a]
        b_u = fitted.bu[qa, oa, sa]
        act = policy.tu[sa, b_u]
        forced = policy.au[sa, b_u]
        if policy.tv is not None and fitted.bv is not None and policy.av is not None:
            b_v = fitted.bv[qa, oa, sa]
            act = np.where(va, policy.tv[sa, b_v], act)
            forced = np.where(va, policy.av[sa, b_v], forced)
        can = (sa + 1 < s_max) & tr.avail[qa, np.minimum(sa + 1, s_max - 1)]
        act = np.where((act == SAM) & ~can, forced, act)
        fin = (act == MAJ) | (act == WEI) | (act == BRE)
        right = np.select([act == WEI, act == BRE], [tr.wok[qa, oa, sa], tr.bok[qa, oa, sa]],
                          tr.maj[qa, oa, sa])
        ok[a[fin]] = right[fin]
        done[a[fin]] = True
        ver[a[act == VER]] = True
        st[a[act == SAM]] += 1
    shape = (len(rows), tr.maj.shape[1])
    out: dict[str, np.ndarray] = {"samples": stages[st].reshape(shape).astype(float)}
    for unit in CURRENCY_UNITS:
        p, v = costs.per_token(unit)
        out[unit] = (tr.ptok[q, o, st] * p + ver * tr.vtok[q, o, st] * v).reshape(shape)
    return Outcome(ok.reshape(shape), out, (fitted.bu[q, o, 0] // fitted.agree).reshape(shape))


def sample_worth(tr: Trajectories, train: np.ndarray, costs: Costs, unit: str) -> float:
    """Mean cost of one sample in ``unit`` over the training questions.

    Example:
        >>> from ttscale.planner.calibration import CalQuestion, trajectories
        >>> qs = [CalQuestion(q, (0, 0), (True,), (t, t), (t - 10,) * 2, (False,) * 2)
        ...       for q, t in (("a", 30), ("b", 50))]
        >>> tr = trajectories(qs, (1, 2), orders=2)
        >>> sample_worth(tr, np.ones(2, dtype=bool), Costs(), "tokens")  # the mean first sample
        40.0
    """
    p, _ = costs.per_token(unit)
    first = tr.ptok[train, :, 0] * p / tr.stages[0]
    worth = float(first.mean()) if first.size else 0.0
    if worth <= 0:
        raise ConfigError(f"the calibration runs record no {unit} for their samples: fit in "
                          "another currency (--currency tokens)")
    return worth


def sweep(tr: Trajectories, fitted: Fitted, train: np.ndarray, costs: Costs, unit: str,
          lambdas: Sequence[float] = LAMBDAS) -> list[tuple[Policy, Outcome]]:
    """Every operating point fitted on ``train``, with its outcome on ``train``.

    Example:
        >>> from ttscale.planner.calibration import CalQuestion, trajectories
        >>> qs = [CalQuestion(str(i), (0, 1, 1, 1) if i % 2 else (0,) * 4, (False, True) if i % 2
        ...                   else (True,), (10,) * 4, (8,) * 4, (False,) * 4) for i in range(8)]
        >>> tr, train = trajectories(qs, (1, 2, 4), orders=4), np.ones(8, dtype=bool)
        >>> points = sweep(tr, fit_predictors(tr, train), train, Costs(), "tokens")
        >>> len(points), sorted({(out.mean("tokens"), out.accuracy) for _, out in points})
        (57, [(10.0, 0.875), (25.0, 1.0)])
    """
    worth = sample_worth(tr, train, costs, unit)
    cp, cv = tr.cost(unit, costs)
    cp, cv = cp / worth, cv / worth
    rows = np.flatnonzero(train)
    out = []
    for lam in lambdas:
        pol = allocate(tr, fitted, train, cp, cv, lam)
        out.append((pol, play(tr, fitted, pol, rows, costs)))
    return out


def choose(points: Sequence[tuple[Policy, Outcome]], budget: float, unit: str) -> Policy:
    """The most accurate point on the training questions whose mean cost fits ``budget``
    (the cheapest point when none does).

    Example:
        >>> def point(lam, right, tokens):
        ...     return (Policy(lam, np.zeros((1, 1)), np.zeros((1, 1)), None, None),
        ...             Outcome(np.array([[right]]), {"tokens": np.array([[tokens]])}, None))
        >>> points = [point(0.1, False, 10.0), point(0.01, True, 30.0)]
        >>> [choose(points, budget, "tokens").lam for budget in (40.0, 20.0, 5.0)]
        [0.01, 0.1, 0.1]
    """
    fits = [(pol, out) for pol, out in points if out.mean(unit) <= budget]
    if not fits:
        return min(points, key=lambda p: p[1].mean(unit))[0]
    # the lowest price that fits: the Lagrangian solution of "best accuracy at this mean
    # budget". Picking the best training accuracy instead would chase its noise, and on
    # ties spend less than the user gave where held-out questions need it.
    return max(fits, key=lambda p: (p[1].mean(unit), p[1].accuracy))[0]
