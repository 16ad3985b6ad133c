"""Cross-fitted replay of ``auto`` and the fitting of a whole plan from calibration questions.

:func:`cross_fit` answers "what would ``auto`` have done on these questions at these
budgets?" honestly: the questions are split into ``folds``; each fold is played by a plan
fitted on the others (predictor, difficulty bins, policy and the operating point a budget
selects), over ``orders`` random orders of its samples. :func:`fit_plan` fits the plan to
ship on every question, and stores the cross-fitted frontier beside it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.planner.calibration import (
    CURRENCY_UNITS,
    CalQuestion,
    Costs,
    Trajectories,
    default_stages,
    trajectories,
)
from ttscale.planner.candidates import (
    Candidate,
    candidates,
    choose,
    effort_choice,
    play_race,
)
from ttscale.planner.fit import fit_predictors, play, sample_worth
from ttscale.planner.plan import CURRENCIES, Plan, Point
from ttscale.planner.signals import auroc_table

EFFORTS = ("low", "medium", "high")
BUDGET_MULTIPLES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0,
                    80.0, 128.0)


@dataclass(frozen=True)
class HeldOut:
    """``auto`` at one budget, each question played by a plan fitted without it: per
    question (in input order) its mean accuracy and costs over the orders, and the tokens
    spent per predicted-difficulty bin after the probe (bin 0 the hardest)."""

    budget: float
    unit: str
    accuracy: tuple[float, ...]
    costs: dict[str, tuple[float, ...]]
    bin_tokens: tuple[float | None, ...]
    bin_share: tuple[float, ...]

    def mean(self, unit: str) -> float:
        values = self.costs[unit]
        return sum(values) / len(values)


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    if n < 2:
        raise ConfigError(f"cross-fitting needs at least 2 questions, got {n}: give runs "
                          "with more labelled questions")
    k = max(2, min(folds, n))
    perm = np.random.default_rng(seed + 7919).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[perm] = np.arange(n) % k
    return fold


def check_currency(unit: str) -> None:
    """Refuse a currency a plan cannot be fitted in.

    Example:
        >>> check_currency("flops")  # known: nothing to say
        >>> check_currency("dollars")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: unknown currency 'dollars': choose one of flops, tokens, seconds
    """
    if unit not in CURRENCIES:
        raise ConfigError(f"unknown currency {unit!r}: choose one of {', '.join(CURRENCIES)}")


def cross_fit(questions: Sequence[CalQuestion], costs: Costs,
              budgets: Sequence[float | str], *,
              unit: str = "flops", stages: Sequence[int] | None = None, folds: int = 10,
              orders: int = 32, seed: int = 0, bins: int = 5,
              tr: Trajectories | None = None, races: bool = False,
              on_fold: Callable[[int, int], None] | None = None) -> list[HeldOut]:
    """``auto`` replayed at each budget (in ``unit``, mean per question; or an effort level,
    ``low`` / ``medium`` / ``high``, chosen per fold from its training questions only),
    cross-fitted: each fold's operating point is the one with the best held-out accuracy on
    the training questions (:mod:`ttscale.planner.candidates`) within the budget.
    ``races``: races (:mod:`ttscale.strategies.short`) are candidates too.
    ``on_fold(done, folds)`` is called as each fold is fitted (a fit takes minutes).

    Example:
        >>> qs = [CalQuestion(str(i), (0, 0, 1, 0), (i % 2 == 0, i % 2 == 1), (10,) * 4,
        ...                   (8,) * 4, (False,) * 4) for i in range(6)]
        >>> h = cross_fit(qs, Costs(), [10.0, 40.0], unit="tokens", folds=3, orders=4)
        >>> [round(x.mean("tokens")) for x in h], len(h[0].accuracy)
        ([10, 20], 6)
    """
    check_currency(unit)
    wrong = [b for b in budgets if isinstance(b, str) and b not in EFFORTS]
    if wrong:
        raise ConfigError(f"unknown effort {wrong[0]!r}: choose one of {', '.join(EFFORTS)}")
    stages = tuple(stages or default_stages(max(q.n for q in questions)))
    tr = tr or trajectories(questions, stages, orders=orders, seed=seed, races=races)
    fold = _folds(len(questions), folds, seed)
    qn = len(questions)
    acc = np.zeros((len(budgets), qn))
    cost = {u: np.zeros((len(budgets), qn)) for u in (*CURRENCY_UNITS, "samples")}
    nb = bins
    bin_tok = np.zeros((len(budgets), nb))
    bin_n = np.zeros((len(budgets), nb))
    spend = np.zeros(len(budgets))  # the budget each fold resolved to, weighted by its size
    every_fold = np.unique(fold)
    for done, f in enumerate(every_fold, start=1):
        train = fold != f
        test = np.flatnonzero(fold == f)
        fitted = fit_predictors(tr, train, bins)
        found = candidates(tr, fitted, train, costs, unit, bins=bins, seed=seed)
        levels = effort_choice(found, unit) if any(isinstance(b, str) for b in budgets) \
            else {}
        for bi, budget in enumerate(budgets):
            pick: Candidate = levels[budget] if isinstance(budget, str) else \
                choose(found, budget, unit)
            spend[bi] += len(test) * (pick.cost(unit) if isinstance(budget, str) else budget)
            out = play_race(tr, fitted, pick.race, test, costs) if pick.race else \
                play(tr, fitted, pick.policy, test, costs)
            acc[bi, test] = out.correct.mean(axis=1)
            for u in cost:
                cost[u][bi, test] = out.costs[u].mean(axis=1)
            for b in range(nb):
                inside = out.probe_bin == b
                bin_tok[bi, b] += out.costs["tokens"][inside].sum()
                bin_n[bi, b] += inside.sum()
        if on_fold is not None:
            on_fold(done, len(every_fold))
    total = bin_n.sum(axis=1, keepdims=True)
    return [HeldOut(float(spend[bi] / qn), unit, tuple(map(float, acc[bi])),
                    {u: tuple(map(float, v[bi])) for u, v in cost.items()},
                    tuple(float(bin_tok[bi, b] / bin_n[bi, b]) if bin_n[bi, b] else None
                          for b in range(nb)),
                    tuple(float(x) for x in bin_n[bi] / np.maximum(total[bi], 1)))
            for bi, budget in enumerate(budgets)]


def signal_report(tr: Trajectories, *, folds: int = 10, seed: int = 0,
                  bins: int = 5) -> dict[str, Any]:
    """How well each signal predicts that the probe's answer is right (AUROC over all rows,
    at the first two stages of each track), and the cross-fitted predictor's AUROC.

    Example:
        >>> qs = [CalQuestion(str(i), (0, 1, 1, 1) if i % 2 else (0,) * 4, (False, True) if i % 2
        ...                   else (True,), (10,) * 4, (8,) * 4, (False,) * 4) for i in range(8)]
        >>> report = signal_report(trajectories(qs, (1, 2, 4), orders=4), folds=2)
        >>> sorted(report), report["U@2"]["leader_share"]
        (['U@1', 'U@2'], 0.9286)
    """
    from ttscale.stats import auroc

    out: dict[str, Any] = {}
    tracks = [("U", tr.fu, tr.maj, tr.u_names)]
    if tr.fv is not None:
        tracks.append(("V", tr.fv, tr.wok, tr.v_names))
    fold = _folds(tr.maj.shape[0], folds, seed)
    held = {name: np.zeros(tr.maj.shape) for name, *_ in tracks}
    for f in np.unique(fold):
        fitted = fit_predictors(tr, fold != f, bins)
        for p in fitted.predictors:
            feats = tr.fu if p.track == "U" else tr.fv
            assert feats is not None
            z = (feats[fold == f, :, p.stage] - np.array(p.mean)) / np.array(p.scale)
            held[p.track][fold == f, :, p.stage] = z @ np.array(p.coef) + p.intercept
    for name, feats, target, names in tracks:
        for si in range(min(2, len(tr.stages))):
            rows = tr.avail[:, si]
            x = feats[rows, :, si].reshape(-1, feats.shape[-1])
            y = target[rows, :, si].reshape(-1)
            table: dict[str, Any] = dict(auroc_table(x.tolist(), y.tolist(), names))
            a = auroc(held[name][rows, :, si].reshape(-1).tolist(), y.astype(int).tolist())
            table["predictor (cross-fitted)"] = None if a is None else round(a, 4)
            out[f"{name}@{tr.stages[si]}"] = table
    return out


def fit_plan(questions: Sequence[CalQuestion], costs: Costs, *, model: str,
             model_sha256: str | None, verifier: str | None, unit: str = "flops",
             stages: Sequence[int] | None = None, folds: int = 10, orders: int = 32,
             seed: int = 0, bins: int = 5, runs: Sequence[str] = (),
             effort_samples: tuple[float, float, float] | None = None,
             races: bool = False,
             on_step: Callable[[int, int], None] | None = None) -> Plan:
    """The plan fitted on every question, with the cross-fitted frontier and signal report;
    ``races``: races are candidates too (off by default: on AIME's 27 training questions
    a model they made the choice noisier). ``on_step(done, steps)`` follows the fit on all
    questions and then each fold's.

    Example:
        >>> qs = [CalQuestion(str(i), (0, 1, 0, 0), (True, False), (10,) * 4, (8,) * 4,
        ...                   (False,) * 4) for i in range(4)]
        >>> p = fit_plan(qs, Costs(), model="m", model_sha256=None, verifier=None,
        ...              unit="tokens", folds=2, orders=4)
        >>> p.stages, p.points[-1].u[0][0] in ("majority", "sample")
        ((1, 2, 3, 4), True)
    """
    check_currency(unit)
    if not questions:
        raise ConfigError("no labelled calibration questions: give runs with gold answers")
    n_max = max(q.n for q in questions)
    stages = tuple(stages or default_stages(n_max))
    tr = trajectories(questions, stages, orders=orders, seed=seed, races=races)
    every = np.ones(len(questions), dtype=bool)
    fitted = fit_predictors(tr, every, bins)
    found = candidates(tr, fitted, every, costs, unit, bins=bins, seed=seed)
    if on_step is not None:
        on_step(1, folds + 1)
    worth = {u: (sample_worth(tr, every, costs, u) if costs.per_token(u)[0] > 0 else 0.0)
             for u in CURRENCY_UNITS}
    vworth = {u: float((tr.vtok[:, :, 0].mean() / stages[0]) * costs.per_token(u)[1])
              for u in CURRENCY_UNITS}
    budgets = [m * worth[unit] for m in BUDGET_MULTIPLES if m <= n_max]
    held = cross_fit(questions, costs, budgets, unit=unit, stages=stages, folds=folds,
                     orders=orders, seed=seed, bins=bins, tr=tr,
                     on_fold=None if on_step is None else
                     lambda done, total: on_step(done + 1, total + 1))
    if effort_samples is not None:
        efforts = {k: m * worth[unit] for k, m in zip(EFFORTS, effort_samples, strict=True)}
    else:
        efforts = {k: c.upper(unit) for k, c in effort_choice(found, unit).items()}
    kept: list[Point] = []
    for cand in sorted(found, key=lambda c: (c.upper(unit), -c.accuracy)):
        if kept and cand.accuracy <= kept[-1].accuracy + 1e-12:
            continue  # dominated: costs more for no more (held-out) accuracy
        kept.append(cand.point())
    return Plan(
        model=model, model_sha256=model_sha256, verifier=verifier, currency=unit,
        stages=stages, confidence=tr.confidence, predictors=tuple(fitted.predictors),
        points=tuple(kept),
        efforts=efforts,
        costs={**{f"sample_{u}": worth[u] for u in CURRENCY_UNITS},
               **{f"verify_{u}": vworth[u] for u in CURRENCY_UNITS},
               "policy_flops_per_token": costs.policy_flops,
               "verifier_flops_per_token": costs.verifier_flops},
        signals=signal_report(tr, folds=folds, seed=seed, bins=bins),
        calibration={
            "runs": list(runs), "questions": len(questions), "folds": folds,
            "orders": orders, "seed": seed, "bins": bins, "races": races,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "frontier": [{"budget_samples": round(h.budget / worth[unit], 3),
                          "accuracy": round(sum(h.accuracy) / len(h.accuracy), 4),
                          **{u: round(h.mean(u), 3) for u in (*CURRENCY_UNITS, "samples")},
                          "tokens_by_bin": [None if t is None else round(t, 1)
                                            for t in h.bin_tokens]}
                         for h in held]})
