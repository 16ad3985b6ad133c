"""In-process llama.cpp through ``xllamacpp``: the embedded default backend.

The server object of xllamacpp runs llama.cpp's own slot scheduler in-process: requests
handed to it from several threads are decoded together in one batch (continuous batching),
and ``n`` samples of one request share its prompt. Sample ``i`` of a request gets seed
``seed + i`` from llama.cpp itself, so the same sample is reproduced whatever ``n`` is.

Prefix reuse: with ``cache_prompt`` (the default) a request whose prompt starts like what a
slot already holds (llama.cpp picks the idle slot with the longest common prefix, and keeps
evicted prefixes in a host-memory prompt cache) evaluates only the new tail. A step-level
search continues a partial answer each round, so each round re-evaluates only the last step.
Usage still counts the whole prompt of every sample: a cached token is a prompt token the
sample conditions on, and counting it keeps costs comparable across backends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ttscale.backends.base import chat_to_openai, strip_prefill, wait_for
from ttscale.backends.streaming import StreamedSample, Watch, stream_body, usage_of
from ttscale.errors import BackendError, ConfigError, require
from ttscale.params import SamplingParams
from ttscale.types import (
    Chat,
    FinishReason,
    GenerateOutput,
    Generation,
    Prompt,
    TokenLogprob,
    Usage,
)


def parse_logprobs(block: Any, want: bool) -> tuple[int, tuple[TokenLogprob, ...] | None]:
    """Token count and (if wanted) log-probabilities from an OpenAI-shaped logprobs block."""
    content = (block or {}).get("content") or []
    if not want:
        return len(content), None
    lps = tuple(
        TokenLogprob(
            t.get("token", ""),
            float(t.get("logprob", 0.0)),
            tuple((c.get("token", ""), float(c.get("logprob", 0.0)))
                  for c in t.get("top_logprobs") or ()),
        )
        for t in content
    )
    return len(content), lps


def _env_flag(name: str, default: bool) -> bool:
    """A 0/1 switch from the environment; anything else is refused in one sentence."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value not in ("0", "1"):
        raise ConfigError(f"{name} must be 0 or 1, got {value!r}: unset it for the default")
    return value == "1"


class LlamaCppBackend:
    """Runs a GGUF model in this process.

    Args:
        model: a named model (``ttscale models``), a ``.gguf`` path or ``hf:OWNER/REPO/FILE``.
        parallel: decoding slots; samples beyond it wait for a free slot.
        ctx_per_slot: context tokens per slot (prompt + completion of one sample).
        threads: CPU threads (default: all cores).
        cache_prompt: reuse the KV cache of a prompt's longest prefix a slot already holds.
        metrics: serve llama.cpp's Prometheus counters (``server_metrics``), for benches.
        extra_buffers: let llama.cpp repack weights into its CPU-specific buffers (AMX,
            repacked quantizations). Default: ``$TTSCALE_LLAMA_EXTRA_BUFFERS`` (0 or 1), else
            on. Off is the way round a llama.cpp built for an AMX CPU that crashes loading
            Q4_K weights into the AMX buffer (ggml-org/llama.cpp issue 20824).

    Example:
        >>> be = LlamaCppBackend("smollm2-135m", parallel=2)  # doctest: +SKIP
        >>> be.generate([Chat.user("2+2?")], SamplingParams(n=2, max_tokens=8))  # doctest: +SKIP
    """

    name = "llamacpp"

    def __init__(
        self,
        model: str | None = None,
        *,
        parallel: int = 8,
        ctx_per_slot: int = 2048,
        threads: int | None = None,
        cache_prompt: bool = True,
        metrics: bool = False,
        extra_buffers: bool | None = None,
    ) -> None:
        from ttscale import models

        if extra_buffers is None:
            extra_buffers = _env_flag("TTSCALE_LLAMA_EXTRA_BUFFERS", True)

        model = model or models.DEFAULT_MODEL
        path, spec = models.resolve(model)
        xl: Any = require("xllamacpp", "llamacpp")
        p = xl.CommonParams()
        p.model.path = str(path)
        p.n_parallel = parallel
        p.n_ctx = parallel * ctx_per_slot
        n_threads = threads or os.cpu_count() or 1
        p.cpuparams.n_threads = n_threads
        p.cpuparams_batch.n_threads = n_threads
        p.warmup = False
        p.endpoint_metrics = metrics
        p.verbosity = -1  # llama.cpp logs every slot event otherwise
        p.no_extra_bufts = not extra_buffers
        try:
            self._server = xl.Server(p)
        except Exception as exc:
            raise BackendError(f"llama.cpp could not load {path} ({exc}): check the file "
                               "is a valid GGUF model") from exc
        self.parallel = parallel
        self.cache_prompt = cache_prompt
        self.extra_buffers = extra_buffers
        self._stop_tokens: dict[str, int] = {}
        self._pieces: dict[int, str] = {}
        self.model_id = spec.name if spec else Path(path).stem
        self.model_path = Path(path)
        self.sha256 = spec.sha256 if spec else None
        self.params_count = self._read_params_count(spec.params_count if spec else 0)
        self._pool = ThreadPoolExecutor(max_workers=max(4, parallel), thread_name_prefix="llama")

    @property
    def address(self) -> str:
        """The OpenAI-compatible HTTP address the embedded server also listens on."""
        return str(self._server.listening_address)

    def _read_params_count(self, fallback: int) -> int:
        import httpx

        try:
            meta = httpx.get(self.address + "/v1/models", timeout=5).json()["data"][0]["meta"]
            return int(meta["n_params"])
        except Exception:  # the count is informative only; the catalogue value is close
            return fallback

    def count_tokens(self, prompt: Prompt) -> int:
        """Exact prompt tokens, chat template included (llama.cpp's own tokenizer)."""
        import httpx

        try:
            if isinstance(prompt, Chat):
                body = {"messages": chat_to_openai(prompt)}
                text = httpx.post(self.address + "/apply-template", json=body, timeout=30).json()
                prompt_text = str(text["prompt"])
            else:
                prompt_text = prompt
            toks = httpx.post(self.address + "/tokenize",
                              json={"content": prompt_text, "parse_special": True}, timeout=30)
            return len(toks.json()["tokens"])
        except Exception as exc:
            raise BackendError(f"llama.cpp could not tokenize the prompt ({exc})") from exc

    def server_metrics(self) -> dict[str, float]:
        """llama.cpp's counters (``prompt_tokens_total``: prompt tokens actually evaluated,
        ``prompt_seconds_total``, ``tokens_predicted_total``, ...); needs ``metrics=True``."""
        text = str(self._server.handle_metrics()) if self._server is not None else ""
        if text.lstrip().startswith("{"):
            raise BackendError("llama.cpp metrics are off: build the backend with metrics=True")
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name.split("llamacpp:", 1)[-1]] = float(value)
        return out

    def stop_tokens(self, stop: str) -> int:
        """Tokens of a stop string: llama.cpp decodes them but drops them from the
        log-probabilities it returns, so they are added back to count a sample exactly."""
        if stop not in self._stop_tokens:
            import httpx

            try:
                toks = httpx.post(self.address + "/tokenize",
                                  json={"content": stop, "add_special": False}, timeout=30)
                self._stop_tokens[stop] = max(1, len(toks.json()["tokens"]))
            except Exception as exc:
                raise BackendError(f"llama.cpp could not tokenize the stop string ({exc})"
                                   ) from exc
        return self._stop_tokens[stop]

    def _hit_stop(self, choice: dict[str, Any], stops: Sequence[str]) -> bool:
        """Whether a stop string, not the model's end-of-generation token, ended a sample.

        llama.cpp lists the end token last (with empty text), and cuts a stop string's
        tokens from the list; a token only partly cut keeps its place with its text emptied.
        So an empty last token is the end token unless its own text lies inside a stop."""
        content = (choice.get("logprobs") or {}).get("content") or []
        if not content:
            return True  # nothing but the stop string was generated
        last = content[-1]
        if last.get("token") or last.get("bytes") or "id" not in last:
            return True
        piece = self._piece(int(last["id"]))
        return bool(piece) and any(piece in s for s in stops)

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            import httpx

            try:
                r = httpx.post(self.address + "/detokenize", json={"tokens": [token]},
                               timeout=30)
                self._pieces[token] = str(r.json()["content"])
            except Exception as exc:
                raise BackendError(f"llama.cpp could not detokenize token {token} ({exc})"
                                   ) from exc
        return self._pieces[token]

    def _request(self, prompt: Prompt, params: SamplingParams, n: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "cache_prompt": self.cache_prompt,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if isinstance(prompt, Chat):
            body["messages"] = chat_to_openai(prompt)
            # logprobs are always asked for: llama.cpp reports usage for the first sample
            # only, and the per-token list is the exact completion length of each sample.
            body["logprobs"] = True
            if params.logprobs and params.top_logprobs:
                body["top_logprobs"] = params.top_logprobs
        else:
            body["prompt"] = prompt
            body["logprobs"] = max(1, params.top_logprobs if params.logprobs else 1)
        return body

    def _call(self, prompt: Prompt, params: SamplingParams, n: int, seed: int) -> list[Generation]:
        if self._server is None:
            raise BackendError("this llama.cpp backend is closed: create a new one")
        body = self._request(prompt, params, n, seed)
        try:
            if isinstance(prompt, Chat):
                resp = self._server.handle_chat_completions(body)
            else:
                resp = self._server.handle_completions(body)
        except Exception as exc:
            raise BackendError(f"llama.cpp rejected the request: {exc}") from exc
        if "error" in resp:
            err = resp["error"]
            raise BackendError(f"llama.cpp rejected the request: {err.get('message', err)}")
        prompt_tokens = int(resp["usage"]["prompt_tokens"])
        # A stop string's tokens are decoded but left out of the log-probabilities; the
        # shortest stop is assumed when several could have matched.
        stop_tokens = min((self.stop_tokens(s) for s in params.stop), default=0)
        gens = []
        for i, choice in enumerate(sorted(resp["choices"], key=lambda c: c["index"])):
            if isinstance(prompt, Chat):
                text = strip_prefill(choice["message"].get("content") or "", prompt.prefill)
            else:
                text = choice.get("text") or ""
            count, lps = parse_logprobs(choice.get("logprobs"), params.logprobs)
            finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
            hit = finish == "stop" and bool(params.stop) and self._hit_stop(choice, params.stop)
            if hit:
                count += stop_tokens
            gens.append(Generation(text, prompt_tokens, count, finish, lps, seed + i, hit))
        return gens

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        """Sample ``params.n`` completions for every prompt, all decoded together."""
        start = time.perf_counter()
        # n is capped at the slot count by llama.cpp: split it, keeping the seed per sample.
        jobs = []
        for prompt in prompts:
            for offset in range(0, params.n, self.parallel):
                n = min(self.parallel, params.n - offset)
                jobs.append(self._pool.submit(self._call, prompt, params, n, params.seed + offset))
        results = [wait_for(j) for j in jobs]
        seconds = time.perf_counter() - start
        out: list[tuple[Generation, ...]] = []
        k = 0
        usage = Usage(seconds=seconds)
        for _ in prompts:
            gens: list[Generation] = []
            for _offset in range(0, params.n, self.parallel):
                gens.extend(results[k])
                k += 1
                usage = usage + Usage(calls=1)
            for g in gens:
                usage = usage + Usage.of(g.prompt_tokens, g.completion_tokens,
                                         self.params_count, 0.0, calls=0)
            out.append(tuple(gens))
        return GenerateOutput(tuple(out), usage)

    def generate_watched(self, prompt: Prompt, params: SamplingParams,
                         watch: Watch) -> GenerateOutput:
        """``params.n`` samples of ``prompt``, each streamed in its own request (seed
        ``seed + i``) so that ``watch`` can abort one without the others; an aborted sample
        is charged its prompt and the tokens it had (``ttscale.backends.streaming``).
        The prompt cache lets the requests share one prompt evaluation."""
        start = time.perf_counter()
        samples = [StreamedSample(i, params.seed + i, watch,
                                  params.top_logprobs if params.logprobs else 0,
                                  chat=isinstance(prompt, Chat)) for i in range(params.n)]
        for job in [self._pool.submit(self._stream, prompt, params, s) for s in samples]:
            wait_for(job)
        failed = [s.error for s in samples if s.error]
        if failed:
            raise BackendError(f"llama.cpp rejected the request: {failed[0]}")
        # An aborted sample gets no usage report: its prompt is counted by the tokenizer.
        counted = (self.count_tokens(prompt) if any(s.prompt_tokens is None for s in samples)
                   else 0)
        gens = tuple(s.generation(counted) for s in samples)
        return GenerateOutput((gens,), usage_of(gens, self.params_count,
                                                time.perf_counter() - start, len(samples)))

    def _stream(self, prompt: Prompt, params: SamplingParams, sample: StreamedSample) -> None:
        if self._server is None:
            raise BackendError("this llama.cpp backend is closed: create a new one")
        body = stream_body(self._request(prompt, params, 1, sample.seed), params)
        handle = (self._server.handle_chat_completions if isinstance(prompt, Chat)
                  else self._server.handle_completions)
        try:
            # The callback runs on llama.cpp's thread for every chunk; True stops the
            # request, which llama.cpp then cancels (a token or two may be decoded after).
            handle(body, sample.feed)
        except Exception as exc:
            raise BackendError(f"llama.cpp rejected the request: {exc}") from exc

    def close(self) -> None:
        """Stop the worker threads and free the model (its memory goes with the server)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._server = None
