"""ttscale's overhead over raw llama.cpp: majority@8 on GSM8K questions, 135M model.

For each question the same requests are made twice on one loaded model: once through
``ttscale.solve`` (prompt building, batched backend, answer extraction, math-verify merging,
accounting) and once straight to xllamacpp with the identical request body. The order
alternates per question so drift in machine load falls on both sides. Same seeds, so both
sides decode the same tokens.

    python bench/overhead.py --questions 10
"""

from __future__ import annotations

import argparse
import time

from ttscale import solve
from ttscale.answers import solve_prompt
from ttscale.backends.llamacpp import LlamaCppBackend
from ttscale.evaluation import load_dataset
from ttscale.params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()
    be = LlamaCppBackend(args.model, parallel=args.n)
    params = SamplingParams(n=args.n, temperature=0.7, max_tokens=args.max_tokens, seed=0)
    problems = load_dataset("gsm8k", "test")[: args.questions]

    def via_ttscale(q: str) -> tuple[float, int]:
        t = time.perf_counter()
        r = solve(q, backend=be, strategy="majority", n=args.n, max_tokens=args.max_tokens,
                  temperature=0.7, seed=0)
        return time.perf_counter() - t, r.usage.completion_tokens

    def direct(q: str) -> tuple[float, int]:
        body = be._request(solve_prompt(q), params, args.n, 0)  # the identical request
        t = time.perf_counter()
        resp = be._server.handle_chat_completions(body)
        dt = time.perf_counter() - t
        return dt, sum(len(c["logprobs"]["content"]) for c in resp["choices"])

    direct(problems[0].question)  # warm-up, not counted
    t_tt = t_dx = 0.0
    tok_tt = tok_dx = 0
    for i, p in enumerate(problems):
        order = (via_ttscale, direct) if i % 2 == 0 else (direct, via_ttscale)
        for fn in order:
            dt, tok = fn(p.question)
            if fn is via_ttscale:
                t_tt, tok_tt = t_tt + dt, tok_tt + tok
            else:
                t_dx, tok_dx = t_dx + dt, tok_dx + tok
        print(f"question {i}: ttscale {t_tt:.2f}s, direct {t_dx:.2f}s (cumulative)", flush=True)
    be.close()
    print(f"\nmajority@{args.n}, {len(problems)} questions, {args.model}")
    print(f"  ttscale : {t_tt:8.2f} s  {tok_tt} completion tokens")
    print(f"  direct  : {t_dx:8.2f} s  {tok_dx} completion tokens")
    print(f"  ratio ttscale / direct = {t_tt / t_dx:.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
