"""Any OpenAI-compatible HTTP server: llama.cpp's ``llama-server``, vLLM, SGLang, OpenAI.

Requests go out concurrently from one ``httpx.AsyncClient`` that lives on a private event
loop in a background thread, so ``generate`` is a plain blocking function that works from
any thread, also from code that already runs an event loop (a notebook, a web app).

Samples keep the seed semantics of every ttscale backend: sample ``i`` uses seed
``seed + i``. One request with ``n`` does that on llama.cpp; a server that ignores ``n`` is
detected and sent one request per sample instead, with seed ``seed + i`` each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import re
import threading
import time
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ttscale.backends.base import WAKE_SECONDS, chat_to_openai, strip_prefill, wait_for
from ttscale.backends.openai_wire import (
    NRejected,
    RequestStats,
    TokenizeUnavailable,
    estimate_tokens,
    gather,
    normalize_base_url,
    one_line,
    parse_choice_logprobs,
    prompt_text,
    retry_after_seconds,
    split_tokens,
)
from ttscale.backends.streaming import StreamedSample, Watch, stream_body, usage_of
from ttscale.cancel import current
from ttscale.errors import BackendError, Cancelled, ConfigError
from ttscale.params import SamplingParams
from ttscale.types import Chat, GenerateOutput, Generation, Prompt, TokenLogprob, Usage

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# A Retry-After longer than this is a server asking us to go away: fail sooner instead.
MAX_RETRY_AFTER = 120.0
CLOSE_SECONDS = 5.0  # the longest close() waits for the loop to wind down, twice
# llama.cpp rejects n above its slot count with this message; the bound is learned from it.
_N_LIMIT = re.compile(r"'n'.*?<=\s*value\s*<=\s*(\d+)", re.IGNORECASE | re.DOTALL)
# Other servers that refuse n > 1 say so naming the field.
_N_FIELD = re.compile(r"(['\"`]n['\"`]|\bn\b\s*(must|should|is|has|>|<|=))", re.IGNORECASE)


def _hit_stop(choice: dict[str, Any]) -> bool | None:
    """Whether a stop string ended a choice, where the server says: vLLM's ``stop_reason``
    and SGLang's ``matched_stop`` hold the stop string (a token id or None otherwise)."""
    if choice.get("finish_reason") == "length":
        return False
    for key in ("stop_reason", "matched_stop"):
        if key in choice:
            return isinstance(choice[key], str)
    return None


class OpenAIBackend:
    """Samples from an OpenAI-compatible server over HTTP.

    Args:
        model: the server's model name; None asks the server (``GET /models``, first one).
        base_url: the API root, with or without the trailing ``/v1``.
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
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 600,
        max_retries: int = 4,
        concurrency: int = 16,
        params_count: int = 0,
        use_n: bool | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout:g}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if concurrency <= 0:
            raise ConfigError(f"concurrency must be a positive number, got {concurrency}")
        if params_count < 0:
            raise ConfigError(f"params_count must be >= 0 (0: unknown), got {params_count}")
        if backoff < 0 or max_backoff < 0:
            raise ConfigError(f"backoff must be >= 0 seconds, got {min(backoff, max_backoff):g}")
        self.base_url = normalize_base_url(base_url)
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
        self._tokenize_style: str | None = None  # "llamacpp" or "vllm" once one worked
        self._tokenize_ok: bool | None = None
        self._template_ok: bool | None = None
        # Read once and kept private: the key must never reach a log or an error message.
        self._api_key = os.environ.get(api_key_env) or None
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="ttscale-openai", daemon=True)
        self._thread.start()
        self._client: httpx.AsyncClient = self._run(self._open())
        self.model_id = model or ""
        if model is None:
            try:
                self.model_id = self._run(self._detect_model())
            except BaseException:
                self.close()
                raise

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_id!r}, base_url={self.base_url!r})"

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

    async def _open(self) -> httpx.AsyncClient:
        # Made on the loop that uses them: asyncio objects belong to one loop.
        self._sem = asyncio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            limits=httpx.Limits(max_connections=self.concurrency + 4,
                                max_keepalive_connections=self.concurrency + 4),
        )

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._client.aclose()

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

    def _shape_error(self, detail: str) -> BackendError:
        return self._error(
            f"the server at {self.base_url} did not answer like an OpenAI-compatible API "
            f"({one_line(detail, 120)}): check that --base-url points at its /v1 API")

    def _delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(hint, MAX_RETRY_AFTER)
        step = min(self.max_backoff, self.backoff * 2.0**attempt)
        # Jitter spreads the retries of many concurrent requests apart.
        return step / 2 + random.uniform(0, step / 2)

    async def _send(self, method: str, url: str, body: dict[str, Any] | None = None, *,
                    raise_on_status: bool = True) -> httpx.Response:
        """One request, retried on 429, 5xx (but 501), timeouts and connection errors."""
        tries = self.max_retries + 1
        failure = ""
        response: httpx.Response | None = None
        for attempt in range(tries):
            hint: float | None = None
            try:
                async with self._sem:
                    response = await self._client.request(method, url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                failure = "connect"
            except httpx.TimeoutException:
                failure = "timeout"
            except httpx.TransportError as exc:
                failure = type(exc).__name__
            else:
                code = response.status_code
                if code != 429 and (code < 500 or code == 501):
                    return response
                failure = "status"
                hint = retry_after_seconds(response.headers.get("retry-after"))
            if attempt + 1 < tries:
                await asyncio.sleep(self._delay(attempt, hint))
        plural = "try" if tries == 1 else "tries"
        if failure == "status" and response is not None:
            if not raise_on_status:
                return response
            raise self._error(
                f"the server at {self.base_url} answered {response.status_code} after {tries} "
                f"{plural}: check that it is running and not overloaded")
        if failure == "connect":
            raise self._error(f"could not reach an OpenAI-compatible server at "
                              f"{self.base_url}: start it or fix --base-url")
        if failure == "timeout":
            raise self._error(
                f"the server at {self.base_url} did not answer within {self.timeout:g} s "
                f"after {tries} {plural}: raise the timeout or lower the concurrency")
        raise self._error(f"the connection to the server at {self.base_url} failed after "
                          f"{tries} {plural} ({failure}): check that it is running")

    @staticmethod
    def _server_message(response: httpx.Response) -> str | None:
        """The error text of a JSON error answer; None when the answer is not JSON."""
        try:
            data = response.json()
        except ValueError:
            return None
        if isinstance(data, dict):
            err = data.get("error", data.get("detail", data.get("message")))
            if isinstance(err, dict):
                err = err.get("message", err)
            if err is not None:
                return str(err)
        return str(data)

    def _rejected(self, response: httpx.Response, message: str | None) -> BackendError:
        if message is None:  # an HTML 404 page and the like: not an OpenAI server
            return self._shape_error(
                f"HTTP {response.status_code} {response.headers.get('content-type', 'text')}")
        code = response.status_code
        if code in (401, 403):
            fix = f"set {self.api_key_env} to a valid API key"
        elif code == 404:
            fix = "check --base-url and the model name"
        else:
            fix = "check the model name and sampling options"
        return self._error(f"the server at {self.base_url} rejected the request "
                           f"({code}: {one_line(message, 160)}): {fix}")

    def _json(self, response: httpx.Response) -> dict[str, Any]:
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
            raise self._rejected(response, self._server_message(response))
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
        if self._tokenize_ok is False:
            return estimate_tokens(prompt_text(prompt))
        try:
            if isinstance(prompt, Chat):
                count = await self._count_chat(prompt)
            else:
                count = await self._tokenize(prompt)
        except TokenizeUnavailable:
            self._tokenize_ok = False
            return estimate_tokens(prompt_text(prompt))
        self._tokenize_ok = True
        return count

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

    @staticmethod
    def _token_count(data: dict[str, Any]) -> int:
        if isinstance(data.get("count"), int):
            return int(data["count"])
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise TokenizeUnavailable("tokens")
        return len(tokens)

    async def _tokenize(self, text: str) -> int:
        # llama.cpp's body first: vLLM rejects it, whereas llama.cpp answers vLLM's body
        # with an empty token list instead of an error.
        if self._tokenize_style in (None, "llamacpp"):
            try:
                count = self._token_count(await self._post_root(
                    "/tokenize", {"content": text, "add_special": True, "parse_special": True}))
                if count or not text:
                    self._tokenize_style = "llamacpp"
                    return count
            except TokenizeUnavailable:
                if self._tokenize_style == "llamacpp":
                    raise
        count = self._token_count(await self._post_root(
            "/tokenize", {"model": self.model_id, "prompt": text, "add_special_tokens": True}))
        if text and not count:
            raise TokenizeUnavailable("tokenize")
        self._tokenize_style = "vllm"
        return count

    async def _count_chat(self, prompt: Chat) -> int:
        messages = chat_to_openai(prompt)
        if self._template_ok is not False:
            try:
                data = await self._post_root("/apply-template", {"messages": messages})
                text = data.get("prompt")
                if not isinstance(text, str):
                    raise TokenizeUnavailable("apply-template")
            except TokenizeUnavailable:
                self._template_ok = False
            else:
                self._template_ok = True
                return await self._tokenize(text)
        body: dict[str, Any] = {"model": self.model_id, "messages": messages,
                                "add_generation_prompt": not prompt.prefill,
                                "continue_final_message": bool(prompt.prefill)}
        count = self._token_count(await self._post_root("/tokenize", body))
        if not count:  # llama.cpp answers a body it does not understand with no tokens
            raise TokenizeUnavailable("tokenize")
        return count

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
                        stats: RequestStats) -> list[list[Generation]]:
        # The per-prompt coroutines are made here, on the loop, so that a call refused
        # before it starts leaves none of them behind un-awaited.
        return await gather([self._chunk(p, params, 0, params.n, stats) for p in prompts])

    async def _chunk(self, prompt: Prompt, params: SamplingParams, offset: int, size: int,
                     stats: RequestStats) -> list[Generation]:
        """Samples ``offset`` to ``offset + size - 1``, in one request when the server can."""
        if size == 1 or self._use_n is False:
            singles = await gather([self._request(prompt, params, 1, params.seed + offset + i,
                                                   stats) for i in range(size)])
            return [gens[0] for gens in singles]
        if self._max_n is not None and size > self._max_n:
            step = self._max_n
            parts = await gather([
                self._chunk(prompt, params, o, min(step, offset + size - o), stats)
                for o in range(offset, offset + size, step)])
            return [g for part in parts for g in part]
        try:
            gens = await self._request(prompt, params, size, params.seed + offset, stats)
        except NRejected as exc:
            if exc.limit is not None and 1 <= exc.limit < size:
                # llama.cpp caps n at its slot count: split, keeping seed + i per sample.
                self._max_n = min(exc.limit, self._max_n or exc.limit)
            elif self._auto_n:
                self._use_n = False
            else:
                raise self._error(f"the server at {self.base_url} refused n={size} "
                                  f"({one_line(exc.message, 160)}): pass use_n=False") from None
            return await self._chunk(prompt, params, offset, size, stats)
        if len(gens) < size:
            if self._auto_n and len(gens) == 1:
                self._use_n = False  # the server ignores n: one request per sample from now
            rest = await gather([self._request(prompt, params, 1, params.seed + offset + i,
                                                stats) for i in range(len(gens), size)])
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
        import json

        path = "/chat/completions" if isinstance(prompt, Chat) else "/completions"
        body = stream_body(self._body(prompt, params, 1, sample.seed), params)
        async with self._sem, self._client.stream("POST", self.base_url + path,
                                                  json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise self._rejected(response, self._server_message(response))
            async for line in response.aiter_lines():
                data = line[len("data:"):].strip() if line.startswith("data:") else ""
                if not data or data == "[DONE]":
                    continue
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise self._shape_error(f"a streamed chunk is not JSON: {data[:60]!r}"
                                            ) from None
                if sample.feed(chunk):
                    break  # leaving the block closes the stream: the server stops decoding

    def _body(self, prompt: Prompt, params: SamplingParams, n: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
        }
        if n > 1:
            body["n"] = n
        if params.stop:
            body["stop"] = list(params.stop)
        # Usage counts a whole request (llama.cpp: its first sample only), so a request of
        # several samples asks for logprobs too: their lengths are the exact token counts.
        logprobs = params.logprobs or n > 1
        if isinstance(prompt, Chat):
            body["messages"] = chat_to_openai(prompt)
            if prompt.prefill:
                # vLLM and SGLang continue a trailing assistant message only when told;
                # llama.cpp continues it anyway and accepts these fields.
                body["add_generation_prompt"] = False
                body["continue_final_message"] = True
            if logprobs:
                body["logprobs"] = True
                if params.logprobs and params.top_logprobs:
                    body["top_logprobs"] = params.top_logprobs
        else:
            body["prompt"] = prompt
            if logprobs:
                # 0 returns nothing on some servers; 1 always returns the sampled tokens.
                body["logprobs"] = max(1, params.top_logprobs if params.logprobs else 1)
        return body

    async def _request(self, prompt: Prompt, params: SamplingParams, n: int, seed: int,
                       stats: RequestStats) -> list[Generation]:
        """One completion request; its choices in index order, sample seeds ``seed + i``."""
        path = "/chat/completions" if isinstance(prompt, Chat) else "/completions"
        response = await self._send("POST", self.base_url + path,
                                    self._body(prompt, params, n, seed))
        if response.status_code >= 400:
            message = self._server_message(response)
            if n > 1 and response.status_code in (400, 422) and message is not None:
                limit = _N_LIMIT.search(message)
                if limit or _N_FIELD.search(message):
                    raise NRejected(int(limit.group(1)) if limit else None, message)
            raise self._rejected(response, message)
        data = self._json(response)
        stats.requests += 1
        try:
            return await self._parse(prompt, params, data, n, seed)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._shape_error(f"unexpected answer: {type(exc).__name__} {exc}") from None

    async def _parse(self, prompt: Prompt, params: SamplingParams, data: dict[str, Any],
                     n: int, seed: int) -> list[Generation]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self._shape_error("no choices in the answer")
        if not all(isinstance(c, dict) for c in choices):
            raise self._shape_error("choices are not objects")
        # Stable: choices without an index keep the order they came in.
        choices = sorted(choices, key=lambda c: int(c.get("index") or 0))[:n]
        reported = data.get("usage")
        usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
        prompt_tokens = usage.get("prompt_tokens")
        if not isinstance(prompt_tokens, int):
            prompt_tokens = await self._count_tokens(prompt)
        texts: list[str] = []
        logprobs: list[tuple[TokenLogprob, ...] | None] = []
        for choice in choices:
            if isinstance(prompt, Chat):
                message = choice["message"]
                texts.append(strip_prefill(message.get("content") or "", prompt.prefill))
            else:
                texts.append(str(choice.get("text") or ""))
            top_k = params.top_logprobs if params.logprobs else 0
            logprobs.append(parse_choice_logprobs(choice.get("logprobs"), top_k))
        counts = self._completion_counts(texts, logprobs, usage.get("completion_tokens"))
        return [
            Generation(
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=count,
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                logprobs=lps if params.logprobs else None,
                seed=seed + i,
                hit_stop=_hit_stop(choice),
            )
            for i, (choice, text, lps, count) in enumerate(
                zip(choices, texts, logprobs, counts, strict=True))
        ]

    @staticmethod
    def _completion_counts(texts: list[str], logprobs: list[tuple[TokenLogprob, ...] | None],
                           reported: Any) -> list[int]:
        """Completion tokens per choice: exact from logprobs, else from the usage report."""
        if all(lps is not None for lps in logprobs):
            return [len(lps or ()) for lps in logprobs]
        if isinstance(reported, int):
            if len(texts) == 1:
                return [reported]
            return split_tokens(reported, texts)  # a server without logprobs: an estimate
        return [estimate_tokens(t) - 32 if t else 0 for t in texts]
