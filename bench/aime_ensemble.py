"""Ensembles of the 11 AIME 2024 models, cross-validated over the 30 problems.

Each model is a source; its vote on a problem is the shares of its answers among the samples
it drew (``ttscale.aggregation.ensemble``), either all of its first 80 samples or as many as
our adaptive rule (``budgeted``) draws in a random order. Every method is scored by
leave-one-out over problems (weights fitted on the other 29); ``best_hindsight`` is the
reference that sees every label. Tokens per problem count only the sources with weight > 0.
With adaptive votes the table is the mean over ``--orders`` random orders.

    python bench/aime_ensemble.py [--dir ../shared/samples/aime2024] [--orders 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from ttscale.aggregation.ensemble import METHODS, QuestionVotes, cross_validate, question_votes
from ttscale.aggregation.stopping import BudgetedBayesFactorRule, FixedRule, StoppingRule
from ttscale.answers import equivalent
from ttscale.evaluation.replay.adaptive import orders_for, replay_order
from ttscale.evaluation.replay.metrics import Prepared, prepare
from ttscale.evaluation.runs.importers import ImportedQuestion, import_boinf

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE.parents[1] / "shared" / "samples" / "aime2024"
POOL = 80


def _same(gold: str, answer: str) -> bool:
    """Whether a drawn answer equals the gold one (bound per question with partial)."""
    return equivalent(answer, gold)


def votes(data: dict[str, list[ImportedQuestion]], prepared: dict[str, list[Prepared]],
          rule: StoppingRule, rng: random.Random | None) -> list[QuestionVotes]:
    """Per problem, each model's drawn answers under ``rule`` (in a random order when
    ``rng`` is given, else in stored order) as a QuestionVotes."""
    models = list(data)
    out = []
    for k, first in enumerate(data[models[0]]):
        drawn, tokens = [], []
        for m in models:
            q = data[m][k]
            pool = q.samples[:POOL]
            p = prepared[m][k]
            order = orders_for(len(pool), 1, rng)[0] if rng else list(range(len(pool)))
            o = replay_order(p, rule, order)
            drawn.append([pool[i][0] for i in order[: o.drawn]])
            tokens.append(o.tokens)
        gold = first.gold
        out.append(question_votes(first.id, partial(_same, gold), drawn, tokens))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "aime_ensemble.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    files = sorted(args.dir.glob("*.jsonl"))
    if not files:
        print(f"no .jsonl files in {args.dir}", file=sys.stderr)
        return 2
    data = {f.stem: import_boinf(f) for f in files}
    models = list(data)
    prepared = {m: [prepare([(a, t, None) for a, t in q.samples[:POOL]], q.gold) for q in qs]
                for m, qs in data.items()}
    full = votes(data, prepared, FixedRule(n_max=POOL), None)
    singles = [cross_validate(full, "best_hindsight")]
    per_model = {m: sum(q.correct[t] for q in full if (t := q.top(i)) is not None) / len(full)
                 for i, m in enumerate(models)}
    best = max(per_model, key=lambda m: per_model[m])
    best_tokens = sum(q.tokens[models.index(best)] for q in full) / len(full)
    print(f"{len(models)} models x {len(full)} problems; best single model {best}: "
          f"majority@{POOL} {per_model[best]:.3f} at {best_tokens:,.0f} tokens/problem")
    oracle = sum(any(q.correct[t] for i in range(len(models)) if (t := q.top(i)) is not None)
                 for q in full) / len(full)
    print(f"any-model oracle (some model's majority is right): {oracle:.3f}")
    settings: list[tuple[str, list[list[QuestionVotes]]]] = [("all 80 samples", [full])]
    rng = random.Random(args.seed)
    adaptive = BudgetedBayesFactorRule(n_max=POOL)
    settings.append((f"adaptive ({adaptive.name})",
                     [votes(data, prepared, adaptive, rng) for _ in range(args.orders)]))
    rows: list[dict[str, Any]] = []
    print(f"{'votes':24} {'method':15} {'accuracy':>8} {'tokens/problem':>15} "
          f"{'x best@80':>9}  weights (mean over folds, top 3)")
    for setting, runs in settings:
        for method in METHODS:
            results = [cross_validate(qs, method) for qs in runs]
            acc = sum(r.accuracy for r in results) / len(results)
            tok = sum(r.mean_tokens for r in results) / len(results)
            mean_w: dict[str, float] = dict.fromkeys(models, 0.0)
            for r in results:
                for w in r.weights:
                    total = float(sum(w)) or 1.0
                    for m, x in zip(models, w, strict=True):
                        mean_w[m] += x / total / len(r.weights) / len(results)
            heaviest = sorted(mean_w.items(), key=lambda kv: -kv[1])[:3]
            top = ", ".join(f"{m[:14]} {x:.2f}" for m, x in heaviest if x > 0)
            print(f"{setting:24} {method:15} {acc:8.3f} {tok:15,.0f} {tok / best_tokens:9.2f}"
                  f"  {top if method not in ('equal', 'second_order') else 'equal'}")
            rows.append({"votes": setting, "method": method, "accuracy": acc,
                         "tokens_per_problem": tok, "tokens_vs_best_at_80": tok / best_tokens,
                         "mean_weights": dict(mean_w)})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"orders": args.orders, "seed": args.seed, "best": best,
                                     "best_accuracy": per_model[best],
                                     "best_tokens": best_tokens, "oracle": oracle,
                                     "per_model": per_model, "rows": rows,
                                     "singles": [s.accuracy for s in singles]}, indent=1),
                         encoding="utf-8")
    print(f"wrote {args.json} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
