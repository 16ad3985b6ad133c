"""How an SPRM head would select and weight answers, judged on its own training collection.

Every trace of a GSM8K train run (``ttscale sprm collect``, features cached) is scored by a
head trained on the other folds' questions only (``out_of_fold_scores``, the schedule of
``ttscale sprm train`` for ``--epochs`` epochs). Then, on every question with all ``n``
samples: majority@n, best-of-n and weighted best-of-n by those scores, the paired
difference of weighted best-of-n against majority with a 95% interval, and the trace-level
and within-question AUROC. ``--powers`` also weights each trace by its score raised to each
power (0 is majority voting, large powers approach best-of-n), to see whether sharper weights
than the plain sum would do better. No test question is read, so a choice made from this
output (the epochs, the head's layer, the weighting) leaves the test figures honest.

    python bench/sprm_out_of_fold.py runs/sprm-train --layer 14 --epochs 25 --threads 2 \
        --powers 0.5,2,4,8

Writes bench/results/sprm_out_of_fold.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from ttscale.answers import equivalent
from ttscale.evaluation.replay.metrics import QuestionSamples, Sample, curve, mean_ci
from ttscale.evaluation.runs.records import SEED_STRIDE, load_records
from ttscale.evaluation.sprm import features_meta, load_examples
from ttscale.stats import auroc
from ttscale.verifiers.sprm.features import import_torch
from ttscale.verifiers.sprm.head import HeadMeta
from ttscale.verifiers.sprm.train import Schedule, out_of_fold_scores

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--powers", default="", help="e.g. 0.5,2,4: weights score**power too")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sprm_out_of_fold.json")
    a = ap.parse_args(argv)
    if a.threads:
        import_torch().set_num_threads(a.threads)
    _settings, records = load_records(a.run)
    found = features_meta(a.run, a.layer)
    examples = load_examples(a.run, int(found["layer"]), records)
    if not examples:
        print(f"{a.run} has no traces with cached features: run ttscale sprm collect on it",
              file=sys.stderr)
        return 2
    meta = HeadMeta(found["model_sha256"], found["model"], int(found["layer"]),
                    int(found["n_layers"]), int(found["hidden_size"]), a.width,
                    found["step_delimiter"])
    scores = out_of_fold_scores(examples, meta, Schedule(lr=a.lr, epochs=a.epochs),
                                folds=a.folds, seed=a.seed)
    score_of = {(e.question_id, e.sample): s for e, s in zip(examples, scores, strict=True)}
    n = max(len(r.traces) for r in records)
    questions, within = [], []
    for r in records:
        traces = [(t, score_of.get((r.id, t.seed * SEED_STRIDE + t.index)))
                  for t in r.traces]
        if len(traces) < n or any(s is None for _t, s in traces):
            continue
        questions.append(QuestionSamples(r.id, r.gold, tuple(
            (t.answer, t.tokens, s) for t, s in traces)))
        labels = [int(t.answer is not None and equivalent(r.gold, t.answer)) for t, _ in traces]
        if 0 < sum(labels) < len(labels):
            within.append(auroc([float(s or 0) for _t, s in traces], labels) or 0.5)
    points = {p.strategy: p for s in ("majority", "best_of_n", "weighted_best_of_n")
              for p in curve(questions, [n], s, resamples=1)}
    diff = _paired(questions, n)
    powers = {f"{x:g}": _paired(_powered(questions, x), n) for x in _floats(a.powers)}
    labels = [e.label for e in examples]
    result: dict[str, Any] = {
        "run": str(a.run), "layer": meta.layer, "epochs": a.epochs, "folds": a.folds,
        "questions": len(questions), "n": n, "traces": len(examples), "correct": sum(labels),
        "trace_auroc": auroc(scores, labels),
        "within_question_auroc": sum(within) / len(within) if within else None,
        "within_questions": len(within),
        "accuracy": {k: p.accuracy for k, p in points.items()},
        "weighted_minus_majority": diff,
        "weighted_powered_minus_majority": powers}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"{len(questions)} questions, {n} samples each, {len(examples)} traces "
          f"({sum(labels)} right); head at layer {meta.layer}, {a.epochs} epochs, "
          f"{a.folds} folds")
    print(f"out-of-fold trace AUROC {result['trace_auroc']:.3f}, within-question "
          f"{result['within_question_auroc'] or 0:.3f} ({len(within)} questions)")
    for k, p in points.items():
        print(f"{k:>20} @ {n}: {100 * p.accuracy:.1f}%")
    print(f"weighted best-of-{n} - majority@{n}: {100 * diff[0]:+.1f} points "
          f"({100 * diff[1]:+.1f} to {100 * diff[2]:+.1f})")
    for x, d in powers.items():
        print(f"  weights score**{x}: {100 * d[0]:+.1f} points ({100 * d[1]:+.1f} to "
              f"{100 * d[2]:+.1f})")
    print(f"wrote {a.out}")
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--powers takes numbers separated by commas, not {text!r}") from None


def _powered(questions: list[QuestionSamples], power: float) -> list[QuestionSamples]:
    """The same samples with each score raised to ``power``: weighted voting then sums
    score**power per answer."""
    def sharper(s: Sample) -> Sample:
        return (s[0], s[1], None if s[2] is None else s[2] ** power)

    return [QuestionSamples(q.id, q.gold, tuple(map(sharper, q.samples))) for q in questions]


def _paired(questions: list[QuestionSamples], n: int) -> tuple[float, float, float]:
    """Mean per-question difference (weighted best-of-n minus majority) and its 95% CI."""
    by: dict[str, list[float]] = defaultdict(list)
    for s in ("weighted_best_of_n", "majority"):
        for q in questions:
            by[q.id].append(curve([q], [n], s, resamples=1)[0].accuracy)
    return mean_ci([w - m for w, m in by.values()])


if __name__ == "__main__":
    sys.exit(main())
