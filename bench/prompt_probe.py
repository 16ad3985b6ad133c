"""Does the policy's hidden state of the prompt predict difficulty before any sample?

    ttscale eval restore bench/runs/gsm8k-test-0-39.jsonl --out runs/gsm8k-test-0-39
    python bench/prompt_probe.py [--run runs/gsm8k-test-0-39] [--layer 14]

Reads each question's chat-templated prompt through the first ``--layer`` layers of the
run's model (the SPRM feature path, so a live solve could read it from the verifier's
model at no extra load), keeps the last prompt token's state, and fits a cross-fitted
(10 folds over questions) L2 logistic regression of "a sample is right" on the state's first
``--components`` principal components (fitted on the training folds only). Prints the
AUROC of that probe, of the prompt's length alone, and of the planner's own predictors
after one and two samples (the same questions, cross-fitted), and what the probe costs in
samples' worth. Caches the states in ``bench/results/prompt-states-<layer>.npz`` so a second
run is instant. Writes ``bench/results/prompt_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ttscale import models
from ttscale.evaluation.replay.auto import calibration_questions
from ttscale.evaluation.runs.records import load_records
from ttscale.planner.calibration import default_stages, trajectories
from ttscale.planner.crossfit import signal_report
from ttscale.planner.fit import fit_logistic
from ttscale.stats import auroc


def prompt_states(run: str, layer: int, cache: Path) -> tuple[list[str], np.ndarray, list[int]]:
    """Per question (in run order) its id, the last prompt token's state and prompt length."""
    settings, recs = load_records(run)
    ids = [r.id for r in recs if r.traces]
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if list(data["ids"]) == ids:
            return ids, data["states"], [int(x) for x in data["lengths"]]
    from ttscale.verifiers.sprm.features import TorchFeatures, chat_text

    gguf = str(models.resolve(str(settings["model"]))[0])
    feats = TorchFeatures.load(gguf, layer=layer)
    states, lengths = [], []
    start = time.perf_counter()
    for i, r in enumerate(x for x in recs if x.traces):
        prompt = chat_text(feats.tokenizer, r.question)
        out = feats.extract(prompt, [""], "\n\n")[0]
        states.append(out.vectors[-1])
        lengths.append(out.tokens)
        if i % 20 == 19:
            print(f"  {i + 1}/{len(ids)} prompts read ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    arr = np.asarray(states, dtype=np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, ids=np.asarray(ids), states=arr, lengths=np.asarray(lengths))
    return ids, arr, lengths


def cross_fitted_probe(states: np.ndarray, rows_q: np.ndarray, y: np.ndarray, *,
                       components: int, alpha: float, folds: int, seed: int) -> np.ndarray:
    """Each sample row scored by a probe fitted on the other folds' questions."""
    nq = states.shape[0]
    fold = np.empty(nq, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(nq)] = np.arange(nq) % folds
    out = np.zeros(len(y))
    for f in range(folds):
        tr_q = fold != f
        mu = states[tr_q].mean(axis=0)
        # principal components of the training questions' states only
        _u, _s, vt = np.linalg.svd(states[tr_q] - mu, full_matrices=False)
        proj = (states - mu) @ vt[:components].T
        train_rows = tr_q[rows_q]
        mean, scale, coef, b = fit_logistic(proj[rows_q[train_rows]], y[train_rows], alpha)
        test_rows = ~train_rows
        z = (proj[rows_q[test_rows]] - mean) / scale
        out[test_rows] = z @ coef + b
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/gsm8k-test-0-39")
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--components", default="2,4,8,16")
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    _, recs = load_records(args.run)
    cal = calibration_questions(recs)
    ids, states, lengths = prompt_states(
        args.run, args.layer, Path(f"bench/results/prompt-states-{args.layer}.npz"))
    assert ids == [q.id for q in cal]
    rows_q = np.array([i for i, q in enumerate(cal) for _ in range(q.n)])
    y = np.array([q.correct[c] if c >= 0 else False for q in cal for c in q.classes],
                 dtype=int)
    result: dict[str, object] = {"questions": len(cal), "samples": len(y),
                                 "layer": args.layer}
    result["prompt_length"] = auroc([-float(lengths[i]) for i in rows_q], y.tolist())
    probes = {}
    for k in (int(c) for c in args.components.split(",")):
        s = cross_fitted_probe(states, rows_q, y, components=k, alpha=args.alpha,
                               folds=args.folds, seed=args.seed)
        probes[k] = auroc(s.tolist(), y.tolist())
    result["hidden_state_probe"] = probes
    tr = trajectories(cal, default_stages(max(q.n for q in cal)), orders=8, seed=args.seed)
    report = signal_report(tr, folds=args.folds, seed=args.seed, bins=3)
    result["planner_after_1"] = report["U@1"]["predictor (cross-fitted)"]
    result["planner_after_2"] = report["U@2"]["predictor (cross-fitted)"]
    worth = float(np.mean([np.mean(q.tokens) for q in cal]))
    # the probe reads the prompt through ``layer`` of the model's layers
    depth = 28
    result["probe_cost_samples_worth"] = float(np.mean(lengths)) * args.layer / depth / worth
    print(f"\nGSM8K, {len(cal)} questions, {len(y)} samples: AUROC for 'a sample is right'")
    print(f"  prompt length (shorter = easier):          {result['prompt_length']:.3f}")
    for k, a in probes.items():
        print(f"  prompt hidden state, layer {args.layer}, {k:>2} PCs:    {a:.3f}")
    print(f"  planner's predictor after 1 sample:         {result['planner_after_1']:.3f}")
    print(f"  planner's predictor after 2 samples:        {result['planner_after_2']:.3f}")
    print(f"  the probe costs {result['probe_cost_samples_worth']:.2f} samples' worth "
          f"(prompt through {args.layer} of {depth} layers)")
    Path("bench/results/prompt_probe.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
