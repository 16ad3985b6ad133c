"""Spending less than majority@16 on a stored GSM8K run: adaptive N, DeepConf, DeepPrune.

Reads a ``ttscale eval`` run (default model, GSM8K test questions, 16 samples per question
stored with their top-5 log-probabilities) and replays every method on the same samples, so
the differences are the methods' alone. Per method: accuracy and its change against
majority@16 (paired over questions, with a 95% interval), tokens per question and the share
of majority@16's tokens saved. Random-order methods are averaged over ``--orders`` orders.

The baseline is majority@16 averaged over the same orders: all 16 samples vote, and a tie
goes to the class drawn first in the order, as it does for the adaptive rules, which see
the samples in those orders. (Sample-index order would break every tie the same way and
make the comparison a coin toss on tied questions.) The sample-order figure is kept in the
JSON as ``majority_sample_order``.

Adaptive N: the published Bayes-factor rule at a sweep of thresholds, our budgeted default,
and the threshold fitted without peeking: on each half of the questions, the cheapest
threshold of the sweep whose accuracy stays within 1 point of majority@16 there, scored on
the other half.

DeepPrune's threshold is also calibrated without peeking: fitted on one half of the
questions (pairs of 64-token prefixes, precision 0.9), scored on the other, and vice versa.

    python bench/gsm8k_efficiency.py runs/gsm8k-test-0-39 [--orders 20] [--no-embedding]

Writes bench/results/gsm8k_efficiency.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.aggregation.confidence import ConfidenceParams
from ttscale.aggregation.pruning import PruneParams, calibrate
from ttscale.aggregation.stopping import (
    BayesFactorRule,
    BudgetedBayesFactorRule,
    FixedRule,
    StoppingRule,
    rule_label,
)
from ttscale.evaluation.replay.adaptive import orders_for, replay_order
from ttscale.evaluation.replay.confidence import prepare_confidence, replay_confidence
from ttscale.evaluation.replay.metrics import mean_ci, prepare, replay
from ttscale.evaluation.replay.prune import PruneQuestion, prepare_prune, replay_prune
from ttscale.evaluation.runs.records import QuestionRecord, load_records

HERE = Path(__file__).resolve().parent
N = 16
THRESHOLDS = (3.0, 5.0, 8.0, 10.0, 20.0, 50.0, 100.0)  # the Bayes-factor sweep


def paired(per: Sequence[tuple[float, float]],
           base: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Accuracy and tokens of a method against the baseline, paired over questions."""
    acc = [a for a, _ in per]
    diff = [a - b for (a, _), (b, _) in zip(per, base, strict=True)]
    tokens = sum(t for _, t in per) / len(per)
    base_tokens = sum(t for _, t in base) / len(base)
    d, low, high = mean_ci(diff)
    return {"accuracy": sum(acc) / len(acc), "accuracy_change": d, "change_ci_low": low,
            "change_ci_high": high, "tokens": tokens, "tokens_saved": 1 - tokens / base_tokens}


def adaptive(records: Sequence[QuestionRecord], rule: StoppingRule, orders: int,
             seed: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    out = []
    for r in records:
        p = prepare([(t.answer, t.tokens, None) for t in r.traces], r.gold)
        outs = [replay_order(p, rule, o) for o in orders_for(len(r.traces), orders, rng)]
        out.append((sum(o.correct for o in outs) / orders, sum(o.tokens for o in outs) / orders))
    return out


def fitted_threshold(per_rule: dict[float, list[tuple[float, float]]],
                     base: Sequence[tuple[float, float]],
                     tolerance: float = 0.01) -> tuple[list[tuple[float, float]], list[float]]:
    """The Bayes-factor threshold fitted on one half of the questions (the cheapest whose
    accuracy there is within ``tolerance`` of the baseline's; else the most careful) and
    scored on the other half, both ways round."""
    half = len(base) // 2
    out: list[tuple[float, float]] = []
    chosen = []
    for fit, test in ((range(half, len(base)), range(half)),
                      (range(half), range(half, len(base)))):
        def mean(rows: Sequence[tuple[float, float]], idx: range, k: int) -> float:
            return sum(rows[i][k] for i in idx) / max(len(idx), 1)

        ok = [t for t in THRESHOLDS
              if mean(per_rule[t], fit, 0) >= mean(base, fit, 0) - tolerance]
        pick = min(ok, key=lambda t: mean(per_rule[t], fit, 1)) if ok else max(THRESHOLDS)
        chosen.append(pick)
        out += [per_rule[pick][i] for i in test]
    return out, chosen  # the first fold scores the first half: question order already


def halves_calibrated(qs: Sequence[PruneQuestion], params: PruneParams, orders: int,
                      seed: int) -> tuple[list[tuple[float, float]], list[float]]:
    """DeepPrune with the threshold fitted on the other half of the questions."""
    half = len(qs) // 2
    folds = [(list(qs[half:]), list(qs[:half])), (list(qs[:half]), list(qs[half:]))]
    per: list[tuple[float, float]] = []
    cuts = []
    for train, test in folds:
        sims, same = [], []
        for q in train:
            for i, j in itertools.combinations(range(len(q.classes)), 2):
                sims.append(float(q.similarity[i, j]))
                same.append(q.classes[i] == q.classes[j] and q.classes[i] >= 0)
        cut = calibrate(sims, same, precision=0.9)
        cuts.append(cut)
        fitted = PruneParams(prefix=params.prefix, similarity=params.similarity,
                             ngram=params.ngram, threshold=cut)
        per += replay_prune(test, fitted, N, orders=orders, seed=seed)[1]
    return per, cuts  # the first fold scores the first half: question order already


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-embedding", action="store_true")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "gsm8k_efficiency.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    _settings, records = load_records(args.run_dir)
    records = [QuestionRecord(r.id, r.question, r.gold, r.traces[:N]) for r in records
               if len(r.traces) >= N]
    if not records:
        print(f"{args.run_dir} has no question with {N} samples yet", file=sys.stderr)
        return 2
    in_sample_order = []
    for r in records:
        p = prepare([(t.answer, t.tokens, None) for t in r.traces], r.gold)
        in_sample_order.append(replay(p, N, 1, random.Random(0)))
    base = adaptive(records, FixedRule(n_max=N), args.orders, args.seed)
    rows: list[dict[str, Any]] = [{"method": f"majority@{N}", **paired(base, base)}]

    def add(method: str, per: Sequence[tuple[float, float]], **extra: Any) -> None:
        rows.append({"method": method, **paired(per, base), **extra})

    add(f"adaptive_majority[{rule_label(BudgetedBayesFactorRule(n_max=N))}]",
        adaptive(records, BudgetedBayesFactorRule(n_max=N), args.orders, args.seed))
    per_rule = {t: adaptive(records, BayesFactorRule(threshold=t, n_max=N), args.orders,
                            args.seed) for t in THRESHOLDS}
    for t, per in per_rule.items():
        add(f"adaptive_majority[{rule_label(BayesFactorRule(threshold=t, n_max=N))}]", per)
    per, chosen = fitted_threshold(per_rule, base)
    add("adaptive_majority[bayes_factor, threshold fitted on the other half]", per,
        thresholds=chosen)
    conf = prepare_confidence(records)
    for eta in (0.1, 0.9):
        cp = ConfidenceParams(eta=eta)
        add(f"deepconf[eta={eta}]", replay_confidence(conf, cp, N)[1])
        add(f"deepconf_online[eta={eta}]", replay_confidence(
            conf, cp, N, mode="online", orders=args.orders, seed=args.seed)[1])
    windows: list[dict[str, Any]] = []
    for window in (16, 32, 64, 128):
        for eta in (0.1, 0.9):
            cp = ConfidenceParams(eta=eta, window=window)
            off = paired(replay_confidence(conf, cp, N)[1], base)
            on = paired(replay_confidence(conf, cp, N, mode="online", orders=args.orders,
                                          seed=args.seed)[1], base)
            windows.append({"window": window, "eta": eta, "offline": off, "online": on})
    calibrated = []
    for sim in ("jaccard",) + (() if args.no_embedding else ("embedding",)):
        params = PruneParams(similarity=sim)
        qs = prepare_prune(records, params)
        add(f"deepprune[{sim},prefix=64,threshold={params.cut:g}]",
            replay_prune(qs, params, N, orders=args.orders, seed=args.seed)[1])
        per, cuts = halves_calibrated(qs, params, args.orders, args.seed)
        calibrated.append({"similarity": sim, "thresholds": cuts})
        add(f"deepprune[{sim},prefix=64,calibrated on the other half]", per, thresholds=cuts)
    print(f"{len(records)} questions with {N} samples, {args.orders} orders per question")
    print(f"{'method':68} {'accuracy':>8} {'change (95% CI)':>24} {'tokens':>8} {'saved':>6}")
    for row in rows:
        ci = f"{row['accuracy_change']:+.3f} ({row['change_ci_low']:+.3f}, " \
             f"{row['change_ci_high']:+.3f})"
        print(f"{row['method']:68} {row['accuracy']:8.3f} {ci:>24} {row['tokens']:8,.0f} "
              f"{row['tokens_saved']:6.1%}")
    print("DeepConf window (eta: offline change / online change, online saved):")
    for w in windows:
        print(f"  window {w['window']:3} eta {w['eta']}: {w['offline']['accuracy_change']:+.3f}"
              f" / {w['online']['accuracy_change']:+.3f}, {w['online']['tokens_saved']:.1%}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"run": str(args.run_dir), "questions": len(records),
                                     "n": N, "orders": args.orders, "seed": args.seed,
                                     "majority_sample_order": paired(in_sample_order, base),
                                     "rows": rows, "deepconf_windows": windows,
                                     "deepprune_calibration": calibrated}, indent=1),
                         encoding="utf-8")
    print(f"wrote {args.json} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
