"""Wire-level helpers of the OpenAI backend: base URLs, the two log-probability shapes,
Retry-After hints, and task groups that raise the first real error."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ttscale.errors import ConfigError, TtscaleError
from ttscale.types import Prompt, TokenLogprob

T = TypeVar("T")

# A Retry-After longer than this is a server asking us to go away: fail sooner instead.
MAX_RETRY_AFTER = 120.0


def estimate_tokens(text: str) -> int:
    """A deliberately high token count for servers that cannot tokenize.

    Real tokenizers average 3-4 bytes per token on English; two bytes per token plus a chat
    template's worth of overhead errs on the side of spending less than the budget allows.

    Example:
        >>> estimate_tokens("hello world")
        37
    """
    return len(text.encode()) // 2 + 32


def normalize_base_url(base_url: str) -> str:
    """The API root ending in ``/v1``, however the user wrote it.

    Example:
        >>> normalize_base_url("http://127.0.0.1:8080")
        'http://127.0.0.1:8080/v1'
        >>> normalize_base_url("http://127.0.0.1:8080/v1/")
        'http://127.0.0.1:8080/v1'
    """
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url if url.endswith("/v1") else url + "/v1"


def base_urls(value: str | Sequence[str]) -> tuple[str, ...]:
    """Every API root in ``value`` (one URL, comma-separated URLs, or a list of either),
    normalised, each once, in the order given.

    Example:
        >>> base_urls(["http://a:8000", "http://b:8000/v1,http://a:8000/v1"])
        ('http://a:8000/v1', 'http://b:8000/v1')
    """
    given = [value] if isinstance(value, str) else list(value)
    urls = [normalize_base_url(u) for v in given for u in v.split(",") if u.strip()]
    if not urls:
        raise ConfigError("base_url names no server: pass http://HOST:PORT/v1")
    return tuple(dict.fromkeys(urls))


def gave_up(failure: str, where: str, tries: int, status: int | None, timeout: float) -> str:
    """Why a request failed after every retry, and what to do about it.

    Example:
        >>> gave_up("connect", "http://a:8000/v1", 5, None, 600).split(": ")[0]
        'could not reach an OpenAI-compatible server at http://a:8000/v1'
    """
    plural = "try" if tries == 1 else "tries"
    if failure == "status":
        return (f"the server at {where} answered {status} after {tries} {plural}: check that "
                "it is running and not overloaded")
    if failure == "connect":
        return f"could not reach an OpenAI-compatible server at {where}: start it or fix --base-url"
    if failure == "timeout":
        return (f"the server at {where} did not answer within {timeout:g} s after {tries} "
                f"{plural}: raise the timeout or lower the concurrency")
    return (f"the connection to the server at {where} failed after {tries} {plural} "
            f"({failure}): check that it is running")


def parse_choice_logprobs(block: Any, top_k: int) -> tuple[TokenLogprob, ...] | None:
    """Token log-probabilities of one choice, in either OpenAI shape; None when absent.

    Chat completions (and llama.cpp's completions) send
    ``{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}``;
    legacy completions send ``{"tokens", "token_logprobs", "top_logprobs": [{tok: lp}]}``.
    Alternatives are kept up to ``top_k`` (some are fetched only to count tokens).

    Example:
        >>> lps = parse_choice_logprobs(
        ...     {"tokens": ["4"], "token_logprobs": [-0.1], "top_logprobs": [{"4": -0.1}]}, 1)
        >>> lps[0].token, lps[0].top
        ('4', (('4', -0.1),))
    """
    if not isinstance(block, dict):
        return None
    if "content" in block:
        # One object per token, alternatives cut as they are read: a busy controller
        # parses hundreds of thousands of tokens a second.
        return tuple(
            TokenLogprob(t.get("token", ""), float(t.get("logprob", 0.0)),
                         tuple((c.get("token", ""), float(c.get("logprob", 0.0)))
                               for c in (t.get("top_logprobs") or ())[:top_k])
                         if top_k else ())
            for t in block.get("content") or ())
    if "tokens" in block:
        tokens = block.get("tokens") or []
        values = block.get("token_logprobs") or []
        tops = block.get("top_logprobs") or []
        out = []
        for i, token in enumerate(tokens):
            value = values[i] if i < len(values) else None
            alts = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            top = tuple((str(k), float(v)) for k, v in alts.items() if v is not None)
            # A None logprob is the unscored first token of an echoed prompt.
            out.append(TokenLogprob(str(token), float(value) if value is not None else 0.0,
                                    top[:top_k]))
        return tuple(out)
    return None


def split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Share a request's completion tokens among its choices by text length (an estimate).

    Example:
        >>> split_tokens(9, ["abc", "abcdef", ""]), split_tokens(5, ["", ""])
        ([3, 6, 0], [0, 0])
    """
    sizes = [len(t.encode()) for t in texts]
    whole = sum(sizes)
    if whole == 0:
        return [0] * len(texts)
    return [max(1, round(total * s / whole)) if s else 0 for s in sizes]


def prompt_text(prompt: Prompt) -> str:
    """A prompt as one text (a chat's messages one a line, then its prefill), for estimates.

    Example:
        >>> from ttscale.types import Chat, Message
        >>> prompt_text("2+2="), prompt_text(Chat((Message("user", "2+2?"),), prefill="It is"))
        ('2+2=', '2+2?It is')
    """
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m.content for m in prompt.messages) + prompt.prefill


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, whitespace runs as one space, cut to ``limit`` characters.

    Example:
        >>> one_line("server\\n  said:   no"), one_line("x" * 50, limit=10)
        ('server said: no', 'xxxxxxx...')
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None when absent.

    Example:
        >>> retry_after_seconds("3"), retry_after_seconds(None), retry_after_seconds("soon")
        (3.0, None, None)
        >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT")  # a date already past
        0.0
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(attempt: int, hint: float | None, backoff: float, most: float) -> float:
    """Seconds before retry ``attempt + 1``: the server's Retry-After ``hint`` (at most
    ``MAX_RETRY_AFTER``), else ``backoff`` doubled per attempt up to ``most``, jittered.

    Example:
        >>> retry_delay(0, 3.0, 0.5, 30.0), 0.5 <= retry_delay(1, None, 0.5, 30.0) <= 1.0
        (3.0, True)
    """
    if hint is not None:
        return min(hint, MAX_RETRY_AFTER)
    step = min(most, backoff * 2.0**attempt)
    # Jitter spreads the retries of many concurrent requests apart.
    return step / 2 + random.uniform(0, step / 2)


def check_options(*, timeout: float, max_retries: int, concurrency: int, params_count: int,
                  backoff: float) -> None:
    """A ConfigError naming the first option of the OpenAI backend out of range.

    Example:
        >>> check_options(timeout=0, max_retries=1, concurrency=1, params_count=0, backoff=0)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: timeout must be a positive number of seconds, got 0
    """
    if not timeout > 0:  # ``not >``: NaN is refused too
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout:g}")
    if max_retries < 0:
        raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
    if concurrency <= 0:
        raise ConfigError(f"concurrency must be a positive number, got {concurrency}")
    if params_count < 0:
        raise ConfigError(f"params_count must be >= 0 (0: unknown), got {params_count}")
    if backoff < 0:
        raise ConfigError(f"backoff must be >= 0 seconds, got {backoff:g}")


class NRejected(Exception):
    """The server refused ``n`` > 1 (``limit``: the largest n it accepts, when it said)."""

    def __init__(self, limit: int | None, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


class TokenizeUnavailable(Exception):
    """The server has no usable tokenize endpoint."""


@dataclass
class RequestStats:
    requests: int = 0


def first_error(exc: BaseException) -> BaseException:
    """The error to report from a task group: a ttscale error if any task raised one.

    Example:
        >>> from ttscale.errors import BackendError
        >>> group = BaseExceptionGroup("tasks", [ValueError("x"), BackendError("server gone")])
        >>> first_error(group), first_error(KeyError("k"))
        (BackendError('server gone'), KeyError('k'))
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = [first_error(e) for e in exc.exceptions]
        for leaf in leaves:
            if isinstance(leaf, TtscaleError):
                return leaf
        return leaves[0]
    return exc


async def gather(coros: Sequence[Awaitable[T]]) -> list[T]:
    """Run concurrently; the first failure cancels the rest and is raised as itself.

    Example:
        >>> async def double(x):
        ...     return 2 * x
        >>> asyncio.run(gather([double(1), double(2), double(3)]))
        [2, 4, 6]
    """
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coroutine(c)) for c in coros]
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None
    return [t.result() for t in tasks]


async def _as_coroutine(aw: Awaitable[T]) -> T:
    return await aw
