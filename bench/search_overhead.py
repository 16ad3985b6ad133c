"""What a step-level search pays to re-read its prompts, with and without prefix reuse.

Every round of beam search continues each open branch's partial answer, so the question and
all earlier steps are sent again as the prompt. Per question, a beam search (self-judge
verifier) is run once and every backend call it made (policy and judge, in order) is
recorded; then the identical calls are replayed twice on the same loaded model, with
llama.cpp's prefix reuse (``cache_prompt``, the default) and without it, alternating which
goes first. Each replay opens every system message with its own tag, so neither can reuse
what the recording or the other replay cached; otherwise the two send the same prompts and
differ only in reuse. Per round
it prints the prompt tokens charged (a cached prefix is still counted), the prompt tokens
llama.cpp actually evaluated (its ``prompt_tokens_total`` counter), the seconds it spent on
them (``prompt_seconds_total``) and the wall time of the policy's calls.

    python bench/search_overhead.py --model smollm2-135m --questions 2 --max-tokens 96
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ttscale import models
from ttscale.backends.llamacpp import LlamaCppBackend
from ttscale.budget import Accountant
from ttscale.evaluation import load_dataset
from ttscale.params import SamplingParams
from ttscale.strategies.base import Env, State
from ttscale.strategies.beam import BeamSearch
from ttscale.types import Chat, GenerateOutput, Message, Prompt
from ttscale.verifiers.self_judge import SelfJudge


class Recorder:
    """A backend that records every ``generate`` call (prompts, parameters, who made it)."""

    def __init__(self, backend: LlamaCppBackend, kind: str, log: list[Call]) -> None:
        self.backend, self.kind, self.log = backend, kind, log
        self.name, self.model_id = backend.name, backend.model_id
        self.params_count = backend.params_count

    def count_tokens(self, prompt: Prompt) -> int:
        return self.backend.count_tokens(prompt)

    def close(self) -> None:
        """The wrapped backend is closed by its owner."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        self.log.append((self.kind, tuple(prompts), params))
        return self.backend.generate(prompts, params)


Call = tuple[str, tuple[Prompt, ...], SamplingParams]


def record(be: LlamaCppBackend, question: str, args: Any) -> list[Call]:
    """The calls one beam search makes, in order."""
    be.cache_prompt = True
    log: list[Call] = []
    env = Env(Recorder(be, "policy", log), Accountant(),
              SamplingParams(max_tokens=args.max_tokens, seed=0),
              SelfJudge(Recorder(be, "judge", log)))
    strategy = BeamSearch(n=args.n, width=args.width, max_steps=args.max_steps)
    state: State = strategy.start(question)
    while not state.done:
        state = strategy.step(state, env)
    return log


def tagged(prompt: Prompt, tag: str) -> Prompt:
    """The prompt with its system message opened by ``tag``: replays with different tags
    share no prefix, so neither reuses what the recording or the other replay left cached."""
    if not isinstance(prompt, Chat) or not prompt.messages:
        return tag + str(prompt)
    first, *rest = prompt.messages
    return replace(prompt, messages=(Message(first.role, f"{tag} {first.content}"), *rest))


def replay(be: LlamaCppBackend, calls: list[Call], *, reuse: bool,
           tag: str) -> list[dict[str, float]]:
    """The calls again; per policy call (a round): what it charged and what llama.cpp
    evaluated, with prefix reuse on or off."""
    be.cache_prompt = reuse
    rounds = []
    for kind, original, params in calls:
        prompts = [tagged(p, tag) for p in original]
        before = be.server_metrics()
        start = time.perf_counter()
        out = be.generate(prompts, params)
        wall = time.perf_counter() - start
        after = be.server_metrics()
        if kind == "policy":
            rounds.append({
                "samples": len(prompts) * params.n, "charged": out.usage.prompt_tokens,
                "evaluated": after["prompt_tokens_total"] - before["prompt_tokens_total"],
                "prompt_s": after["prompt_seconds_total"] - before["prompt_seconds_total"],
                "wall_s": wall})
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=models.DEFAULT_MODEL,
                    help="a named model or .gguf path (smollm2-135m for a quick run)")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--width", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    be = LlamaCppBackend(args.model, parallel=args.n, threads=args.threads, metrics=True,
                         ctx_per_slot=2 * args.max_tokens + 512)
    totals: dict[bool, dict[int, dict[str, float]]] = {True: {}, False: {}}
    try:
        for i, problem in enumerate(load_dataset("gsm8k", "test")[: args.questions]):
            calls = record(be, problem.question, args)
            for reuse in ((True, False) if i % 2 == 0 else (False, True)):
                tag = f"[{i}{'R' if reuse else 'N'}]"
                for k, r in enumerate(replay(be, calls, reuse=reuse, tag=tag)):
                    into = totals[reuse].setdefault(k + 1, defaultdict(float))
                    for key, value in r.items():
                        into[key] += value
            print(f"question {i} done", flush=True)
    finally:
        be.close()
    print(f"\nbeam n={args.n} width={args.width} max_steps={args.max_steps}, "
          f"{args.questions} GSM8K questions, {args.model}; sums over questions per round")
    head = ("round", "samples", "charged", "evaluated reuse", "evaluated no reuse",
            "prompt s reuse", "prompt s no reuse", "wall s reuse", "wall s no reuse")
    print(" | ".join(head))
    rounds = sorted(set(totals[True]) | set(totals[False]))
    for k in rounds:
        on, off = totals[True].get(k, {}), totals[False].get(k, {})
        print(" | ".join([str(k), f"{on.get('samples', 0):.0f}", f"{on.get('charged', 0):.0f}",
                          f"{on.get('evaluated', 0):.0f}", f"{off.get('evaluated', 0):.0f}",
                          f"{on.get('prompt_s', 0):.2f}", f"{off.get('prompt_s', 0):.2f}",
                          f"{on.get('wall_s', 0):.2f}", f"{off.get('wall_s', 0):.2f}"]))
    for reuse in (True, False):
        t = {key: sum(r.get(key, 0) for r in totals[reuse].values())
             for key in ("charged", "evaluated", "prompt_s", "wall_s")}
        share = t["evaluated"] / max(t["charged"], 1)
        print(f"total {'with' if reuse else 'without'} reuse: {t['charged']:.0f} prompt tokens "
              f"charged, {t['evaluated']:.0f} evaluated ({share:.1%}), {t['prompt_s']:.2f} s on "
              f"prompts, {t['wall_s']:.2f} s in policy calls")


if __name__ == "__main__":
    main()
