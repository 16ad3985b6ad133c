"""Search and sequential strategies against majority voting at the same tokens.

Reads a ``ttscale eval`` run in which strategies such as ``beam``, ``dvts``, ``ab_mcts`` and
``rsa`` were solved question by question (their rows in the store's ``results`` table, with
every token they spent, verifier included), and the independent samples that majority
voting replays (from the same run or from ``--samples``). For each solved strategy and
``n``: its accuracy and mean tokens per question, and majority voting's accuracy at the same
mean tokens on the same questions, interpolated (in log tokens) between the two sample
counts whose replayed cost brackets it; the difference is paired over questions with a 95%
interval. A budget beyond the stored samples is compared with majority at all of them, and
says so.

    python bench/search_vs_sampling.py runs/gsm8k-search --samples runs/gsm8k-test-0-39

Tokens are counted twice: all of them (prompt and completion, the verifier's included: a
search round re-sends each branch's partial answer, and that is charged), and the generated
(completion) tokens alone, where the compute goes when the backend reuses cached prefixes.

``--by-agreement`` repeats the comparison within two halves of the questions split by how
much majority's samples agree (the leader's share of all of a question's stored samples,
label-free): does search pay where the votes scatter, the questions a planner would
escalate? The split reads every stored sample, more than a planner's probe sees, so it
favours search.

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

from ttscale.evaluation.replay.metrics import mean_ci, prepare, replay
from ttscale.evaluation.runs.records import QuestionRecord, load_records
from ttscale.strategies.spec import split_specs

HERE = Path(__file__).resolve().parent
REPLAYED = {"majority", "best_of_n", "weighted_best_of_n", "pass"}


def majority_curve(records: Sequence[QuestionRecord], k_max: int, resamples: int,
                   seed: int, generated: bool = False) -> list[list[tuple[float, float]]]:
    """Per question, majority's (accuracy, tokens) at k = 1..k_max samples; ``generated``:
    completion tokens only."""
    rng = random.Random(seed)
    out = []
    for r in records:
        p = prepare([(t.answer, t.completion_tokens if generated else t.tokens, None)
                     for t in r.traces[:k_max]], r.gold)
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


def compare(per: dict[str, tuple[float, float, float, float]], samples: dict[str, QuestionRecord],
            resamples: int, seed: int, generated: bool) -> dict[str, Any]:
    """One strategy at one n against majority at the same mean tokens (all tokens, or
    ``generated`` ones only) on the questions both have."""
    ids = [q for q in per if q in samples and samples[q].traces]
    k_max = min(len(samples[q].traces) for q in ids)
    curve = majority_curve([samples[q] for q in ids], k_max, resamples, seed, generated)
    acc = [per[q][0] for q in ids]
    tokens = sum(per[q][2 if generated else 1] for q in ids) / len(ids)
    maj, k, note = matched(curve, tokens)
    d, low, high = mean_ci([a - b for a, b in zip(acc, maj, strict=True)])
    seconds = sum(per[q][3] for q in ids)
    return {"questions": len(ids), "accuracy": sum(acc) / len(acc), "tokens": tokens,
            "seconds_per_question": seconds / len(ids), "seconds": seconds,
            "majority_accuracy": sum(maj) / len(maj), "majority_k": k, "difference": d,
            "ci_low": low, "ci_high": high, "note": note}


def leader_share(record: QuestionRecord) -> float:
    """The share of the question's samples that give its most common answer (no label)."""
    p = prepare([(t.answer, t.tokens, None) for t in record.traces], record.gold)
    counts = [sum(1 for c in p.classes if c == k) for k in set(p.classes) if k >= 0]
    return max(counts, default=0) / max(len(p.classes), 1)


def halves(samples: dict[str, QuestionRecord], ids: Sequence[str]
           ) -> dict[str, set[str]]:
    """The questions split at the median leader share: ``scattered`` below it (ties go to
    the half that keeps the two closest in size), ``agreeing`` the rest."""
    share = {q: leader_share(samples[q]) for q in ids if samples[q].traces}
    order = sorted(share, key=lambda q: share[q])
    cut = share[order[len(order) // 2]]
    low = {q for q in order if share[q] < cut}
    low_eq = low | {q for q in order if share[q] == cut}
    pick = low if abs(2 * len(low) - len(order)) <= abs(2 * len(low_eq) - len(order)) \
        else low_eq
    return {"scattered": pick, "agreeing": set(order) - pick}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--samples", type=Path, default=None,
                    help="the run holding majority's samples (default: RUN_DIR); same model, "
                         "dataset and sampling")
    ap.add_argument("--strategies", default=None,
                    help="comma list of solved strategies (default: every one in the run)")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--by-agreement", action="store_true",
                    help="also compare within the questions whose samples scatter and those "
                         "whose samples agree (split at the median leader share)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "search_vs_sampling.json")
    args = ap.parse_args()
    settings, records = load_records(args.run_dir)
    sample_settings, sample_records = (load_records(args.samples) if args.samples
                                       else (settings, records))
    if any(sample_settings.get(k) != settings.get(k)
           for k in ("model_sha256", "dataset", "split", "sampling")):
        print(f"{args.samples} was sampled with another model, dataset or sampling than "
              f"{args.run_dir}: give a run of the same settings", file=sys.stderr)
        return 2
    wanted = set(split_specs(args.strategies)) if args.strategies else None
    seeds: dict[tuple[str, int], dict[str, list[tuple[float, float, float, float]]]] = (
        defaultdict(
            lambda: defaultdict(list)))
    for r in records:
        for res in r.results:
            if res.strategy in REPLAYED or (wanted and res.strategy not in wanted):
                continue
            spent = res.usage.prompt_tokens + res.usage.completion_tokens
            seeds[(res.strategy, res.n)][r.id].append(
                (float(bool(res.correct)), float(spent), float(res.usage.completion_tokens),
                 res.usage.seconds))
    # several seeds of a question: their mean
    groups = {key: {q: (sum(x[0] for x in v) / len(v), sum(x[1] for x in v) / len(v),
                        sum(x[2] for x in v) / len(v), sum(x[3] for x in v) / len(v))
                    for q, v in per.items()} for key, per in seeds.items()}
    if not groups:
        print(f"{args.run_dir} has no solved search or sequential strategy results yet",
              file=sys.stderr)
        return 2
    samples = {r.id: r for r in sample_records}
    rows: list[dict[str, Any]] = []
    for measure in ("all", "generated"):
        print(f"\ntokens counted: {measure} (verifier included)"
              if measure == "all" else "\ntokens counted: generated (completion) only")
        print(f"{'strategy':28} {'n':>3} {'qs':>3} {'accuracy':>8} {'tokens':>8} "
              f"{'majority':>8} {'at k':>5} {'difference (95% CI)':>26} {'s/q':>6}")
        for (name, n), per in sorted(groups.items()):
            row = {"strategy": name, "n": n, "tokens_counted": measure,
                   **compare(per, samples, args.resamples, args.seed, measure == "generated")}
            rows.append(row)
            print(f"{name:28} {n:3} {row['questions']:3} {row['accuracy']:8.3f} "
                  f"{row['tokens']:8,.0f} {row['majority_accuracy']:8.3f} "
                  f"{row['majority_k']:5.1f} {row['difference']:+.3f} "
                  f"({row['ci_low']:+.3f}, {row['ci_high']:+.3f}) "
                  f"{row['seconds_per_question']:6.0f} {row['note']}")
    if args.by_agreement:
        ids = sorted({q for per in groups.values() for q in per})
        for subset, members in halves(samples, [q for q in ids if q in samples]).items():
            print(f"\n{subset} half ({len(members)} questions), all tokens counted")
            for (name, n), per in sorted(groups.items()):
                sub = {q: v for q, v in per.items() if q in members}
                if not sub:
                    continue
                row = {"strategy": name, "n": n, "tokens_counted": "all", "subset": subset,
                       **compare(sub, samples, args.resamples, args.seed, False)}
                rows.append(row)
                print(f"{name:28} {n:3} {row['questions']:3} {row['accuracy']:8.3f} "
                      f"{row['tokens']:8,.0f} {row['majority_accuracy']:8.3f} "
                      f"{row['majority_k']:5.1f} {row['difference']:+.3f} "
                      f"({row['ci_low']:+.3f}, {row['ci_high']:+.3f}) {row['note']}")
    total = sum(r["seconds"] for r in rows if r["tokens_counted"] == "all"
                and "subset" not in r)
    print(f"\ncompute: {total / 3600:.2f} h of wall time stored for these results (questions "
          "in flight together each count their own wall time)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"run": str(args.run_dir),
                                     "samples": str(args.samples or args.run_dir),
                                     "resamples": args.resamples, "rows": rows}, indent=1),
                         encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
