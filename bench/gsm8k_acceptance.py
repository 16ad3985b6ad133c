"""Greedy against majority@8 on GSM8K test questions, with the default model.

Resumable: every finished (question, strategy) is appended to the output JSONL at once, and
a rerun skips what is there. Prints accuracy and mean tokens per question per strategy.

    python bench/gsm8k_acceptance.py --model qwen2.5-coder-1.5b --first 0 --last 39
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ttscale import solve
from ttscale.answers import equivalent
from ttscale.backends.llamacpp import LlamaCppBackend
from ttscale.evaluation import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--last", type=int, default=39)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--out", default="bench/results/gsm8k_acceptance.jsonl")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[(row["id"], row["strategy"])] = row
    problems = load_dataset("gsm8k", "test")[args.first : args.last + 1]
    todo = [(p, s) for p in problems for s in ("greedy", "majority")
            if (p.id, s) not in done]
    if todo and not args.summary_only:
        # Two questions in flight: 2 x (8 + 1) sequences decode in one llama.cpp batch.
        be = LlamaCppBackend(args.model, parallel=2 * (args.n + 1), ctx_per_slot=1536)

        def one(item: tuple[Any, str]) -> dict[str, Any]:
            p, strat = item
            r = solve(p.question, backend=be, strategy=strat, n=args.n,
                      max_tokens=args.max_tokens, seed=0)
            return {"id": p.id, "strategy": strat, "gold": p.gold, "answer": r.answer,
                    "correct": r.answer is not None and equivalent(p.gold, r.answer),
                    "prompt_tokens": r.usage.prompt_tokens,
                    "completion_tokens": r.usage.completion_tokens,
                    "seconds": r.seconds, "votes": [[c.answer, c.votes] for c in r.classes]}

        with ThreadPoolExecutor(4) as pool, out.open("a") as f:
            start = time.time()
            for k, row in enumerate(pool.map(one, todo), 1):
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"[{k}/{len(todo)}] {row['id']} {row['strategy']}: {row['answer']} "
                      f"(gold {row['gold']}) {time.time() - start:.0f}s", flush=True)
                done[(row["id"], row["strategy"])] = row
        be.close()
    for strat in ("greedy", "majority"):
        rows = [done[(p.id, strat)] for p in problems if (p.id, strat) in done]
        if not rows:
            continue
        acc = sum(r["correct"] for r in rows) / len(rows)
        tok = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) / len(rows)
        comp = sum(r["completion_tokens"] for r in rows) / len(rows)
        secs = sum(r["seconds"] for r in rows)
        print(f"{strat:>9}: {sum(r['correct'] for r in rows)}/{len(rows)} = {acc:.1%} correct, "
              f"{tok:.0f} tokens/question ({comp:.0f} completion), {secs:.0f}s summed")


if __name__ == "__main__":
    main()
