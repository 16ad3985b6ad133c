"""Where SPRM features come from: llama.cpp embeddings against transformers, side by side.

The SPRM head reads the policy's hidden state at the token that ends each step, so scoring
re-reads prompt + trace. Two ways to get those hidden states without a second llama.cpp
model in memory:

- ``llamacpp``: a second xllamacpp server on the same GGUF (mmapped: its weight pages are
  shared with the generating server), embeddings on, pooling none, per-token vectors from
  its ``/embedding`` route. That vector is the final RMSNorm's output (the input of the LM
  head). xllamacpp's ``CommonParams`` has no key-value overrides, so the depth cannot be cut
  (``<arch>.block_count``): every layer is run.
- ``torch@K``: transformers loads the GGUF (``gguf_file=``), dequantised to float32 (a
  second copy of the weights: its resident memory is printed), and runs only the first K
  layers; the final norm is applied to the residual stream after layer K. The question's
  prompt is run once and its keys/values are shared by all traces of the question.

The same workload (one question prompt, ``--traces`` traces) runs through each variant in
turn, the order rotating every round, so machine load falls on all alike. Throughput counts
prompt + trace tokens per trace, the tokens a scorer must account for.

    nice -n 19 python bench/sprm_features.py --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def _rss_mib() -> int:
    with open("/proc/self/status") as f:
        text = f.read()
    return int(text.split("VmRSS:")[1].split()[0]) // 1024


def workload(traces: int) -> tuple[str, list[str]]:
    """A GSM8K train prompt (chat template applied by the caller) and traces of steps made
    from other questions' text, about as long as a real trace."""
    from ttscale.evaluation.datasets import load_dataset

    problems = load_dataset("gsm8k", "train")
    steps = [p.question for p in problems[1: 1 + 4 * traces]]
    made = ["\n\n".join(steps[4 * i: 4 * i + 4]) + "\n\nThe answer is \\boxed{7}."
            for i in range(traces)]
    return problems[0].question, made


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--traces", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depths", default="1,0.5,0.25",
                    help="fractions of the layers the torch variants run")
    args = ap.parse_args()

    import httpx
    import torch
    import xllamacpp as xl

    from ttscale import models
    from ttscale.answers import solve_prompt
    from ttscale.verifiers.sprm.features import TorchFeatures, chat_text

    torch.set_num_threads(args.threads)
    path, _ = models.resolve(args.model)
    question, traces = workload(args.traces)

    base = _rss_mib()
    p = xl.CommonParams()
    p.model.path = str(path)
    p.embedding = True
    p.pooling_type = xl.llama_pooling_type.LLAMA_POOLING_TYPE_NONE
    p.n_parallel = args.traces
    p.n_ctx = args.traces * 2048
    p.n_batch = p.n_ubatch = 2048  # an embedding input must fit in one micro-batch
    # one KV stream per slot: with one shared stream, every token would attend over the
    # cells of all 8 traces (masked), several times the attention work
    p.kv_unified = False
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = args.threads
    p.warmup = False
    p.verbosity = -1
    server = xl.Server(p)
    address = server.listening_address
    llama_mib = _rss_mib() - base
    pool = ThreadPoolExecutor(args.traces)
    http = httpx.Client(timeout=600)
    tpl = http.post(address + "/apply-template",
                    json={"messages": [{"role": m.role, "content": m.content}
                                       for m in solve_prompt(question).messages]}).json()
    prompt_text = str(tpl["prompt"])

    def llama() -> int:
        def one(trace: str) -> int:
            out = http.post(address + "/embedding", json={"content": prompt_text + trace})
            return len(out.json()[0]["embedding"])
        return sum(pool.map(one, traces))

    before = _rss_mib()
    depths = [float(x) for x in args.depths.split(",")]
    feats = TorchFeatures.load(str(path), all_layers=True, threads=args.threads)
    torch_mib = _rss_mib() - before
    full = feats.n_layers
    prompt_chat = chat_text(feats.tokenizer, question)

    def torch_at(layers: int) -> Callable[[], int]:
        def run() -> int:
            out = feats.extract(prompt_chat, traces, "\n\n", layer=layers)
            return sum(o.tokens for o in out)
        return run

    variants: dict[str, Callable[[], int]] = {"llamacpp (all layers)": llama}
    for d in depths:
        k = max(1, round(full * d))
        variants[f"torch@{k}/{full}"] = torch_at(k)
    for fn in variants.values():
        fn()  # warm-up: first-call allocations are not what a scorer pays per question
    times: dict[str, list[float]] = {k: [] for k in variants}
    tokens: dict[str, int] = {}
    names = list(variants)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            tokens[name] = variants[name]()
            times[name].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names),
              flush=True)
    print(f"\n{args.model}, {args.traces} traces of one question, {args.rounds} rounds, "
          f"{args.threads} threads")
    print(f"resident memory added: llama.cpp embedding server {llama_mib} MiB (weights "
          f"mmapped, shared with a generating server); transformers float32 {torch_mib} MiB")
    ref = statistics.median(times[names[0]])
    for name in names:
        med = statistics.median(times[name])
        print(f"  {name:24s} median {med:6.2f} s  {tokens[name] / med:8.0f} tokens/s "
              f"(prompt + trace per trace)  x{ref / med:.2f} vs llama.cpp")
    info: Any = server
    del info
    http.close()


if __name__ == "__main__":
    main()
