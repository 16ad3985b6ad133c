"""Adaptive N on the shared AIME 2024 sample sets: accuracy kept against tokens spent.

For each of the 11 models, each of the 30 problems keeps its first 80 stored samples (the pool;
majority@80 is the exact vote over them). A rule replays ``--orders`` random permutations of
the pool per problem (``ttscale.evaluation.replay.adaptive``). Per model: accuracy relative to
majority@80 and tokens as a share of majority@80's; the table averages both over models.

Rows: fixed-N majority (several N), the published Bayes-factor rule (thresholds 10 and 100),
and ours (``budgeted``) at its defaults. Then the protocol that chose those defaults:
leave-one-model-out over a small grid: for each model, pick on the other 10 the grid point with
the least token share among those keeping >= 99.5% of majority@80 accuracy (the most accurate
if none does), and score it on the held-out model. Writes the curve (accuracy vs token share)
to a PNG and every figure to bench/results/aime_adaptive.json.

    python bench/aime_adaptive.py [--dir ../shared/samples/aime2024] [--orders 20]
        [--models 2] [--png bench/results/aime_adaptive.png] [--no-lomo]
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

from ttscale.aggregation.stopping import (
    BayesFactorRule,
    BudgetedBayesFactorRule,
    FixedRule,
    StoppingRule,
    rule_label,
)
from ttscale.evaluation.replay.adaptive import orders_for, replay_order
from ttscale.evaluation.replay.metrics import Prepared, prepare
from ttscale.evaluation.runs.importers import import_boinf

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE.parents[1] / "shared" / "samples" / "aime2024"
POOL = 80
KEEP = 0.995  # the LOMO selection: accuracy to keep, relative to majority@80
GRID = {"threshold": (10.0, 15.0, 20.0, 30.0), "horizon": (24, 32, 48), "power": (1.0, 2.0)}


def load(directory: Path, models: int | None) -> dict[str, list[Prepared]]:
    """Each model's problems as prepared class ids over the first POOL samples."""
    out = {}
    for path in sorted(directory.glob("*.jsonl"))[:models]:
        out[path.stem] = [prepare([(a, t, None) for a, t in q.samples[:POOL]], q.gold)
                          for q in import_boinf(path)]
    return out


def per_model(data: dict[str, list[Prepared]], rule: StoppingRule, orders: int,
              seed: int) -> dict[str, tuple[float, float]]:
    """Per model: (accuracy / majority@80 accuracy, tokens / majority@80 tokens)."""
    out = {}
    full = FixedRule(n_max=POOL)
    for model, problems in data.items():
        rng = random.Random(seed)
        hits = tokens = ref_hits = ref_tokens = 0.0
        for p in problems:
            ref = replay_order(p, full, range(len(p.classes)))
            ref_hits += ref.correct
            ref_tokens += ref.tokens
            for order in orders_for(len(p.classes), orders, rng):
                o = replay_order(p, rule, order)
                hits += o.correct / orders
                tokens += o.tokens / orders
        out[model] = (hits / ref_hits if ref_hits else 1.0, tokens / ref_tokens)
    return out


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def summary(rows: dict[str, tuple[float, float]]) -> tuple[float, float]:
    return mean([a for a, _ in rows.values()]), mean([t for _, t in rows.values()])


def choose(results: dict[str, dict[str, tuple[float, float]]], models: Sequence[str]) -> str:
    """The grid label with the least token share keeping KEEP accuracy on ``models``."""
    scored = {label: (mean([r[m][0] for m in models]), mean([r[m][1] for m in models]))
              for label, r in results.items()}
    ok = [label for label, (acc, _) in scored.items() if acc >= KEEP]
    if ok:
        return min(ok, key=lambda label: scored[label][1])
    return max(scored, key=lambda label: scored[label][0])


def lomo(data: dict[str, list[Prepared]], orders: int, seed: int) -> dict[str, Any]:
    rules = {rule_label(r): r for r in (
        BudgetedBayesFactorRule(threshold=b, horizon=int(h), power=pw, n_max=POOL)
        for b, h, pw in itertools.product(*GRID.values()))}
    results = {label: per_model(data, rule, orders, seed) for label, rule in rules.items()}
    models = list(data)
    held: dict[str, dict[str, Any]] = {}
    for m in models:
        label = choose(results, [x for x in models if x != m])
        held[m] = {"chosen": label, "accuracy": results[label][m][0],
                   "tokens": results[label][m][1]}
    return {"grid": GRID, "keep": KEEP, "chosen_on_all": choose(results, models),
            "held_out": held,
            "held_out_mean": {"accuracy": mean([h["accuracy"] for h in held.values()]),
                              "tokens": mean([h["tokens"] for h in held.values()])},
            "grid_results": {k: summary(v) for k, v in results.items()}}


def plot(points: list[dict[str, Any]], grid: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if grid:
        xs, ys = zip(*[(t, a) for a, t in grid["grid_results"].values()], strict=True)
        ax.scatter([100 * x for x in xs], [100 * y for y in ys], s=10, c="0.75",
                   label="budgeted, LOMO grid")
    for family, style in (("fixed", "o-"), ("bayes_factor", "s-"), ("budgeted", "*")):
        pts = sorted((p for p in points if p["family"] == family), key=lambda p: p["tokens"])
        if pts:
            ax.plot([100 * p["tokens"] for p in pts], [100 * p["accuracy"] for p in pts],
                    style, label=family if family != "budgeted" else "budgeted (ours)",
                    markersize=12 if family == "budgeted" else 5)
            for p in pts:
                ax.annotate(p["short"], (100 * p["tokens"], 100 * p["accuracy"]), fontsize=7,
                            xytext=(3, -9), textcoords="offset points")
    ax.set_xlabel("tokens, % of majority@80")
    ax.set_ylabel("accuracy, % of majority@80")
    ax.set_title("AIME 2024, 11 models: adaptive N against majority@80")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", type=int, default=None, help="only the first MODELS files")
    ap.add_argument("--png", type=Path, default=HERE / "results" / "aime_adaptive.png")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "aime_adaptive.json")
    ap.add_argument("--no-lomo", action="store_true", help="skip the leave-one-model-out grid")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = load(args.dir, args.models)
    if not data:
        print(f"no .jsonl files in {args.dir}", file=sys.stderr)
        return 2
    rules: list[tuple[str, str, StoppingRule]] = [
        *[("fixed", f"N={n}", FixedRule(n_max=n)) for n in (2, 4, 8, 16, 32)],
        *[("bayes_factor", f"BF {b:g}", BayesFactorRule(threshold=b, n_max=POOL))
          for b in (5, 10, 20, 100)],
        ("budgeted", "ours", BudgetedBayesFactorRule(n_max=POOL))]
    points = []
    print(f"{len(data)} models x {len(next(iter(data.values())))} problems, {args.orders} "
          f"orders each; relative to majority@{POOL}, mean over models")
    print(f"{'rule':52} {'accuracy':>9} {'tokens':>7} {'worst model':>12}")
    for family, short, rule in rules:
        rows = per_model(data, rule, args.orders, args.seed)
        acc, tok = summary(rows)
        worst = min(a for a, _ in rows.values())
        label = rule_label(rule) if family != "fixed" else f"majority, N={rule.n_max}"
        print(f"{label:52} {acc:9.1%} {tok:7.1%} {worst:12.1%}")
        points.append({"family": family, "short": short, "rule": label, "accuracy": acc,
                       "tokens": tok, "per_model": rows})
    grid = None
    if not args.no_lomo:
        grid = lomo(data, args.orders, args.seed)
        h = grid["held_out_mean"]
        print(f"leave-one-model-out (grid {len(grid['grid_results'])} points, keep "
              f">= {KEEP:.1%}): held-out accuracy {h['accuracy']:.1%}, tokens "
              f"{h['tokens']:.1%}; chosen on all models: {grid['chosen_on_all']}")
        for m, r in grid["held_out"].items():
            print(f"  {m:34} {r['chosen']:42} {r['accuracy']:7.1%} {r['tokens']:7.1%}")
    plot(points, grid, args.png)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"orders": args.orders, "seed": args.seed, "pool": POOL,
                                     "models": list(data), "rules": points, "lomo": grid},
                                    indent=1), encoding="utf-8")
    print(f"wrote {args.png} and {args.json} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
