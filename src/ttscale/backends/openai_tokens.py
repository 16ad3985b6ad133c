"""Counting a prompt's tokens on an OpenAI-compatible server: exactly where it can tokenize
(llama.cpp's ``/apply-template`` and ``/tokenize``, vLLM's ``/tokenize``), else an estimate
that errs high. Which endpoint and body work is learned once per server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ttscale.backends.base import chat_to_openai
from ttscale.backends.openai_wire import TokenizeUnavailable, estimate_tokens, prompt_text
from ttscale.types import Chat, Prompt

Post = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class TokenCounter:
    """Prompt tokens from a server; ``post(path, body)`` posts below the server's root and
    raises ``TokenizeUnavailable`` where it has no such endpoint.

    Example:
        >>> import asyncio
        >>> async def none(path: str, body: dict[str, Any]) -> dict[str, Any]:
        ...     raise TokenizeUnavailable(path)
        >>> asyncio.run(TokenCounter(none, lambda: "m").count("hello world"))
        37
    """

    def __init__(self, post: Post, model: Callable[[], str]) -> None:
        self._post = post
        self._model = model
        self._style: str | None = None  # "llamacpp" or "vllm" once one worked
        self._tokenize_ok: bool | None = None
        self._template_ok: bool | None = None

    async def count(self, prompt: Prompt) -> int:
        """Tokens of ``prompt``, chat template included."""
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
        if self._style in (None, "llamacpp"):
            try:
                count = self._token_count(await self._post(
                    "/tokenize", {"content": text, "add_special": True, "parse_special": True}))
                if count or not text:
                    self._style = "llamacpp"
                    return count
            except TokenizeUnavailable:
                if self._style == "llamacpp":
                    raise
        count = self._token_count(await self._post(
            "/tokenize", {"model": self._model(), "prompt": text, "add_special_tokens": True}))
        if text and not count:
            raise TokenizeUnavailable("tokenize")
        self._style = "vllm"
        return count

    async def _count_chat(self, prompt: Chat) -> int:
        messages = chat_to_openai(prompt)
        if self._template_ok is not False:
            try:
                data = await self._post("/apply-template", {"messages": messages})
                text = data.get("prompt")
                if not isinstance(text, str):
                    raise TokenizeUnavailable("apply-template")
            except TokenizeUnavailable:
                self._template_ok = False
            else:
                self._template_ok = True
                return await self._tokenize(text)
        body: dict[str, Any] = {"model": self._model(), "messages": messages,
                                "add_generation_prompt": not prompt.prefill,
                                "continue_final_message": bool(prompt.prefill)}
        count = self._token_count(await self._post("/tokenize", body))
        if not count:  # llama.cpp answers a body it does not understand with no tokens
            raise TokenizeUnavailable("tokenize")
        return count
