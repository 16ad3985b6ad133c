"""How long replaying a stored run takes: every n in 1..N_max for three strategies.

Loads the run's samples and scores from its store, then replays majority, best-of-N and
weighted best-of-N at every n (200 random subsets per question and n, as ``ttscale eval``
does), with no generation. Prints the accuracy at N_max and the seconds each phase took.

    python bench/replay_timing.py runs/gsm8k-test-0-39
"""

from __future__ import annotations

import argparse
import time

from ttscale.evaluation.options import ready
from ttscale.evaluation.replay.metrics import curve
from ttscale.evaluation.runs.imports import max_n
from ttscale.evaluation.runs.records import load_records, question_samples

STRATEGIES = ("majority", "best_of_n", "weighted_best_of_n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--resamples", type=int, default=200)
    args = ap.parse_args()
    start = time.perf_counter()
    _settings, records = load_records(args.run_dir)
    # a run still generating: time the replay over its finished questions
    top = max((len(r.traces) for r in records), default=0)
    records, _rest = ready(records, top, scored=True)
    samples = question_samples(records)
    loaded = time.perf_counter()
    top = max_n(samples)
    ns = list(range(1, top + 1))
    points = [p for s in STRATEGIES
              for p in curve(samples, ns, s, resamples=args.resamples, seed=0)]
    done = time.perf_counter()
    for p in points:
        if p.n == top:
            print(f"{p.strategy:>20} n={p.n}: {p.accuracy:.1%} "
                  f"({p.mean_tokens:,.0f} tokens/question)")
    print(f"{len(samples)} questions, {sum(len(q.samples) for q in samples)} samples: "
          f"load {loaded - start:.2f} s, replay of n=1..{top} x {len(STRATEGIES)} strategies "
          f"({len(points)} points, {args.resamples} subsets each) {done - loaded:.2f} s, "
          f"total {done - start:.2f} s")


if __name__ == "__main__":
    main()
