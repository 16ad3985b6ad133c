"""In-process llama.cpp through ``xllamacpp``: the embedded default backend.

The server object of xllamacpp runs llama.cpp's own slot scheduler in-process: requests
handed to it from several threads are decoded together in one batch (continuous batching),
and ``n`` samples of one request share its prompt. Sample ``i`` of a request gets seed
``seed + i`` from llama.cpp itself, so the same sample is reproduced whatever ``n`` is.

Prefix reuse: with ``cache_prompt`` a request whose prompt starts like what a slot already
holds (llama.cpp picks the idle slot with the longest common prefix, and keeps evicted
prefixes in a host-memory prompt cache) evaluates only the new tail. A step-level search
continues a partial answer each round, so each round re-evaluates only the last step.
Usage still counts the whole prompt of every sample: a cached token is a prompt token the
sample conditions on, and counting it keeps costs comparable across backends.

Reproducibility: a reused prefix changes the floating-point path of the prompt's last
tokens (evaluated alone instead of in one batch with the rest), so the same seeded request
samples differently once its prompt is cached. Hence the default reuses prefixes only for
continuations (a chat with a ``prefill``: search steps, budget forcing, DeepConf online's
streamed samples), and evaluates a fresh prompt in full: its samples are then the same on
every call, alone or batched beside other requests (measured on CPU with the 135M model:
``tests/test_cancel.py``). Costs a prompt evaluation per request, small beside decoding.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ttscale.backends.base import WAKE_SECONDS, chat_to_openai, strip_prefill, wait_for
from ttscale.backends.streaming import OnText, StreamedSample, Watch, stream_body, usage_of
from ttscale.cancel import Cancel, current, is_cancelled
from ttscale.errors import BackendError, Cancelled, ConfigError, require
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

T = TypeVar("T")
Stop = Callable[[], bool]

def parse_logprobs(block: Any, want: bool) -> tuple[int, tuple[TokenLogprob, ...] | None]:
    """Token count and (if wanted) log-probabilities from an OpenAI-shaped logprobs block.

    Example:
        >>> tok = {"token": "4", "logprob": -0.1, "top_logprobs": [{"token": "4", "logprob": -0.1}]}
        >>> parse_logprobs({"content": [tok]}, want=False)
        (1, None)
        >>> count, lps = parse_logprobs({"content": [tok]}, want=True)
        >>> count, lps[0].token, lps[0].top
        (1, '4', (('4', -0.1),))
    """
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


def streamable(prompt: Prompt, params: SamplingParams) -> bool:
    """Whether a request streams to exactly the samples a whole answer gives: a chat
    prompt without prefill, stop strings or kept log-probabilities. Then the texts are
    the same and only the end token, which a whole answer lists last and a stream leaves
    out, is added back to the count. A stream holds back the tokens of a possible stop
    string and drops their log-probabilities, so the others are sent whole.

    Example:
        >>> streamable(Chat.user("2+2?"), SamplingParams())
        True
        >>> streamable(Chat.user("2+2?"), SamplingParams(stop=("\\n\\n",)))
        False
    """
    return (isinstance(prompt, Chat) and not prompt.prefill and not params.stop
            and not params.logprobs)


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
        cache_prompt: reuse the KV cache of a prompt's longest prefix a slot already holds:
            True always, False never, None (default) for continuations and streamed
            watched samples only, so that fresh prompts sample reproducibly.
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
        cache_prompt: bool | None = None,
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

    def _reuse(self, prompt: Prompt) -> bool:
        """Whether a request reuses a cached prefix (see the module's note on
        reproducibility)."""
        if self.cache_prompt is not None:
            return self.cache_prompt
        return isinstance(prompt, Chat) and bool(prompt.prefill)

    def _request(self, prompt: Prompt, params: SamplingParams, n: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "cache_prompt": self._reuse(prompt),
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

    def _call(self, prompt: Prompt, params: SamplingParams, n: int, offset: int, stop: Stop,
              on_text: OnText | None) -> list[Generation]:
        """Samples ``offset`` to ``offset + n - 1`` of ``prompt`` in one request."""
        seed = params.seed + offset
        if streamable(prompt, params):
            return self._call_streamed(prompt, params, n, offset, stop, on_text)
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
        if on_text is not None:
            for i, g in enumerate(gens):
                on_text(offset + i, g.text)
        return gens

    def _gather(self, jobs: list[Future[T]], halt: Cancel, token: Cancel | None) -> list[T]:
        """The jobs' results. A job that fails, a set token or an exception here (Ctrl-C)
        halts the others, which stop within a token or ``WAKE_SECONDS``; then it raises."""
        try:
            for job in jobs:
                wait_for(job)
            if is_cancelled(token):
                raise Cancelled(f"cancelled: {token.reason if token else ''}")
            return [job.result() for job in jobs]
        except BaseException:
            halt.set("the call failed")
            # Bounded: the jobs poll the token, llama.cpp cancels a closed request itself.
            concurrent.futures.wait(jobs, timeout=4 * WAKE_SECONDS)
            raise

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        """Sample ``params.n`` completions for every prompt, all decoded together.

        A cancel token in scope (``ttscale.cancel``) stops the requests in flight at their
        next token and ``Cancelled`` is raised: llama.cpp can cancel a streamed request
        only, so every request that streams exactly (see ``streamable``) is streamed."""
        return self._generate(prompts, params, None)

    def generate_streamed(self, prompt: Prompt, params: SamplingParams,
                          on_text: OnText) -> GenerateOutput:
        """``generate`` for one prompt, each sample's text given to ``on_text(i, piece)``
        as it is decoded (on llama.cpp's thread: keep it short). A request that does not
        stream exactly (``streamable``) hands over each whole text when it is done."""
        return self._generate([prompt], params, on_text)

    def _generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                  on_text: OnText | None) -> GenerateOutput:
        start = time.perf_counter()
        token, halt = current(), Cancel()

        def stop() -> bool:
            return halt.is_set or is_cancelled(token)

        # n is capped at the slot count by llama.cpp: split it, keeping the seed per sample.
        jobs = []
        for prompt in prompts:
            for offset in range(0, params.n, self.parallel):
                n = min(self.parallel, params.n - offset)
                jobs.append(self._pool.submit(self._call, prompt, params, n, offset, stop,
                                              on_text))
        results = self._gather(jobs, halt, token)
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

    def _call_streamed(self, prompt: Prompt, params: SamplingParams, n: int, offset: int,
                       stop: Stop, on_text: OnText | None) -> list[Generation]:
        """One streamed request, the same samples as a whole one (``streamable``): each
        chunk is a chance to stop it, which is how llama.cpp cancels."""
        if self._server is None:
            raise BackendError("this llama.cpp backend is closed: create a new one")
        seed = params.seed + offset
        body = dict(self._request(prompt, params, n, seed), stream=True,
                    stream_options={"include_usage": True})
        samples = [StreamedSample(i, seed + i, lambda _i, _t: False) for i in range(n)]
        prompt_tokens: list[int] = []
        failed: list[str] = []

        def feed(chunk: dict[str, Any]) -> bool:
            if stop():
                return True
            if "error" in chunk or ("code" in chunk and "message" in chunk):
                err = chunk.get("error", chunk)
                failed.append(str(err.get("message", err) if isinstance(err, dict) else err))
                return True
            usage = chunk.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                prompt_tokens.append(int(usage["prompt_tokens"]))
            for choice in chunk.get("choices") or ():
                i = int(choice.get("index") or 0)
                samples[i].feed({"choices": [choice]})
                piece = (choice.get("delta") or {}).get("content")
                if piece and on_text is not None:
                    on_text(offset + i, piece)
            return False

        try:
            self._server.handle_chat_completions(body, feed)
        except Exception as exc:
            raise BackendError(f"llama.cpp rejected the request: {exc}") from exc
        if stop():
            raise Cancelled("cancelled: the request was stopped")
        if failed:
            raise BackendError(f"llama.cpp rejected the request: {failed[0]}")
        counted = prompt_tokens[-1] if prompt_tokens else self.count_tokens(prompt)
        gens = []
        for s in samples:
            g = s.generation(counted)
            # a stream leaves out the end token that a whole answer lists (and counts)
            gens.append(Generation(g.text, g.prompt_tokens,
                                   g.completion_tokens + (g.finish_reason == "stop"),
                                   g.finish_reason, None, g.seed, False))
        return gens

    def generate_watched(self, prompt: Prompt, params: SamplingParams,
                         watch: Watch) -> GenerateOutput:
        """``params.n`` samples of ``prompt``, each streamed in its own request (seed
        ``seed + i``) so that ``watch`` can abort one without the others; an aborted sample
        is charged its prompt and the tokens it had (``ttscale.backends.streaming``).
        The prompt cache lets the requests share one prompt evaluation."""
        start = time.perf_counter()
        token, halt = current(), Cancel()

        def stop() -> bool:
            return halt.is_set or is_cancelled(token)

        samples = [StreamedSample(i, params.seed + i, watch,
                                  params.top_logprobs if params.logprobs else 0,
                                  chat=isinstance(prompt, Chat)) for i in range(params.n)]
        self._gather([self._pool.submit(self._stream, prompt, params, s, stop)
                      for s in samples], halt, token)
        failed = [s.error for s in samples if s.error]
        if failed:
            raise BackendError(f"llama.cpp rejected the request: {failed[0]}")
        # An aborted sample gets no usage report: its prompt is counted by the tokenizer.
        counted = (self.count_tokens(prompt) if any(s.prompt_tokens is None for s in samples)
                   else 0)
        gens = tuple(s.generation(counted) for s in samples)
        return GenerateOutput((gens,), usage_of(gens, self.params_count,
                                                time.perf_counter() - start, len(samples)))

    def _stream(self, prompt: Prompt, params: SamplingParams, sample: StreamedSample,
                stop: Stop) -> None:
        if self._server is None:
            raise BackendError("this llama.cpp backend is closed: create a new one")
        body = stream_body(self._request(prompt, params, 1, sample.seed), params)
        # the n requests of one call share the prompt through the cache (one evaluation)
        body["cache_prompt"] = self.cache_prompt is not False
        handle = (self._server.handle_chat_completions if isinstance(prompt, Chat)
                  else self._server.handle_completions)
        try:
            # The callback runs on llama.cpp's thread for every chunk; True stops the
            # request, which llama.cpp then cancels (a token or two may be decoded after).
            handle(body, lambda chunk: stop() or sample.feed(chunk))
        except Exception as exc:
            raise BackendError(f"llama.cpp rejected the request: {exc}") from exc
        if stop():
            raise Cancelled("cancelled: the request was stopped")

    def close(self) -> None:
        """Stop the worker threads and free the model (its memory goes with the server)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._server = None
