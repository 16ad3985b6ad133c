"""SPRM scoring time against the generation time of the traces it scores, in one run.

For each GSM8K test question, K traces are generated in one batched llama.cpp call (timed),
then the same K traces are scored by the SPRM verifier at each layer asked for (timed: step
features through transformers at the head's layer, then the head). Model loading is not
counted on either side. The acceptance figure is scoring / generation <= 0.10.

    nice -n 19 python bench/sprm_speed.py                        # the default model's head
    nice -n 19 python bench/sprm_speed.py --layer 2,4,8           # three layers, one run
    nice -n 19 python bench/sprm_speed.py --model smollm2-135m --questions 3 --layer 15
    nice -n 19 python bench/sprm_speed.py --dtype bfloat16,float32    # both, side by side

Without ``--layer`` the head of ``--head`` or the model's shipped head is used; with it, a
fresh untrained head per layer (scoring costs the same whatever the weights). ``--dtype``:
the feature model's weights, one verifier per dtype listed (``auto``: bfloat16 where the CPU
computes it natively, else float32).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any


def _verifiers(args: argparse.Namespace, backend: Any, sha: str) -> list[Any]:
    """One SPRM verifier per (layer, dtype) measured, each with its feature model loaded."""
    return [v for dtype in args.dtype.split(",") for v in _of_dtype(args, backend, sha, dtype)]


def _of_dtype(args: argparse.Namespace, backend: Any, sha: str, dtype: str) -> list[Any]:
    from ttscale.cli.sprm import parse_layers
    from ttscale.verifiers.sprm.features import TorchFeatures
    from ttscale.verifiers.sprm.head import HeadMeta, SPRMHead, SPRMVerifier, shipped_head

    layers = parse_layers(args.layer)
    if layers is None:
        head = args.head or shipped_head(sha)
        if head is None:
            raise SystemExit(f"{args.model} ships no SPRM head: give --head or --layer")
        verifier = SPRMVerifier(backend, str(head), threads=args.threads, dtype=dtype)
        _ = verifier.features
        return [verifier]
    out = []
    for layer in layers:
        feats = TorchFeatures.load(str(backend.model_path), layer, threads=args.threads,
                                   dtype=dtype)
        meta = HeadMeta(sha, backend.model_id, feats.layer, feats.n_layers, feats.hidden_size,
                        256)
        path = SPRMHead.new(meta).save(Path(tempfile.mkdtemp()) / f"untrained-{layer}")
        verifier = SPRMVerifier(backend, str(path), threads=args.threads, dtype=dtype)
        verifier._features = feats  # loaded above, to read the model's depth
        out.append(verifier)
    return out


def main() -> None:
    from ttscale import models

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--k", type=int, default=8, help="traces per question")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--head", default=None)
    ap.add_argument("--layer", default=None,
                    help="layers to measure with untrained heads, e.g. 2,4,8 (one run)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="auto",
                    help="feature model dtypes, comma-separated: auto, float32, bfloat16")
    args = ap.parse_args()

    from ttscale.answers import solve_prompt
    from ttscale.backends.llamacpp import LlamaCppBackend
    from ttscale.evaluation.datasets import load_dataset
    from ttscale.params import SamplingParams

    backend = LlamaCppBackend(args.model, parallel=args.k, ctx_per_slot=args.max_tokens + 512,
                              threads=args.threads)
    sha = backend.sha256 or models.sha256_of(backend.model_path)
    t = time.perf_counter()
    verifiers = _verifiers(args, backend, sha)
    n_layers = verifiers[0].features.n_layers
    layers = [f"{v.features.layer} {v.features.dtype}" for v in verifiers]
    import torch

    print(f"feature models loaded in {time.perf_counter() - t:.1f} s "
          f"(layers {', '.join(layers)}; {n_layers} in the model; CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()})")
    params = SamplingParams(n=args.k, temperature=0.7, max_tokens=args.max_tokens, seed=0)
    problems = load_dataset("gsm8k", "test")[: args.questions]
    gen_total = 0.0
    tokens = 0
    score_total = [0.0] * len(verifiers)
    scored_tokens = [0] * len(verifiers)
    trace_scores: list[list[float]] = [[] for _ in verifiers]
    for p in problems:
        t = time.perf_counter()
        out = backend.generate([solve_prompt(p.question)], params)
        gen = time.perf_counter() - t
        gen_total += gen
        tokens += out.usage.completion_tokens
        texts = [g.text for g in out.generations[0]]
        line = [f"{p.id}: generation {gen:.1f} s ({out.usage.completion_tokens} tokens)"]
        for i, verifier in enumerate(verifiers):
            t = time.perf_counter()
            scored = verifier.score(p.question, texts)
            score = time.perf_counter() - t
            score_total[i] += score
            scored_tokens[i] += scored.usage.prompt_tokens
            trace_scores[i] += [verifier.reduce(steps) for steps in scored.step_scores]
            line.append(f"layer {layers[i]}: {score:.1f} s (ratio {score / gen:.3f})")
        print(", ".join(line), flush=True)
    backend.close()
    print(f"\n{args.model}, {len(problems)} questions x {args.k} traces, {n_layers} layers")
    print(f"  generation {gen_total:.1f} s for {tokens} completion tokens "
          f"({tokens / gen_total:.1f} tokens/s)")
    for i, layer in enumerate(layers):
        print(f"  layer {layer}: scoring {score_total[i]:.1f} s for {scored_tokens[i]} "
              f"tokens re-read ({scored_tokens[i] / score_total[i]:.1f} tokens/s); "
              f"scoring / generation = {score_total[i] / gen_total:.3f}  (goal <= 0.10)")
    for i in range(1, len(verifiers)):
        if verifiers[i].head_path == verifiers[0].head_path:
            # the same head in another dtype: how far its trace scores move
            gap = max(abs(a - b) for a, b in zip(trace_scores[0], trace_scores[i], strict=True))
            print(f"  trace scores, layer {layers[i]} against layer {layers[0]}: largest "
                  f"difference {gap:.4f} over {len(trace_scores[0])} traces")


if __name__ == "__main__":
    main()
