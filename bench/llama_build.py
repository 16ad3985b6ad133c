"""Two builds of xllamacpp side by side: the installed one and one at ``--other``.

Each build runs in its own process (one loaded model, the same work): the self-judge reading
8 GSM8K test solutions (prompt processing), then 8 samples decoded together (generation).
The builds alternate ``--rounds`` times so drift in machine load falls on both, and the
ratios other / installed are printed. ``--other`` is a folder holding an ``xllamacpp``
package, such as ``pip install --target DIR`` of a wheel built from source for this CPU.

    python bench/llama_build.py --other /tmp/native-site --extra-buffers 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from ttscale.types import Chat


def measure(model: str) -> dict[str, float | str]:
    """Prompt and generation tokens a second of the xllamacpp this process imports."""
    import xllamacpp

    from ttscale.answers import solve_prompt
    from ttscale.backends.llamacpp import LlamaCppBackend
    from ttscale.evaluation import load_dataset
    from ttscale.params import SamplingParams
    from ttscale.verifiers.self_judge import SelfJudge

    problems = load_dataset("gsm8k", "test")[:8]
    be = LlamaCppBackend(model, parallel=8, ctx_per_slot=2048)
    try:
        # solutions to judge: this model's greedy answers (a build may change a token here
        # and there; the rates are per token)
        solved = be.generate([solve_prompt(p.question) for p in problems],
                             SamplingParams(n=1, temperature=0.0, max_tokens=256, seed=1))
        judge = SelfJudge(be)
        t = time.perf_counter()
        scored = [judge.score(p.question, [g[0].text]) for p, g in
                  zip(problems, solved.generations, strict=True)]
        judge_s = time.perf_counter() - t
        t = time.perf_counter()
        out = be.generate([Chat.user(f"Write a short story, number {i}.") for i in range(8)],
                          SamplingParams(n=1, temperature=0.7, max_tokens=128, seed=1))
        gen_s = time.perf_counter() - t
    finally:
        be.close()
    return {"build": xllamacpp.__file__,
            "prompt_tok_s": sum(s.usage.prompt_tokens for s in scored) / judge_s,
            "gen_tok_s": out.usage.completion_tokens / gen_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--other", required=True, help="folder holding the other xllamacpp")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--extra-buffers", choices=("0", "1"), default="1",
                    help="TTSCALE_LLAMA_EXTRA_BUFFERS for the other build")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.model)))
        return
    runs: dict[str, list[dict[str, float | str]]] = {"installed": [], "other": []}
    for _ in range(a.rounds):
        for side in ("installed", "other"):
            env = dict(os.environ)
            if side == "other":
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [a.other,
                                                                  env.get("PYTHONPATH")]))
                env["TTSCALE_LLAMA_EXTRA_BUFFERS"] = a.extra_buffers
            done = subprocess.run([sys.executable, __file__, "--child", "--other", a.other,
                                   "--model", a.model], env=env, capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"the {side} build failed (exit {done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1:]}")
            runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for key, what in (("prompt_tok_s", "self-judge prompt tokens/s"),
                      ("gen_tok_s", "8 samples decoded together, tokens/s")):
        mine, other = (sum(float(r[key]) for r in runs[s]) / a.rounds
                       for s in ("installed", "other"))
        print(f"{what}: installed {mine:.1f}, other {other:.1f}, ratio {other / mine:.2f}")
    print("installed:", runs["installed"][0]["build"], "| other:", runs["other"][0]["build"])


if __name__ == "__main__":
    main()
