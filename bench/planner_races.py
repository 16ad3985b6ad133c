"""Races (short-m@k) on stored samples: alone, and as candidates of a plan, cross-fitted.

A race starts ``k`` samples together; the first half to finish vote, the rest are stopped
one token past the moment the last voter ended. Replayed on the same random orders as the
planner's trajectories (32 a question):

1. each race of ``k`` = 4, 8, 10, 12, 16 alone, on every question (a fixed rule, fitted on
   nothing), against majority@8, on the 11 AIME models' samples: accuracy relative to
   majority@80 and tokens as a share of its tokens;
2. ``auto`` at 10% of majority@80's tokens, cross-fitted over 10 folds of each model's 30
   questions as ``bench/planner_acceptance.py`` does, with and without races among its
   candidates (``ttscale plan fit --races``);
3. the same on the default model's GSM8K test 0-99 run (FLOPs, verifier at half a policy
   token), at 2 to 8 samples' worth.

Restore the runs first (see bench/planner_acceptance.py's docstring), then:

    python bench/planner_races.py [--aime 'runs/aime-*'] [--run runs/gsm8k-test-0-39]

About 35 minutes on 2 busy cores; writes bench/results/planner-races.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
from pathlib import Path

import numpy as np

from ttscale.evaluation.replay.auto import calibration_questions, run_costs
from ttscale.evaluation.replay.metrics import prepare, replay
from ttscale.evaluation.runs.records import load_records, question_samples
from ttscale.planner.calibration import CalQuestion, Costs, Trajectories, default_stages
from ttscale.planner.calibration import trajectories as replayed
from ttscale.planner.candidates import candidates, choose, play_race
from ttscale.planner.crossfit import _folds
from ttscale.planner.fit import fit_predictors, play

FIXED = (4, 8, 10, 12, 16)
GSM8K_BUDGETS = (2.0, 3.0, 4.0, 6.0, 8.0)


def held_out(cal: list[CalQuestion], tr: Trajectories, costs: Costs, unit: str,
             budgets: list[float], bins: int, seed: int = 0
             ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per budget, each question's cross-fitted accuracy and cost (in ``unit``) with races
    among the candidates and without: one fit per fold serves both, since a race is only
    ever an extra candidate (without them this is ``cross_fit`` exactly)."""
    fold = _folds(len(cal), 10, seed)
    out = {v: [(np.zeros(len(cal)), np.zeros(len(cal))) for _ in budgets]
           for v in ("without", "with")}
    for f in np.unique(fold):
        train, test = fold != f, np.flatnonzero(fold == f)
        fitted = fit_predictors(tr, train, bins)
        found = candidates(tr, fitted, train, costs, unit, bins=bins, seed=seed)
        for v, pool in (("without", [c for c in found if c.race is None]), ("with", found)):
            for bi, budget in enumerate(budgets):
                pick = choose(pool, budget, unit)
                o = play_race(tr, fitted, pick.race, test, costs) if pick.race else \
                    play(tr, fitted, pick.policy, test, costs)
                out[v][bi][0][test] = o.correct.mean(axis=1)
                out[v][bi][1][test] = o.costs[unit].mean(axis=1)
    return out


def aime(pattern: str) -> dict[str, object]:
    rows: list[tuple[str, dict[str, tuple[float, float]]]] = []
    print("AIME 2024: relative to majority@80's accuracy, at a share of its tokens")
    for d in sorted(glob.glob(pattern)):
        _, recs = load_records(d)
        cal = calibration_questions(recs)
        maj = float(np.mean([replay(prepare(q.samples, q.gold), len(q.samples), 1,
                                    random.Random(0))[0] for q in question_samples(recs)]))
        full = float(np.mean([sum(q.tokens) for q in cal]))
        tr = replayed(cal, default_stages(80), orders=32, seed=0, races=True)
        row: dict[str, tuple[float, float]] = {}
        assert tr.rok is not None and tr.rtok is not None
        for k in FIXED:
            ci = [r[0] for r in tr.races].index(k)
            row[f"race of {k}"] = (float(tr.rok[:, :, ci].mean()) / maj,
                                   float(tr.rtok[:, :, ci].mean()) / full)
        si = tr.stages.index(8)
        row["majority@8"] = (float(tr.maj[:, :, si].mean()) / maj,
                             float(tr.ptok[:, :, si].mean()) / full)
        h = held_out(cal, tr, Costs(), "tokens", [0.1 * full], bins=1)
        for v in ("without", "with"):
            acc, tok = h[v][0]
            row[f"auto {v} races"] = (float(acc.mean()) / maj, float(tok.mean()) / full)
        rows.append((Path(d).name, row))
        print(f"  {Path(d).name}: " + ", ".join(f"{k} {a:.1%} at {t:.1%}"
                                               for k, (a, t) in row.items()), flush=True)
    mean = {k: (float(np.mean([r[k][0] for _n, r in rows])),
                float(np.mean([r[k][1] for _n, r in rows]))) for k in rows[0][1]} \
        if rows else {}
    print("  mean over the models:")
    for name, (a, t) in mean.items():
        print(f"    {name:>18}: {a:.2%} of majority@80's accuracy at {t:.1%} of its tokens")
    return {"models": dict(rows), "mean": mean}


def gsm8k(run: str) -> dict[str, object]:
    _, recs = load_records(run, "sprm")
    costs = run_costs(recs, verifier_fraction=0.5)
    cal = calibration_questions(recs)
    worth = float(np.mean([np.mean(q.tokens) for q in cal])) * costs.policy_flops
    tr = replayed(cal, default_stages(16), orders=32, seed=0, races=True)
    h = held_out(cal, tr, costs, "flops", [m * worth for m in GSM8K_BUDGETS], bins=3)
    print("\nGSM8K test 0-99, default model, auto cross-fitted (FLOPs):")
    rows = []
    for bi, m in enumerate(GSM8K_BUDGETS):
        fig = {v: (float(h[v][bi][0].mean()), float(h[v][bi][1].mean()) / worth)
               for v in ("without", "with")}
        diff = float((h["with"][bi][0] - h["without"][bi][0]).mean())
        rows.append({"budget_samples": m, **fig, "difference": diff})
        print(f"  {m:g} samples' worth: without races {fig['without'][0]:.1%} at "
              f"{fig['without'][1]:.2f}, with {fig['with'][0]:.1%} at {fig['with'][1]:.2f} "
              f"({diff * 100:+.1f} points)", flush=True)
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aime", default="runs/aime-*")
    ap.add_argument("--run", default="runs/gsm8k-test-0-39")
    args = ap.parse_args()
    out = {"aime": aime(args.aime), "gsm8k": gsm8k(args.run)}
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/planner-races.json").write_text(json.dumps(out, indent=1) + "\n")
    print("\nwrote bench/results/planner-races.json")


if __name__ == "__main__":
    main()
