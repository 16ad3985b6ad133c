"""SPRM scoring time against the generation time of the traces it scores, in one run.

For each GSM8K test question, K traces are generated in one batched llama.cpp call (timed),
then the same K traces are scored by the SPRM verifier (timed: step features through
transformers at the head's layer, then the head). Model loading is not counted on either
side. The acceptance figure is scoring / generation <= 0.10.

    nice -n 19 python bench/sprm_speed.py                        # the default model
    nice -n 19 python bench/sprm_speed.py --model smollm2-135m --questions 3 --layer 15

Without ``--head`` the model's shipped head is used, or, when none ships, a fresh untrained
head at ``--layer`` (scoring costs the same whatever the weights).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    from ttscale import models

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--k", type=int, default=8, help="traces per question")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--head", default=None)
    ap.add_argument("--layer", type=int, default=None,
                    help="without --head and a shipped head: the fresh head's layer")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from ttscale.answers import solve_prompt
    from ttscale.backends.llamacpp import LlamaCppBackend
    from ttscale.evaluation.datasets import load_dataset
    from ttscale.params import SamplingParams
    from ttscale.verifiers.sprm import HeadMeta, SPRMHead, SPRMVerifier, shipped_head
    from ttscale.verifiers.sprm_features import TorchFeatures

    backend = LlamaCppBackend(args.model, parallel=args.k, ctx_per_slot=args.max_tokens + 512,
                              threads=args.threads)
    sha = backend.sha256 or models.sha256_of(backend.model_path)
    head = args.head or shipped_head(sha)
    t = time.perf_counter()
    if head is None:
        feats = TorchFeatures.load(str(backend.model_path), args.layer, threads=args.threads)
        head = str(SPRMHead.new(HeadMeta(sha, backend.model_id, feats.layer, feats.n_layers,
                                         feats.hidden_size, 256)).save(
            Path(tempfile.mkdtemp()) / "untrained"))
        print(f"no head given or shipped: an untrained head at layer {feats.layer}/"
              f"{feats.n_layers}")
        verifier = SPRMVerifier(backend, head, threads=args.threads)
        verifier._features = feats  # loaded above, to read the model's depth
    else:
        verifier = SPRMVerifier(backend, str(head), threads=args.threads)
        feats = verifier.features
    print(f"feature model loaded in {time.perf_counter() - t:.1f} s "
          f"(layer {feats.layer}/{feats.n_layers})")
    params = SamplingParams(n=args.k, temperature=0.7, max_tokens=args.max_tokens, seed=0)
    problems = load_dataset("gsm8k", "test")[: args.questions]
    gen_total = score_total = 0.0
    tokens = scored_tokens = 0
    for p in problems:
        t = time.perf_counter()
        out = backend.generate([solve_prompt(p.question)], params)
        gen = time.perf_counter() - t
        texts = [g.text for g in out.generations[0]]
        t = time.perf_counter()
        scored = verifier.score(p.question, texts)
        score = time.perf_counter() - t
        gen_total += gen
        score_total += score
        tokens += out.usage.completion_tokens
        scored_tokens += scored.usage.prompt_tokens
        print(f"{p.id}: generation {gen:.1f} s ({out.usage.completion_tokens} tokens), "
              f"scoring {score:.1f} s ({scored.usage.prompt_tokens} tokens re-read), "
              f"ratio {score / gen:.3f}", flush=True)
    backend.close()
    print(f"\n{args.model}, {len(problems)} questions x {args.k} traces, layer "
          f"{feats.layer}/{feats.n_layers}")
    print(f"  generation {gen_total:.1f} s for {tokens} completion tokens "
          f"({tokens / gen_total:.1f} tokens/s)")
    print(f"  scoring    {score_total:.1f} s for {scored_tokens} tokens re-read "
          f"({scored_tokens / score_total:.1f} tokens/s)")
    print(f"  scoring / generation = {score_total / gen_total:.3f}  (goal <= 0.10)")


if __name__ == "__main__":
    main()
