"""``auto`` replayed on stored samples, cross-fitted over questions.

A run's records become the planner's calibration questions (answers merged into classes by
math-verify, each class labelled against the gold answer; the verifier's scores where every
sample has one; DeepConf confidences where every sample kept log-probabilities). Each
question is then played by a plan fitted on the other folds only
(:func:`ttscale.planner.crossfit.cross_fit`), over random orders of its samples, with every
drawn sample's tokens and every verification counted. An import run (no scores) gets a
sample-allocation plan: when to stop, never a verifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.evaluation.progress import ProgressFn, report
from ttscale.evaluation.replay.metrics import CurvePoint, by_bin, difficulty, mean_ci, prepare
from ttscale.evaluation.runs.records import QuestionRecord
from ttscale.planner.calibration import CalQuestion, Costs, default_stages
from ttscale.planner.crossfit import HeldOut, cross_fit
from ttscale.planner.plan import Plan
from ttscale.planner.signals import confidence_of

# predicted-difficulty bins of a plan fitted or replayed from runs: hard, medium, easy
PLAN_BINS = 3


def calibration_questions(records: Sequence[QuestionRecord], *,
                          use_scores: bool = True) -> list[CalQuestion]:
    """The records as calibration questions; scores only when every sample of every
    question has one (a verifier that read them all), else none.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> t = [TraceRecord(0, 0, "", "4", 10, 20), TraceRecord(0, 1, "", "5", 10, 30)]
        >>> q = calibration_questions([QuestionRecord("q", "2+2?", "4", tuple(t))])[0]
        >>> q.classes, q.correct, q.tokens, q.scores
        ((0, 1), (True, False), (30, 40), None)
    """
    scored = use_scores and bool(records) and all(
        t.score is not None for r in records for t in r.traces)
    confident = bool(records) and all(t.logprobs for r in records for t in r.traces)
    out = []
    for r in records:
        if not r.traces:
            continue
        p = prepare([(t.answer, t.tokens, t.score) for t in r.traces], r.gold)
        out.append(CalQuestion(
            r.id, p.classes, p.correct, tuple(t.tokens for t in r.traces),
            tuple(t.completion_tokens for t in r.traces),
            tuple(t.finish_reason == "length" for t in r.traces),
            r.traces[0].prompt_tokens,
            tuple(float(t.score or 0.0) for t in r.traces) if scored else None,
            tuple(t.verifier_tokens for t in r.traces) if scored else (),
            tuple(float(confidence_of(t.logprobs) or 0.0) for t in r.traces)
            if confident else None))
    if not out:
        raise ConfigError("the run has no stored samples to replay auto on: generate or "
                          "import samples first")
    return out


def run_costs(records: Sequence[QuestionRecord], *,
              verifier_fraction: float | None = None) -> Costs:
    """FLOPs and seconds per token of the policy (from the run's stored result rows) and of
    the verifier (from its stored scores; ``verifier_fraction`` instead prices a verifier
    token at that fraction of a policy token, e.g. 0.5 for a head reading half the layers).

    Example:
        >>> run_costs([]).policy_flops
        0.0
    """
    rows = [x for r in records for x in r.results if x.strategy == "majority"]
    tokens = sum(x.usage.total_tokens for x in rows)
    pf = sum(x.usage.flops for x in rows) / tokens if tokens else 0.0
    ps = sum(x.usage.seconds for x in rows) / tokens if tokens else 0.0
    vt = sum(t.verifier_tokens for r in records for t in r.traces if t.score is not None)
    vf = (sum(t.verifier_flops for r in records for t in r.traces if t.score is not None) / vt
          if vt else 0.0)
    if verifier_fraction is not None:
        if not 0 <= verifier_fraction < math.inf:
            raise ConfigError(f"the verifier's cost fraction must be a finite number >= 0, got "
                              f"{verifier_fraction:g}")
        vf = pf * verifier_fraction
    return Costs(pf, vf, ps, ps * (verifier_fraction if verifier_fraction is not None else 1.0))


def budgets_for(questions: Sequence[CalQuestion], ns: Sequence[int], costs: Costs,
                unit: str) -> list[float]:
    """The mean cost per question of majority at each ``n`` (no verifier), in ``unit``: the
    budgets at which ``auto`` is compared with it.

    Example:
        >>> q = CalQuestion("a", (0, 0), (True,), (10, 30), (5, 5), (False, False))
        >>> budgets_for([q], [1, 2], Costs(), "tokens")
        [20.0, 40.0]
    """
    per, _ = costs.per_token(unit)
    out = []
    for n in ns:
        total = [sum(q.tokens) / q.n * min(n, q.n) * per for q in questions]
        out.append(sum(total) / len(total))
    return out


def auto_replay(records: Sequence[QuestionRecord], budgets: Sequence[float], *,
                unit: str = "tokens", n_max: int | None = None, resamples: int = 32,
                seed: int = 0, folds: int = 10, use_scores: bool = True,
                verifier_fraction: float | None = None) -> list[HeldOut]:
    """``auto`` at each mean budget (in ``unit``), cross-fitted over the questions.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> drawn = [tuple(TraceRecord(0, k, "", a, 10, 20) for k, a in enumerate(answers))
        ...          for answers in ("4454", "5453")]
        >>> records = [QuestionRecord(f"q{i}", "2+2?", "4", drawn[i % 2]) for i in range(6)]
        >>> held = auto_replay(records, [40.0, 80.0], folds=2, resamples=4)
        >>> [(h.budget, sum(h.costs["tokens"]) / len(h.accuracy)) for h in held]
        [(40.0, 30.0), (80.0, 30.0)]
    """
    questions = calibration_questions(records, use_scores=use_scores)
    costs = run_costs(records, verifier_fraction=verifier_fraction)
    top = min(n_max or max(q.n for q in questions), max(q.n for q in questions))
    return cross_fit(questions, costs, budgets, unit=unit, stages=default_stages(top),
                     folds=folds, orders=resamples, seed=seed, bins=PLAN_BINS)


def auto_curve(records: Sequence[QuestionRecord], ns: Sequence[int], *,
               budgets: Sequence[float] | None = None, unit: str = "tokens",
               resamples: int = 32, seed: int = 0, folds: int = 10,
               use_scores: bool = True,
               verifier_fraction: float | None = None,
               progress: ProgressFn | None = None) -> list[CurvePoint]:
    """Curve points of ``auto``: one per ``n`` of ``ns``, at the budget of majority@n (or
    at ``budgets``, mean per question in ``unit``), at most ``max(ns)`` samples a question;
    accuracy with its 95% interval over questions, mean tokens and FLOPs. ``progress``
    hears of each fold fitted.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> rec = [QuestionRecord(str(i), "?", "4", tuple(TraceRecord(0, j, "", a, 5, 10)
        ...        for j, a in enumerate(["4", "4", "5", "4"]))) for i in range(4)]
        >>> p = auto_curve(rec, [4], folds=2, resamples=4)[0]
        >>> p.strategy, p.n, p.accuracy, p.mean_tokens <= 60
        ('auto', 4, 1.0, True)
    """
    questions = calibration_questions(records, use_scores=use_scores)
    costs = run_costs(records, verifier_fraction=verifier_fraction)
    if budgets is None:
        budgets = budgets_for(questions, ns, costs, unit)
    if len(budgets) != len(ns):
        raise ConfigError(f"give one budget per n: {len(budgets)} budgets for {len(ns)} n")

    def fold_done(done: int, total: int) -> None:
        report(progress, "auto", "auto: cross-fitting", done=done, total=total, unit="folds")

    held = cross_fit(questions, costs, budgets, unit=unit,
                     stages=default_stages(min(max(ns), max(q.n for q in questions))),
                     folds=folds, orders=resamples, seed=seed, bins=PLAN_BINS,
                     on_fold=fold_done)
    bins = [difficulty(sum(q.correct[c] for c in q.classes if c >= 0) / q.n)
            for q in questions]
    points = []
    for n, h in zip(ns, held, strict=True):
        m, low, high = mean_ci(list(h.accuracy))
        per_bin, bin_tokens = by_bin(h.accuracy, h.costs["tokens"], bins)
        flops = h.mean("flops")
        points.append(CurvePoint("auto", n, m, low, high, h.mean("tokens"), len(questions),
                                 per_bin, bin_tokens, flops if flops > 0 else None,
                                 predicted_tokens=h.bin_tokens,
                                 predicted_share=h.bin_share))
    return points


def fit_from_runs(run_dirs: Sequence[str], *, verifier: str | None = None,
                  unit: str = "flops", verifier_fraction: float | None = None,
                  folds: int = 10, orders: int = 32, seed: int = 0,
                  bins: int = PLAN_BINS, races: bool = False,
                  progress: ProgressFn | None = None) -> Plan:
    """A plan fitted from stored runs of one model (eval runs and imported sample sets);
    several runs are merged by question id and must share questions. ``races``: races
    (the first half of ``k`` samples to finish vote) are candidates too.

    Example:
        >>> fit_from_runs([])
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: give at least one run directory to fit a plan from
    """
    from ttscale.evaluation.runs.records import distinct_runs, load_records
    from ttscale.planner.crossfit import fit_plan

    if not run_dirs:
        raise ConfigError("give at least one run directory to fit a plan from")
    distinct_runs(run_dirs, "a plan merges the samples of different runs")
    merged: dict[str, QuestionRecord] = {}
    shas: set[str] = set()
    model = ""
    ids: list[set[str]] = []
    used_verifier: str | None = None
    for d in run_dirs:
        settings, records = load_records(d, verifier)
        sha = settings.get("model_sha256")
        if sha:
            shas.add(str(sha))
        model = model or str(settings.get("model") or settings.get("source") or Path(d).name)
        ids.append({r.id for r in records})
        if any(t.score is not None for r in records for t in r.traces):
            used_verifier = verifier or _run_verifier(d, settings)
        for r in records:
            if r.id in merged:
                old = merged[r.id]
                merged[r.id] = replace(old, traces=old.traces + r.traces,
                                       results=old.results + r.results)
            else:
                merged[r.id] = r
    if len(shas) > 1:
        raise ConfigError(f"the runs come from {len(shas)} different models (SHA-256 "
                          f"{', '.join(sorted(s[:12] + '...' for s in shas))}): fit one plan "
                          "per model")
    if len(ids) > 1 and not set.intersection(*ids):
        raise ConfigError("the runs share no questions: fit from runs of the same questions "
                          "(a run extended with more samples or scored by a verifier)")
    records = [r for r in merged.values() if r.traces]
    if not records or not any(r.gold.strip() for r in records):
        raise ConfigError("the runs have no labelled samples (gold answers): fit a plan from "
                          "runs of a dataset with answers")
    questions = calibration_questions(records, use_scores=used_verifier is not None)
    costs = run_costs(records, verifier_fraction=verifier_fraction)
    if unit == "flops" and costs.policy_flops <= 0:
        raise ConfigError("the runs record no FLOPs (samples imported from elsewhere): fit "
                          "with --currency tokens")
    scored = questions[0].scores is not None
    report(progress, "plan", f"fitting on {len(questions)} questions, then cross-fitting over "
           f"{folds} folds...")

    def step(done: int, total: int) -> None:
        report(progress, "plan", "fitting", done=done, total=total, unit="fits")

    return fit_plan(questions, costs, model=model, model_sha256=next(iter(shas), None),
                    verifier=used_verifier if scored else None, unit=unit, folds=folds,
                    orders=orders, seed=seed, bins=bins, runs=[str(d) for d in run_dirs],
                    races=races, on_step=step)


def _run_verifier(run_dir: str, settings: dict[str, Any]) -> str | None:
    from ttscale.evaluation.runs.store import Store

    with Store.open(run_dir, settings) as store:
        names = store.verifiers()
    return names[0] if names else None
