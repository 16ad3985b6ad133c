"""Any OpenAI-compatible HTTP server: llama.cpp's ``llama-server``, vLLM, SGLang, OpenAI.

Requests go out concurrently from one aiohttp session (``openai_http``) that lives on a
private event loop in a background thread, so ``generate`` is a plain blocking function
that works from any thread, also from code that already runs an event loop (a notebook, a
web app).

Samples keep the seed semantics of every ttscale backend: sample ``i`` uses seed
``seed + i``. One request with ``n`` does that on llama.cpp; a server that ignores ``n`` is
detected and sent one request per sample instead, with seed ``seed + i`` each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from ttscale.backends.base import WAKE_SECONDS, strip_prefill, wait_for
from ttscale.backends.openai_decode import ShapeError, decode_answer
from ttscale.backends.openai_http import Failure, Http, Reply, lines, quiet_unclosed, read_all
from ttscale.backends.openai_stream import (
    completion_counts,
    completion_path,
    n_rejected,
    read_events,
    request_body,
    server_message,
)
from ttscale.backends.openai_tokens import TokenCounter
from ttscale.backends.openai_wire import (
    NRejected,
    RequestStats,
    TokenizeUnavailable,
    base_urls,
    check_options,
    estimate_tokens,
    gather,
    gave_up,
    normalize_base_url,
    one_line,
    parse_choice_logprobs,
    prompt_text,
    retry_after_seconds,
    retry_delay,
    split_tokens,
)
from ttscale.backends.packed import PackedGeneration
from ttscale.backends.streaming import StreamedSample, Watch, stream_body, usage_of
from ttscale.cancel import current
from ttscale.errors import BackendError, Cancelled
from ttscale.params import SamplingParams
from ttscale.types import Chat, GenerateOutput, Generation, Prompt, Usage

# The wire helpers stay importable from here, where they were first defined.
__all__ = ["DEFAULT_BASE_URL", "OpenAIBackend", "estimate_tokens", "normalize_base_url",
           "parse_choice_logprobs", "prompt_text", "split_tokens"]

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
CLOSE_SECONDS = 5.0  # the longest close() waits for the loop to wind down, twice


class OpenAIBackend:
    """Samples from an OpenAI-compatible server over HTTP.

    Args:
        model: the server's model name; None asks the server (``GET /models``, first one).
        base_url: the API root, with or without the trailing ``/v1``; several (a list, or
            comma-separated) take the completion requests in turn, a simple spread over
            identical servers: balancing a fleet's load is a router's job.
        api_key_env: the environment variable holding the API key (sent as a bearer token,
            never logged); unset means no key, which local servers accept.
        timeout: seconds to wait for one answer (long completions take minutes).
        max_retries: retries of one request on 429, 5xx, timeouts and connection errors.
        concurrency: requests in flight at once, over all ``generate`` calls.
        params_count: model parameters, for FLOPs (0: unknown; read from llama.cpp's
            ``/models`` when the model is auto-detected).
        use_n: send ``n`` samples in one request (True), one request per sample (False), or
            try ``n`` and fall back for good when the server ignores it (None).
        backoff: first retry delay in seconds, doubled on each retry, with jitter.

    Example:
        >>> be = OpenAIBackend(base_url="http://127.0.0.1:8080")  # doctest: +SKIP
        >>> out = be.generate([Chat.user("2+2?")], SamplingParams(n=4))  # doctest: +SKIP
        >>> len(out.generations[0]), out.usage.calls  # doctest: +SKIP
        (4, 1)
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | Sequence[str] = DEFAULT_BASE_URL,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 600,
        max_retries: int = 4,
        concurrency: int = 16,
        params_count: int = 0,
        use_n: bool | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        check_options(timeout=timeout, max_retries=max_retries, concurrency=concurrency,
                      params_count=params_count, backoff=min(backoff, max_backoff))
        self.base_urls = base_urls(base_url)
        self.base_url = self.base_urls[0]  # model discovery and token counting ask this one
        self._turn = itertools.cycle(self.base_urls)
        self.root_url = self.base_url[: -len("/v1")]
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.params_count = params_count
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._use_n = use_n
        self._auto_n = use_n is None
        self._max_n: int | None = None  # the largest n the server accepts, once learned
        self._counter = TokenCounter(self._post_root, lambda: self.model_id)
        # Read once and kept private: the key must never reach a log or an error message.
        self._api_key = os.environ.get(api_key_env) or None
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(quiet_unclosed)
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="ttscale-openai", daemon=True)
        self._thread.start()
        self._http = self._run(self._open())
        self.model_id = model or ""
        if model is None:
            try:
                self.model_id = self._run(self._detect_model())
            except BaseException:
                self.close()
                raise

    def __repr__(self) -> str:
        where = self.base_url if len(self.base_urls) == 1 else list(self.base_urls)
        return f"OpenAIBackend(model={self.model_id!r}, base_url={where!r})"

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def use_n(self) -> bool | None:
        """Whether ``n`` goes in one request: None until the server has shown whether it can."""
        return self._use_n

    # -- the event loop thread -------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the private loop and wait for it from this thread."""
        if self._closed:
            coro.close()
            raise BackendError("this OpenAIBackend is closed: create a new one to keep sampling")
        if threading.current_thread() is self._thread:
            coro.close()  # waiting on our own loop from inside it would hang forever
            raise BackendError("OpenAIBackend was called from its own event loop: call it "
                               "from another thread")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        token = current()
        try:
            if token is None:
                return wait_for(future)
            while not future.done():
                concurrent.futures.wait([future], timeout=WAKE_SECONDS)
                if token.is_set and not future.done():
                    # Cancelling the task closes its connections and streams: the server
                    # sees the client go and stops decoding (llama.cpp, vLLM, SGLang).
                    future.cancel()
                    raise Cancelled(f"cancelled: {token.reason}")
            return future.result()
        except concurrent.futures.CancelledError:
            raise BackendError("the backend was closed while a request was running: close it "
                               "only after generate returns") from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: stop the requests too
            raise

    async def _open(self) -> Http:
        # Made on the loop that uses them: asyncio objects belong to one loop.
        self._sem = asyncio.Semaphore(self.concurrency)
        return Http(connections=self.concurrency + 4, timeout=self.timeout,
                    api_key=self._api_key,
                    tls=any(u.startswith("https://") for u in self.base_urls))

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._http.close()

    def close(self) -> None:
        """Close the connections and stop the loop thread; calling it again does nothing.
        Bounded: cancelled requests end within milliseconds, and a close that follows a
        Ctrl-C must not keep the user waiting on a server that never answers."""
        if self._closed:
            return
        if threading.current_thread() is not self._thread:
            # Closing must not fail: the process may be exiting anyway.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(
                    CLOSE_SECONDS)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=CLOSE_SECONDS)  # a daemon: never blocks the exit
            if not self._loop.is_running():
                self._loop.close()

    # -- HTTP with retries --------------------------------------------------------------

    def _clean(self, message: str) -> str:
        """One line, with the API key blanked out should a server echo it back."""
        if self._api_key:
            message = message.replace(self._api_key, "***")
        return one_line(message, limit=400)

    def _error(self, message: str) -> BackendError:
        return BackendError(self._clean(message))

    def _where(self, url: str) -> str:
        """The base URL that ``url`` was sent to (the first if none is its prefix)."""
        return next((b for b in self.base_urls if url.startswith(b[: -len("v1")])),
                    self.base_url)

    def _shape_error(self, detail: str, where: str = "") -> BackendError:
        return self._error(
            f"the server at {where or self.base_url} did not answer like an OpenAI-compatible API "
            f"({one_line(detail, 120)}): check that --base-url points at its /v1 API")

    async def _send(self, method: str, url: str, body: dict[str, Any] | None = None, *,
                    raise_on_status: bool = True) -> Reply:
        """One request, retried on 429, 5xx (but 501), timeouts and connection errors."""
        tries = self.max_retries + 1
        failure = ""
        response: Reply | None = None
        for attempt in range(tries):
            hint: float | None = None
            try:
                async with self._sem:
                    response = await self._http.request(method, url, body)
            except Failure as exc:
                failure = exc.kind
            else:
                code = response.status_code
                if code != 429 and (code < 500 or code == 501):
                    return response
                failure = "status"
                hint = retry_after_seconds(response.headers.get("retry-after"))
            if attempt + 1 < tries:
                await asyncio.sleep(retry_delay(attempt, hint, self.backoff, self.max_backoff))
        if failure == "status" and response is not None and not raise_on_status:
            return response
        status = None if response is None else response.status_code
        raise self._error(gave_up(failure, self._where(url), tries, status, self.timeout))

    def _rejected(self, response: Reply, message: str | None) -> BackendError:
        where = self._where(response.url)
        if message is None:  # an HTML 404 page and the like: not an OpenAI server
            return self._shape_error(
                f"HTTP {response.status_code} {response.headers.get('content-type', 'text')}",
                where)
        code = response.status_code
        if code in (401, 403):
            fix = f"set {self.api_key_env} to a valid API key"
        elif code == 404:
            fix = "check --base-url and the model name"
        else:
            fix = "check the model name and sampling options"
        return self._error(f"the server at {where} rejected the request "
                           f"({code}: {one_line(message, 160)}): {fix}")

    def _json(self, response: Reply) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise self._shape_error(f"{kind}: {response.text[:60]!r}") from None
        if not isinstance(data, dict):
            raise self._shape_error(f"JSON {type(data).__name__}, not an object")
        return data

    # -- model discovery ----------------------------------------------------------------

    async def _detect_model(self) -> str:
        response = await self._send("GET", self.base_url + "/models")
        if response.status_code >= 400:
            raise self._rejected(response, server_message(response))
        data = self._json(response).get("data")
        if not isinstance(data, list):
            raise self._shape_error("GET /models has no data list")
        if not data or not isinstance(data[0], dict) or not data[0].get("id"):
            raise self._error(f"the server at {self.base_url} lists no model: pass the model "
                              "name with --model")
        first = data[0]
        meta = first.get("meta")
        if not self.params_count and isinstance(meta, dict):  # llama.cpp reports its size
            with contextlib.suppress(TypeError, ValueError):
                self.params_count = max(0, int(meta.get("n_params") or 0))
        return str(first["id"])

    # -- token counting -----------------------------------------------------------------

    def count_tokens(self, prompt: Prompt) -> int:
        """Prompt tokens, chat template included: exact where the server can tokenize.

        llama.cpp (``/apply-template`` + ``/tokenize``) and vLLM (``/tokenize``) count
        exactly; other servers get ``estimate_tokens``, an overestimate.

        Example:
            >>> be.count_tokens(Chat.user("2+2?"))  # doctest: +SKIP
            31
        """
        return self._run(self._count_tokens(prompt))

    async def _count_tokens(self, prompt: Prompt) -> int:
        return await self._counter.count(prompt)

    async def _post_root(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to a non-OpenAI endpoint of the server; TokenizeUnavailable if it has none."""
        response = await self._send("POST", self.root_url + path, body, raise_on_status=False)
        if response.status_code >= 400:
            raise TokenizeUnavailable(path)
        try:
            data = response.json()
        except ValueError:
            raise TokenizeUnavailable(path) from None
        if not isinstance(data, dict):
            raise TokenizeUnavailable(path)
        return data

    # -- sampling -----------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        """Sample ``params.n`` completions per prompt, every request in flight at once.

        Example:
            >>> out = be.generate([Chat.user("2+2?"), "2+2="],  # doctest: +SKIP
            ...                   SamplingParams(n=2, max_tokens=16))
            >>> [len(g) for g in out.generations]  # doctest: +SKIP
            [2, 2]
        """
        start = time.perf_counter()
        stats = RequestStats()
        results = self._run(self._generate(prompts, params, stats))
        usage = Usage(calls=stats.requests, seconds=time.perf_counter() - start)
        for gens in results:
            for g in gens:
                usage = usage + Usage.of(g.prompt_tokens, g.completion_tokens,
                                         self.params_count, 0.0, calls=0)
        return GenerateOutput(tuple(tuple(g) for g in results), usage)

    async def _generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                        stats: RequestStats, packed: bool = False) -> list[list[Generation]]:
        # The per-prompt coroutines are made here, on the loop, so that a call refused
        # before it starts leaves none of them behind un-awaited.
        return await gather([self._chunk(p, params, 0, params.n, stats, packed)
                             for p in prompts])

    async def _chunk(self, prompt: Prompt, params: SamplingParams, offset: int, size: int,
                     stats: RequestStats, packed: bool = False) -> list[Generation]:
        """Samples ``offset`` to ``offset + size - 1``, in one request when the server can."""
        if size == 1 or self._use_n is False:
            singles = await gather([self._request(prompt, params, 1, params.seed + offset + i,
                                                   stats, packed) for i in range(size)])
            return [gens[0] for gens in singles]
        if self._max_n is not None and size > self._max_n:
            step = self._max_n
            parts = await gather([
                self._chunk(prompt, params, o, min(step, offset + size - o), stats, packed)
                for o in range(offset, offset + size, step)])
            return [g for part in parts for g in part]
        try:
            gens = await self._request(prompt, params, size, params.seed + offset, stats,
                                       packed)
        except NRejected as exc:
            if exc.limit is not None and 1 <= exc.limit < size:
                # llama.cpp caps n at its slot count: split, keeping seed + i per sample.
                self._max_n = min(exc.limit, self._max_n or exc.limit)
            elif self._auto_n:
                self._use_n = False
            else:
                raise self._error(f"the server at {self.base_url} refused n={size} "
                                  f"({one_line(exc.message, 160)}): pass use_n=False") from None
            return await self._chunk(prompt, params, offset, size, stats, packed)
        if len(gens) < size:
            if self._auto_n and len(gens) == 1:
                self._use_n = False  # the server ignores n: one request per sample from now
            rest = await gather([self._request(prompt, params, 1, params.seed + offset + i,
                                                stats, packed) for i in range(len(gens), size)])
            gens = gens + [r[0] for r in rest]
        elif self._auto_n:
            self._use_n = True
        return gens[:size]

    def generate_watched(self, prompt: Prompt, params: SamplingParams,
                         watch: Watch) -> GenerateOutput:
        """``params.n`` samples of ``prompt``, each a streamed request (seed ``seed + i``)
        whose tokens ``watch`` sees as they arrive; closing an aborted sample's stream makes
        the server stop it (``ttscale.backends.streaming``)."""
        start = time.perf_counter()
        samples = [StreamedSample(i, params.seed + i, watch,
                                  params.top_logprobs if params.logprobs else 0,
                                  chat=isinstance(prompt, Chat)) for i in range(params.n)]
        self._run(gather([self._stream(prompt, params, s) for s in samples]))
        failed = [s.error for s in samples if s.error]
        if failed:
            raise self._error(f"the server at {self.base_url} failed a streamed sample "
                              f"({one_line(failed[0], 160)}): check the model and options")
        counted = (self.count_tokens(prompt) if any(s.prompt_tokens is None for s in samples)
                   else 0)
        gens = tuple(s.generation(counted) for s in samples)
        return GenerateOutput((gens,), usage_of(gens, self.params_count,
                                                time.perf_counter() - start, len(samples)))

    async def _stream(self, prompt: Prompt, params: SamplingParams,
                      sample: StreamedSample) -> None:
        body = stream_body(request_body(self.model_id, prompt, params, 1, sample.seed), params)
        base = next(self._turn)
        url = base + completion_path(prompt)
        for attempt in range(2):
            try:
                async with self._sem, self._http.stream("POST", url, body) as response:
                    if response.status >= 400:
                        reply = await read_all(response)
                        raise self._rejected(reply, server_message(reply))
                    # leaving the block closes the stream: an aborted sample stops the server
                    await read_events(lines(response), sample, self._shape_error)
                return
            except Failure as exc:
                # a pooled connection the server had closed fails before any token: sent
                # again once on a fresh one, nothing was received
                if attempt == 0 and not sample.parts and not sample.tokens:
                    continue
                raise self._error(f"the connection to the server at {base} failed during "
                                  f"a streamed sample ({exc.kind}): check that it is "
                                  "running") from None

    async def _request(self, prompt: Prompt, params: SamplingParams, n: int, seed: int,
                       stats: RequestStats, packed: bool = False) -> list[Generation]:
        """One completion request; its choices in index order, sample seeds ``seed + i``;
        ``packed``: log-probabilities packed for the store (:class:`PackedGeneration`)."""
        base = next(self._turn)  # several servers: each takes the next request in turn
        response = await self._send("POST", base + completion_path(prompt),
                                    request_body(self.model_id, prompt, params, n, seed))
        if response.status_code >= 400:
            message = server_message(response)
            if n > 1 and response.status_code in (400, 422) and message is not None:
                refused = n_rejected(message)
                if refused is not None:
                    raise refused
            raise self._rejected(response, message)
        top_k = params.top_logprobs if params.logprobs else 0
        try:
            choices, usage = decode_answer(response.content, chat=isinstance(prompt, Chat),
                                           top_k=top_k, packed=packed and params.logprobs)
        except ShapeError as exc:
            raise self._shape_error(str(exc), base) from None
        stats.requests += 1
        # Stable: choices without an index keep the order they came in.
        choices = sorted(choices, key=lambda c: c.index)[:n]
        prompt_tokens = usage.get("prompt_tokens")
        if not isinstance(prompt_tokens, int):
            prompt_tokens = await self._count_tokens(prompt)
        prefill = prompt.prefill if isinstance(prompt, Chat) else ""
        texts = [strip_prefill(c.text, prefill) for c in choices]
        counts = completion_counts(texts, [c.tokens for c in choices],
                                   usage.get("completion_tokens"))
        return [
            PackedGeneration(text, prompt_tokens, count,
                             "length" if c.finish_reason == "length" else "stop", None,
                             seed + i, c.hit_stop, c.packed)
            if c.packed is not None else
            Generation(text, prompt_tokens, count,
                       "length" if c.finish_reason == "length" else "stop",
                       c.logprobs if params.logprobs else None, seed + i, c.hit_stop)
            for i, (c, text, count) in enumerate(zip(choices, texts, counts, strict=True))
        ]
