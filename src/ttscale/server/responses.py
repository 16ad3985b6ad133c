"""A ``Result`` in the OpenAI shapes: completions, chat completions and their stream chunks.

The content of a choice is the text of the first trace of its answer class: choice 0 is
the winning class, further choices (``n`` > 1) the next classes, best first. ``usage``
counts every token spent inside: all samples, all verifier calls. The ``ttscale`` field
says what the strategy did.

Responses are built as plain dicts and serialised once: the pydantic models in
``protocol.py`` document them (OpenAPI) and the tests check the two agree.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any, Literal

from ttscale import __version__
from ttscale.server.service import Event, Plan
from ttscale.types import AnswerClass, Result

Kind = Literal["chat", "text"]
FINGERPRINT = f"ttscale-{__version__}"
_WORD_START = re.compile(r"(?<=\s)(?=\S)")


def dumps(value: Any) -> bytes:
    """Compact JSON; text that is not valid UTF-8 (lone surrogates) is escaped, not fatal.

    Example:
        >>> dumps({"a": "é"})
        b'{"a":"\\xc3\\xa9"}'
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def pieces(text: str, words: int = 4) -> list[str]:
    """Split ``text`` into deltas of a few words each; joined, they give ``text`` back.

    Example:
        >>> pieces("one two three four five six", words=4)
        ['one two three four ', 'five six']
    """
    parts = _WORD_START.split(text)
    return ["".join(parts[i:i + words]) for i in range(0, len(parts), words)] or [""]


def ranked(result: Result) -> list[AnswerClass]:
    """The answer classes, the winner first, then by score (verifier strategies) or votes.

    Example:
        >>> from ttscale.types import Usage
        >>> cs = (AnswerClass("5", 2, 0.4, (1, 2)), AnswerClass("3", 1, 0.6, (3,)),
        ...       AnswerClass("4", 1, 0.9, (0,)))
        >>> [c.answer for c in ranked(Result("2+2?", "4", "best_of_n", cs, (), Usage(), 0.0))]
        ['4', '3', '5']
    """
    classes = list(result.classes)
    scored = any(c.score is not None for c in classes)
    classes.sort(key=lambda c: -(c.score or 0.0) if scored else -c.votes)  # stable on ties
    winner = [c for c in classes if c.answer == result.answer][:1]
    return winner + [c for c in classes if c not in winner]


def choices(result: Result, k: int) -> list[tuple[str, str]]:
    """Up to ``k`` (text, finish reason) pairs; at least one, even when no answer was found.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.solve import solve
        >>> fake = FakeBackend(script=lambda _prompt, seed: f"The answer is {4 + (seed == 2)}.")
        >>> choices(solve("2+2?", backend=fake, n=3), 2)  # the winner, then the runner-up
        [('The answer is 4.', 'stop'), ('The answer is 5.', 'stop')]
    """
    classes = ranked(result)[:k]
    picks = [c.traces[0] for c in classes] or ([0] if result.traces else [])
    out = []
    for i in picks:
        trace = result.traces[i]
        out.append((trace.text, "length" if trace.finish_reason == "length" else "stop"))
    return out or [("", "stop")]


def summary(plan: Plan, result: Result) -> dict[str, Any]:
    """The ``ttscale`` field: strategy, answer classes with votes and scores, compute.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.server.service import plan, Settings
        >>> asked = plan(question="?", model="majority@2", served=["fake"], settings=Settings())
        >>> out = summary(asked, solve("?", backend=FakeBackend(), strategy="majority", n=2))
        >>> out["strategy"], out["n"], out["answer"], out["classes"][0]["votes"], out["calls"]
        ('majority', 2, '42', 2, 1)
    """
    out: dict[str, Any] = {
        "strategy": result.strategy,
        "n": len(result.traces),
        "verifier": plan.verifier,
        "answer": result.answer,
        "classes": [{"answer": c.answer, "votes": c.votes, "score": c.score,
                     "traces": list(c.traces)} for c in result.classes],
        "budget_limited": result.budget_limited,
        "calls": result.usage.calls,
        "flops": result.usage.flops,
        "seconds": round(result.seconds, 6),
        "notes": list(result.notes),
    }
    if plan.traces:
        out["traces"] = [{"text": t.text, "answer": t.answer,
                          "completion_tokens": t.completion_tokens,
                          "finish_reason": t.finish_reason, "score": t.score}
                         for t in result.traces]
        if result.tree is not None:
            out["tree"] = result.tree
    return out


def usage(result: Result) -> dict[str, int]:
    """The OpenAI ``usage`` object: every token the strategy spent, verifier calls included.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.solve import solve
        >>> usage(solve("6*7?", backend=FakeBackend(), n=2))
        {'prompt_tokens': 70, 'completion_tokens': 8, 'total_tokens': 78}
    """
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


def new_id(kind: Kind) -> str:
    """A fresh response id: ``chatcmpl-`` or ``cmpl-`` and 24 hex digits.

    Example:
        >>> chat, text = new_id("chat"), new_id("text")
        >>> chat[:9], text[:5], len(text), chat != new_id("chat")  # random: never the same twice
        ('chatcmpl-', 'cmpl-', 29, True)
    """
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)


def response(kind: Kind, plan: Plan, result: Result) -> dict[str, Any]:
    """The whole (non-streamed) response for one request.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.server.service import Settings, plan as make_plan
        >>> from ttscale.solve import solve
        >>> p = make_plan(question="?", model="majority@2", served=["fake"], settings=Settings())
        >>> r = solve("?", backend=FakeBackend(), strategy="majority", n=2)
        >>> body = response("chat", p, r)
        >>> body["choices"][0]["message"]["content"], body["ttscale"]["classes"][0]["votes"]
        ('The answer is 42.', 2)
    """
    picked = choices(result, plan.choices)
    if kind == "chat":
        out = [{"index": i, "message": {"role": "assistant", "content": text},
                "finish_reason": finish, "logprobs": None}
               for i, (text, finish) in enumerate(picked)]
    else:
        out = [{"index": i, "text": text, "finish_reason": finish, "logprobs": None}
               for i, (text, finish) in enumerate(picked)]
    return {
        "id": new_id(kind),
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": out,
        "usage": usage(result),
        "system_fingerprint": FINGERPRINT,
        "ttscale": summary(plan, result),
    }


class Chunks:
    """The chunks of one stream, as SSE ``data:`` lines.

    Progress comes as chunks with an empty delta (or empty text) and a ``ttscale`` field a
    plain client ignores; in a chat stream the traces as they are decoded come as
    ``reasoning_content`` deltas (shown as thinking by chat UIs, ignored by plain clients);
    then the answer as several content deltas; then a chunk with the finish reason, usage
    and the ``ttscale`` summary; then ``data: [DONE]``. With
    ``stream_options.include_usage`` the usage comes instead in the standard extra chunk
    with no choices, so no client counts it twice.

    Traces decode side by side, but a reader follows one at a time: the first trace of a
    phase is shown live under its header (``[sample 1]``); the text of the others is held
    and follows, each under its own header, when the phase ends.
    """

    def __init__(self, kind: Kind, plan: Plan, include_usage: bool) -> None:
        self.kind = kind
        self.plan = plan
        self.include_usage = include_usage
        self.id = new_id(kind)
        self.created = int(time.time())
        self._live: int | None = None  # the trace shown as it is decoded
        self._held: dict[int, list[str]] = {}  # the others' text until the phase ends
        self._headers = 0

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.plan.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            **extra,
        }
        return b"data: " + dumps(body) + b"\n\n"

    def _choice(self, index: int, content: str | None, finish: str | None = None,
                role: bool = False) -> dict[str, Any]:
        if self.kind == "text":
            return {"index": index, "text": content or "", "finish_reason": finish,
                    "logprobs": None}
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if content is not None:
            delta["content"] = content
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    def start(self) -> bytes:
        """The opening chunk (chat: the assistant role, as OpenAI sends first)."""
        return self._chunk([self._choice(0, "" if self.kind == "chat" else None, role=True)])

    def progress(self, event: Event) -> bytes:
        held = b"".join(self.flush())
        return held + self._chunk([self._choice(0, None)],
                                  ttscale={"event": event.kind, "message": event.message})

    def _reasoning(self, text: str) -> bytes:
        delta = {"reasoning_content": text}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None,
                             "logprobs": None}])

    def _header(self, trace: int) -> str:
        self._headers += 1
        return ("" if self._headers == 1 else "\n\n") + f"[sample {trace + 1}]\n"

    def text(self, event: Event) -> bytes:
        """A piece of a trace as a ``reasoning_content`` delta (chat streams; nothing in a
        completions stream, which has no such field)."""
        if self.kind != "chat":
            return b""
        if self._live is None:
            self._live = event.trace
            return self._reasoning(self._header(event.trace) + event.message)
        if event.trace == self._live:
            return self._reasoning(event.message)
        self._held.setdefault(event.trace, []).append(event.message)
        return b""

    def flush(self) -> Iterator[bytes]:
        """The held traces, each under its header, at the end of a phase."""
        for trace in sorted(self._held):
            yield self._reasoning(self._header(trace) + "".join(self._held[trace]))
        self._held.clear()
        self._live = None

    def answer(self, result: Result) -> Iterator[bytes]:
        """The content deltas of every choice, then the finish chunk(s) and ``[DONE]``."""
        yield from self.flush()
        picked = choices(result, self.plan.choices)
        for i, (text, _) in enumerate(picked):
            for piece in pieces(text):
                yield self._chunk([self._choice(i, piece)])
        finals = [self._choice(i, None, finish) for i, (_, finish) in enumerate(picked)]
        info = {"event": "result", **summary(self.plan, result)}
        if self.include_usage:
            yield self._chunk(finals, ttscale=info)
            yield self._chunk([], usage=usage(result))
        else:
            yield self._chunk(finals, usage=usage(result), ttscale=info)
        yield b"data: [DONE]\n\n"


# The library's sentences name the CLI's flags; over HTTP the fix is a request field.
_FLAGS = (
    (re.compile(r"with -n \(or --n, or @N\)"), "with @N in the model name (or ttscale.n)"),
    (re.compile(r"(?<![\w-])-n (\d+)"), r"\1 samples: @\1 in the model name, or ttscale.n"),
    (re.compile(r"(?<![\w-])--verifier (\S+)"), r'ttscale.verifier "\1"'),
    (re.compile(r"(?<![\w-])--(strategy|budget)\b"), r"ttscale.\1"),
    (re.compile(r"(?<![\w-])--max-tokens\b"), "max_tokens"),
)


def http_wording(message: str) -> str:
    """A library error sentence with the CLI's flags turned into request fields.

    Example:
        >>> http_wording("use n = a multiple of the width (e.g. -n 9)")
        'use n = a multiple of the width (e.g. 9 samples: @9 in the model name, or ttscale.n)'
        >>> http_wording("strategy best_of_n needs a verifier: pass --verifier self_judge")
        'strategy best_of_n needs a verifier: pass ttscale.verifier "self_judge"'
    """
    for pattern, field in _FLAGS:
        message = pattern.sub(field, message)
    return message


def error_body(message: str, type_: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """The OpenAI error object.

    Example:
        >>> error_body("bad", "invalid_request_error")["error"]["type"]
        'invalid_request_error'
    """
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def sse_error(body: dict[str, Any]) -> bytes:
    """An error inside a stream that already answered 200: the OpenAI client raises it.

    Example:
        >>> sse_error({"error": {"message": "the backend failed", "type": "api_error"}})
        b'data: {"error":{"message":"the backend failed","type":"api_error"}}\\n\\n'
    """
    return b"data: " + dumps(body) + b"\n\n"
