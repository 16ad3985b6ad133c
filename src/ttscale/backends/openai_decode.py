"""Decoding an OpenAI-compatible completion answer into what a generation needs.

A 300-token sample with top-5 alternatives is about 92 KB of JSON and 10,000 objects to the
standard ``json`` module, which made decoding most of a busy controller's CPU. msgspec
decodes the answer straight into typed structs holding only the fields read here (unknown
fields such as ``bytes`` are skipped in C), and :func:`decode_answer` can pack the
log-probabilities as the run store keeps them without a Python object per token
(``packed``). An answer that does not fit the types (a server's own variant) is decoded by
``json`` and read field by field as before, so nothing that parsed before is refused now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from ttscale.backends.openai_wire import parse_choice_logprobs
from ttscale.backends.packed import PackedLogprobs, pack, pack_rows
from ttscale.types import TokenLogprob


class _Alt(msgspec.Struct, gc=False):
    token: str = ""
    logprob: float = 0.0


class _Token(msgspec.Struct, gc=False):
    token: str = ""
    logprob: float = 0.0
    top_logprobs: list[_Alt] | None = None


class _Logprobs(msgspec.Struct):
    # chat completions (and llama.cpp's completions): one object per token
    content: list[_Token] | None = None
    # legacy completions: parallel lists, alternatives as {token: logprob}
    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float | None] | None] | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    index: int | None = None
    message: _Message | None = None
    text: str | None = None
    finish_reason: str | None = None
    stop_reason: Any = msgspec.UNSET
    matched_stop: Any = msgspec.UNSET
    logprobs: _Logprobs | None = None


class _Answer(msgspec.Struct):
    choices: list[_Choice]
    usage: Any = None


_DECODER = msgspec.json.Decoder(_Answer)


class ShapeError(ValueError):
    """The answer is not shaped like an OpenAI completion (the detail says how)."""


@dataclass(frozen=True)
class Choice:
    """One decoded choice: ``text`` as the server sent it, ``logprobs`` or ``packed``."""

    index: int
    text: str
    finish_reason: str | None
    hit_stop: bool | None
    logprobs: tuple[TokenLogprob, ...] | None
    packed: PackedLogprobs | None = None

    @property
    def tokens(self) -> int | None:
        """Completion tokens counted from the log-probabilities; None without them."""
        if self.packed is not None:
            return self.packed.tokens
        return None if self.logprobs is None else len(self.logprobs)


def decode_answer(raw: bytes, *, chat: bool, top_k: int,
                  packed: bool = False) -> tuple[list[Choice], dict[str, Any]]:
    """The choices of a completion answer (in the order sent) and its usage report.

    ``top_k`` alternatives are kept per token; ``packed`` packs the log-probabilities as
    the store keeps them instead of building :class:`TokenLogprob` objects.

    Example:
        >>> raw = (b'{"choices":[{"index":0,"message":{"content":"4"},"finish_reason":"stop",'
        ...        b'"logprobs":{"content":[{"token":"4","logprob":-0.1,"bytes":null}]}}],'
        ...        b'"usage":{"prompt_tokens":9}}')
        >>> choices, usage = decode_answer(raw, chat=True, top_k=0)
        >>> choices[0].text, choices[0].logprobs, usage
        ('4', (TokenLogprob(token='4', logprob=-0.1, top=()),), {'prompt_tokens': 9})
    """
    try:
        answer = _DECODER.decode(raw)
    except msgspec.DecodeError:
        return _decode_loose(raw, chat=chat, top_k=top_k, packed=packed)
    if not answer.choices:
        raise ShapeError("no choices in the answer")
    choices = [_typed_choice(c, chat, top_k, packed) for c in answer.choices]
    return choices, answer.usage if isinstance(answer.usage, dict) else {}


def _typed_choice(c: _Choice, chat: bool, top_k: int, packed: bool) -> Choice:
    if chat:
        if c.message is None:
            raise ShapeError("unexpected answer: KeyError 'message'")
        text = c.message.content or ""
    else:
        text = c.text or ""
    block = c.logprobs
    lps: tuple[TokenLogprob, ...] | None = None
    packs: PackedLogprobs | None = None
    if block is not None and block.content is not None:
        if packed:
            packs = _pack_content(block.content, top_k)
        else:
            lps = tuple(TokenLogprob(t.token, t.logprob,
                                     tuple((a.token, a.logprob)
                                           for a in (t.top_logprobs or ())[:top_k])
                                     if top_k else ())
                        for t in block.content)
    elif block is not None and block.tokens is not None:
        lps = parse_choice_logprobs({"tokens": block.tokens,
                                     "token_logprobs": block.token_logprobs,
                                     "top_logprobs": block.top_logprobs}, top_k)
        if packed and lps is not None:
            packs, lps = pack(lps), None
    hit = _hit_stop(c.finish_reason, {"stop_reason": c.stop_reason,
                                      "matched_stop": c.matched_stop})
    return Choice(c.index or 0, text, c.finish_reason, hit, lps, packs)


def _pack_content(content: list[_Token], top_k: int) -> PackedLogprobs:
    # the rows the store writes, straight from the structs: no TokenLogprob in between
    if top_k:
        rows = [(t.token, t.logprob,
                 [(a.token, a.logprob) for a in (t.top_logprobs or ())[:top_k]])
                for t in content]
    else:
        rows = [(t.token, t.logprob, []) for t in content]
    return pack_rows(rows, [t.logprob for t in content])


def _decode_loose(raw: bytes, *, chat: bool, top_k: int,
                  packed: bool) -> tuple[list[Choice], dict[str, Any]]:
    """A server's own variant of the shape, read field by field with ``json``."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ShapeError(f"not JSON: {raw[:60]!r}") from None
    if not isinstance(data, dict):
        raise ShapeError(f"JSON {type(data).__name__}, not an object")
    found = data.get("choices")
    if not isinstance(found, list) or not found:
        raise ShapeError("no choices in the answer")
    if not all(isinstance(c, dict) for c in found):
        raise ShapeError("choices are not objects")
    choices = []
    try:
        for c in found:
            text = (str(c["message"].get("content") or "") if chat
                    else str(c.get("text") or ""))
            lps = parse_choice_logprobs(c.get("logprobs"), top_k)
            packs = pack(lps) if packed and lps is not None else None
            reason = c.get("finish_reason")
            choices.append(Choice(int(c.get("index") or 0), text,
                                  reason if isinstance(reason, str) else None,
                                  _hit_stop(reason, c), None if packs else lps, packs))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ShapeError(f"unexpected answer: {type(exc).__name__} {exc}") from None
    usage = data.get("usage")
    return choices, usage if isinstance(usage, dict) else {}


def _hit_stop(finish_reason: Any, fields: dict[str, Any]) -> bool | None:
    """Whether a stop string ended a choice, where the server says: vLLM's ``stop_reason``
    and SGLang's ``matched_stop`` hold the stop string (a token id or None otherwise)."""
    if finish_reason == "length":
        return False
    for key in ("stop_reason", "matched_stop"):
        if key in fields and fields[key] is not msgspec.UNSET:
            return isinstance(fields[key], str)
    return None
