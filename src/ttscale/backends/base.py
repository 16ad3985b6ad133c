"""The backend protocol and the one function that builds a backend by name."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from ttscale.params import SamplingParams
from ttscale.types import Chat, GenerateOutput, Prompt

T = TypeVar("T")
WAKE_SECONDS = 0.2


def wait_for(future: concurrent.futures.Future[T]) -> T:
    """``future.result()``, waking every ``WAKE_SECONDS``: the OS may deliver a Ctrl-C to
    a worker thread, and the main thread, blocked on a lock without a timeout, would only
    see it once the future is done (after a server's full timeout, or never).

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> with ThreadPoolExecutor(1) as pool:
        ...     wait_for(pool.submit(sum, [1, 2]))
        3
    """
    while not future.done():
        concurrent.futures.wait([future], timeout=WAKE_SECONDS)
    return future.result()


@runtime_checkable
class Backend(Protocol):
    """A model that samples. Implementations: ``llamacpp`` (default), ``openai``, ``fake``.

    ``generate`` takes many prompts at once and returns, per prompt, ``params.n`` generations
    in sample order, together with the ``Usage`` of the whole call.
    """

    name: str
    model_id: str
    params_count: int

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput: ...

    def count_tokens(self, prompt: Prompt) -> int: ...

    def close(self) -> None: ...


def chat_to_openai(prompt: Chat) -> list[dict[str, str]]:
    """OpenAI-shaped messages; a prefill becomes a trailing assistant message to continue.

    Example:
        >>> from ttscale.types import Message
        >>> chat_to_openai(Chat((Message("user", "2+2?"),), prefill="The answer is"))
        [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': 'The answer is'}]
    """
    msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
    if prompt.prefill:
        msgs.append({"role": "assistant", "content": prompt.prefill})
    return msgs


def strip_prefill(text: str, prefill: str) -> str:
    """Servers differ on whether a continued message repeats its prefix; drop it if so.

    Example:
        >>> strip_prefill("So it is 4.", "So it is"), strip_prefill(" 4.", "So it is")
        (' 4.', ' 4.')
    """
    return text[len(prefill):] if prefill and text.startswith(prefill) else text


def load_backend(name: str = "llamacpp", **options: Any) -> Backend:
    """Build a backend by registered name (built-ins and ``ttscale.backends`` entry points).

    Example:
        >>> load_backend("fake", responses=["The answer is 4."]).name
        'fake'
    """
    from ttscale.registry import backends

    factory = backends.get(name)
    backend: Backend = factory(**options)
    return backend
