"""Search and sequential strategies against majority voting at the same tokens, one run.

Reads a ``ttscale eval`` run in which strategies such as ``beam``, ``dvts``, ``ab_mcts`` and
``rsa`` were solved question by question (their rows in the store's ``results`` table, with
every token they spent, verifier included) beside the independent samples that majority
voting replays. For each solved strategy and ``n``: its accuracy and mean tokens per
question, and majority voting's accuracy at the same mean tokens on the same questions,
interpolated (in log tokens) between the two sample counts whose replayed cost brackets it;
the difference is paired over questions with a 95% interval. A budget beyond the stored
samples is compared with majority at all of them, and says so.

    python bench/search_vs_sampling.py runs/gsm8k-test-0-39 [--strategies beam,dvts]

Writes bench/results/search_vs_sampling.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.evaluation.metrics import mean_ci, prepare, replay
from ttscale.evaluation.records import QuestionRecord, load_records

HERE = Path(__file__).resolve().parent
REPLAYED = {"majority", "best_of_n", "weighted_best_of_n", "pass"}


def majority_curve(records: Sequence[QuestionRecord], k_max: int, resamples: int,
                   seed: int) -> list[list[tuple[float, float]]]:
    """Per question, majority's (accuracy, tokens) at k = 1..k_max samples."""
    rng = random.Random(seed)
    out = []
    for r in records:
        p = prepare([(t.answer, t.tokens, None) for t in r.traces[:k_max]], r.gold)
        out.append([replay(p, k, resamples, rng) for k in range(1, k_max + 1)])
    return out


def matched(curve: Sequence[Sequence[tuple[float, float]]], target: float
            ) -> tuple[list[float], float, str]:
    """Majority's per-question accuracy at mean tokens ``target``, the sample count it
    corresponds to (fractional between two counts) and a note when out of range."""
    k_max = len(curve[0])
    mean_tokens = [sum(q[k][1] for q in curve) / len(curve) for k in range(k_max)]
    if target <= mean_tokens[0]:
        return [q[0][0] for q in curve], 1.0, "below one sample's tokens"
    if target >= mean_tokens[-1]:
        return [q[-1][0] for q in curve], float(k_max), f"above {k_max} samples' tokens"
    k = next(i for i in range(k_max - 1) if mean_tokens[i] <= target <= mean_tokens[i + 1])
    w = (math.log(target) - math.log(mean_tokens[k])) / (
        math.log(mean_tokens[k + 1]) - math.log(mean_tokens[k]))
    return [(1 - w) * q[k][0] + w * q[k + 1][0] for q in curve], k + 1 + w, ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--strategies", default=None,
                    help="comma list of solved strategies (default: every one in the run)")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "search_vs_sampling.json")
    args = ap.parse_args()
    _settings, records = load_records(args.run_dir)
    wanted = set(args.strategies.split(",")) if args.strategies else None
    seeds: dict[tuple[str, int], dict[str, list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list))
    for r in records:
        for res in r.results:
            if res.strategy in REPLAYED or (wanted and res.strategy not in wanted):
                continue
            spent = res.usage.prompt_tokens + res.usage.completion_tokens
            seeds[(res.strategy, res.n)][r.id].append((float(bool(res.correct)),
                                                       float(spent)))
    # several seeds of a question: their mean
    groups = {key: {q: (sum(a for a, _ in v) / len(v), sum(t for _, t in v) / len(v))
                    for q, v in per.items()} for key, per in seeds.items()}
    if not groups:
        print(f"{args.run_dir} has no solved search or sequential strategy results yet",
              file=sys.stderr)
        return 2
    by_id = {r.id: r for r in records}
    rows: list[dict[str, Any]] = []
    print(f"{'strategy':28} {'n':>3} {'qs':>3} {'accuracy':>8} {'tokens':>8} "
          f"{'majority':>8} {'at k':>5} {'difference (95% CI)':>26}")
    for (name, n), per in sorted(groups.items()):
        ids = [q for q in per if len(by_id[q].traces) > 0]
        k_max = min(len(by_id[q].traces) for q in ids)
        curve = majority_curve([by_id[q] for q in ids], k_max, args.resamples, args.seed)
        acc = [per[q][0] for q in ids]
        tokens = sum(per[q][1] for q in ids) / len(ids)
        maj, k, note = matched(curve, tokens)
        d, low, high = mean_ci([a - b for a, b in zip(acc, maj, strict=True)])
        row = {"strategy": name, "n": n, "questions": len(ids),
               "accuracy": sum(acc) / len(acc), "tokens": tokens,
               "majority_accuracy": sum(maj) / len(maj), "majority_k": k,
               "difference": d, "ci_low": low, "ci_high": high, "note": note}
        rows.append(row)
        print(f"{name:28} {n:3} {len(ids):3} {row['accuracy']:8.3f} {tokens:8,.0f} "
              f"{row['majority_accuracy']:8.3f} {k:5.1f} "
              f"{d:+.3f} ({low:+.3f}, {high:+.3f}) {note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"run": str(args.run_dir), "resamples": args.resamples,
                                     "rows": rows}, indent=1), encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
