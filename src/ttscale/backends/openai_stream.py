"""What the OpenAI backend sends and how it reads what comes back: request bodies, a
refused ``n``, a streamed sample's server-sent events, and each choice's token count."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from ttscale.backends.base import chat_to_openai
from ttscale.backends.openai_wire import NRejected, estimate_tokens, split_tokens
from ttscale.backends.streaming import StreamedSample
from ttscale.params import SamplingParams
from ttscale.types import Chat, Prompt

# llama.cpp rejects n above its slot count with this message; the bound is learned from it.
_N_LIMIT = re.compile(r"'n'.*?<=\s*value\s*<=\s*(\d+)", re.IGNORECASE | re.DOTALL)
# Other servers that refuse n > 1 say so naming the field.
_N_FIELD = re.compile(r"(['\"`]n['\"`]|\bn\b\s*(must|should|is|has|>|<|=))", re.IGNORECASE)


def completion_path(prompt: Prompt) -> str:
    """The endpoint below ``/v1`` for ``prompt``.

    Example:
        >>> completion_path("2+2="), completion_path(Chat.user("2+2?"))
        ('/completions', '/chat/completions')
    """
    return "/chat/completions" if isinstance(prompt, Chat) else "/completions"


def request_body(model: str, prompt: Prompt, params: SamplingParams, n: int,
                 seed: int) -> dict[str, Any]:
    """The JSON body of one completion request of ``n`` samples, sample ``i`` seeded
    ``seed + i``.

    Example:
        >>> body = request_body("m", "2+2=", SamplingParams(max_tokens=8), 2, 5)
        >>> body["n"], body["seed"], body["logprobs"], body["prompt"]
        (2, 5, 1, '2+2=')
    """
    body: dict[str, Any] = {
        "model": model,
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


def n_rejected(message: str) -> NRejected | None:
    """The refusal of ``n`` > 1 in a server's error message, with the bound it names.

    Example:
        >>> n_rejected("'n' must be 1 <= value <= 4").limit
        4
        >>> n_rejected("model not found") is None
        True
    """
    limit = _N_LIMIT.search(message)
    if limit or _N_FIELD.search(message):
        return NRejected(int(limit.group(1)) if limit else None, message)
    return None


async def read_events(lines: AsyncIterator[str], sample: StreamedSample,
                      shape_error: Callable[[str], Exception]) -> None:
    """Feed a streamed sample's server-sent events to ``sample`` until it ends or its
    watch aborts it (the caller then closes the stream, which stops the server).

    Example:
        >>> import asyncio
        >>> async def lines():  # one chunk of a streamed reply, then its end
        ...     for line in ['data: {"choices": [{"delta": {"content": "4"}}]}', "data: [DONE]"]:
        ...         yield line
        >>> s = StreamedSample(0, 7, lambda _i, _t: False)
        >>> asyncio.run(read_events(lines(), s, ValueError)), s.parts
        (None, ['4'])
    """
    async for line in lines:
        data = line[len("data:"):].strip() if line.startswith("data:") else ""
        if not data or data == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            raise shape_error(f"a streamed chunk is not JSON: {data[:60]!r}") from None
        if sample.feed(chunk):
            return


def server_message(response: Any) -> str | None:
    """The error text of an HTTP answer's JSON body; None when the body is not JSON.

    Example:
        >>> import httpx
        >>> server_message(httpx.Response(400, json={"error": {"message": "bad n"}}))
        'bad n'
    """
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


def completion_counts(texts: list[str], counted: list[int | None], reported: Any) -> list[int]:
    """Completion tokens per choice: exact where the log-probabilities counted them, else
    from the usage report (shared by text length), else an estimate.

    Example:
        >>> completion_counts(["a", "bb"], [3, 5], 99), completion_counts(["ab"], [None], 7)
        ([3, 5], [7])
    """
    if all(c is not None for c in counted):
        return [c or 0 for c in counted]
    if isinstance(reported, int):
        if len(texts) == 1:
            return [reported]
        return split_tokens(reported, texts)  # a server without logprobs: an estimate
    return [estimate_tokens(t) - 32 if t else 0 for t in texts]
