"""How much the planner's GSM8K figures move with settings that should not matter much.

    python bench/planner_sensitivity.py [--bins 2,3,4,5] [--folds 3,5,10,20] [--orders 32]

The same replay as bench/planner_acceptance.py (GSM8K test 0-99, default model, FLOPs with the
SPRM at half a policy token, budgets of 2 to 6 samples' worth, cross-fitted over questions),
repeated with another number of difficulty bins (folds fixed at 10) and another number of
folds (bins fixed at 3). For each setting it prints auto's accuracy minus the upper envelope
of majority@n and weighted-SPRM@n at every budget, and the weakest of those differences
between 2 and 6 samples' worth. The spread across settings is the resolution of the
acceptance's "+3 points at every budget" on 100 questions. Writes
bench/results/planner-sensitivity.json. About a minute a setting on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from planner_acceptance import envelope, fixed

from ttscale.evaluation.replay.auto import calibration_questions, run_costs
from ttscale.evaluation.replay.metrics import mean_ci
from ttscale.evaluation.runs.records import load_records, question_samples
from ttscale.planner.calibration import default_stages, trajectories
from ttscale.planner.crossfit import cross_fit

BUDGETS = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/gsm8k-test-0-39")
    ap.add_argument("--bins", default="2,3,4,5")
    ap.add_argument("--folds", default="3,5,10,20")
    ap.add_argument("--orders", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    _, recs = load_records(args.run, "sprm")
    costs = run_costs(recs, verifier_fraction=0.5)
    pf, vf = costs.policy_flops, costs.verifier_flops
    qs = question_samples(recs)
    cal = calibration_questions(recs)
    worth = float(np.mean([np.mean(q.tokens) for q in cal])) * pf
    ns = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16]
    curves = {"majority": fixed(qs, ns, "majority", pf, vf, 200, args.seed),
              "weighted-SPRM": fixed(qs, ns, "weighted", pf, vf, 200, args.seed)}
    stages = default_stages(16)
    tr = trajectories(cal, stages, orders=args.orders, seed=args.seed)
    settings = [(b, 10) for b in map(int, args.bins.split(","))] + \
        [(3, f) for f in map(int, args.folds.split(",")) if f != 10]
    out: list[dict[str, Any]] = []
    print("auto - envelope at each budget (samples' worth spent), GSM8K test 0-99, FLOPs")
    for bins, folds in settings:
        t = time.time()
        held = cross_fit(cal, costs, [m * worth for m in BUDGETS], unit="flops",
                         stages=stages, folds=folds, orders=args.orders, seed=args.seed,
                         bins=bins, tr=tr)
        points: list[dict[str, float]] = []
        for m, h in zip(BUDGETS, held, strict=True):
            acc = np.array(h.accuracy)
            x = h.mean("flops")
            env = envelope(curves, x)
            if env is None:
                continue
            d = mean_ci(list(acc - env[1]))
            points.append({"budget": m, "spent": x / worth, "accuracy": float(acc.mean()),
                           "diff": d[0], "low": d[1], "high": d[2]})
        inside = [p for p in points if 2.0 <= p["spent"] <= 6.0]
        weakest = min(inside, key=lambda p: p["diff"]) if inside else None
        out.append({"bins": bins, "folds": folds, "points": points, "weakest": weakest})
        shown = ", ".join(f"{p['diff']:+.1%} ({p['spent']:.2f})" for p in points)
        low = "-" if weakest is None else \
            f"{weakest['diff']:+.1%} at {weakest['spent']:.2f}"
        print(f"bins {bins}, folds {folds:>2}: {shown}; weakest in 2-6: {low} "
              f"[{time.time() - t:.0f} s]", flush=True)
    by_budget = {m: [p["diff"] for s in out for p in s["points"] if p["budget"] == m]
                 for m in BUDGETS}
    print("spread across settings, by budget: " + ", ".join(
        f"{m:g}: {min(v):+.1%} to {max(v):+.1%}" for m, v in by_budget.items() if v))
    clears = [s for s in out if s["weakest"] is not None and s["weakest"]["diff"] >= 0.03]
    print(f"settings clearing +3 at every budget between 2 and 6 samples' worth: "
          f"{len(clears)} of {len(out)}")
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/planner-sensitivity.json").write_text(json.dumps(out, indent=1) + "\n")
    print("wrote bench/results/planner-sensitivity.json")


if __name__ == "__main__":
    main()
