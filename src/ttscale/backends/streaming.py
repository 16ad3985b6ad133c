"""Samples whose tokens are watched as they arrive, so that a caller can abort one mid-way.

A *watch* is called with a sample's index (its place in the request) and each new token with
its top log-probabilities; returning True aborts that sample only. Backends that can stream
(llama.cpp in-process, OpenAI-compatible servers, the fake) implement
``generate_watched(prompt, params, watch)``; each sample is its own streamed request with seed
``seed + i``, so one abort never stops the others. An aborted sample keeps the tokens it had,
finishes with ``"aborted"`` and is charged exactly those tokens plus its prompt. A watch
may also have a ``finished(index)`` method: it is then told when a sample ends on its own
(a race that keeps the first samples to finish, :mod:`ttscale.strategies.short`, needs it).

:func:`generate_watched` is what callers use: it streams where the backend can, and otherwise
generates whole samples and applies the watch afterwards (every generated token is then still
charged, since it was spent): :func:`watch_generations` plays whole samples as if they had
streamed side by side, a token of each in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ttscale.params import SamplingParams
from ttscale.types import FinishReason, GenerateOutput, Generation, Prompt, TokenLogprob, Usage

Watch = Callable[[int, TokenLogprob], bool]
"""Called with (sample index in the request, new token); True aborts that sample."""
OnText = Callable[[int, str], None]
"""Called with (sample index in the request, a piece of its text) as samples are decoded."""


def can_stream(backend: object) -> bool:
    """Whether ``backend`` streams samples itself (has ``generate_watched``).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> can_stream(FakeBackend()), can_stream(object())
        (True, False)
    """
    return callable(getattr(backend, "generate_watched", None))


def watch_generation(gen: Generation, index: int, watch: Watch) -> Generation:
    """Feed a finished sample's tokens to ``watch``; cut it at the token the watch aborts on.

    The cut sample's text is its kept tokens joined; without log-probabilities the sample is
    returned whole (nothing to watch).

    Example:
        >>> toks = tuple(TokenLogprob(t, -0.1) for t in ("a", "b", "c"))
        >>> g = Generation("abc", 5, 3, "stop", toks)
        >>> cut = watch_generation(g, 0, lambda _i, t: t.token == "b")
        >>> cut.text, cut.completion_tokens, cut.finish_reason
        ('ab', 2, 'aborted')
    """
    for t, token in enumerate(gen.logprobs or ()):
        if watch(index, token):
            kept = (gen.logprobs or ())[: t + 1]
            return replace(gen, text="".join(x.token for x in kept), completion_tokens=t + 1,
                           finish_reason="aborted", logprobs=kept)
    return gen


def watch_generations(gens: tuple[Generation, ...] | list[Generation], watch: Watch,
                      first: int = 0) -> tuple[Generation, ...]:
    """Whole samples played to ``watch`` as if streamed side by side: the first token of
    each, then the second of each, ...; a sample that ends is reported to the watch's
    ``finished`` (if it has one) before the others' next tokens. Indices start at ``first``.
    A sample without log-probabilities is kept whole (nothing to watch), and still reported
    ended at its length.

    Example (a race: once one sample has finished, the others are cut):
        >>> class FirstOne:
        ...     done = False
        ...     def __call__(self, _i, _t): return self.done
        ...     def finished(self, _i): self.done = True
        >>> def g(words): return Generation(words, 5, len(words.split()), "stop",
        ...     tuple(TokenLogprob(w, -0.1) for w in words.split()))
        >>> [(x.text, x.finish_reason) for x in watch_generations([g("a b c"), g("d e")],
        ...                                                           FirstOne())]
        [('abc', 'aborted'), ('d e', 'stop')]
    """
    done = getattr(watch, "finished", None)
    tokens = [g.logprobs or () for g in gens]
    # a sample without log-probabilities is not watched, but still ends at its length
    ends = [len(t) if g.logprobs else g.completion_tokens for g, t in zip(gens, tokens,
                                                                            strict=True)]
    cut: list[int | None] = [None] * len(gens)
    ended = [False] * len(gens)
    for pos in range(max(ends, default=0) + 1):
        for i, end in enumerate(ends):  # those that end here, before the others go on
            if not ended[i] and cut[i] is None and pos == end:
                ended[i] = True
                if done is not None:
                    done(first + i)
        for i, toks in enumerate(tokens):
            if not ended[i] and cut[i] is None and pos < len(toks) and \
                    watch(first + i, toks[pos]):
                cut[i] = pos + 1
    out = []
    for g, toks, c in zip(gens, tokens, cut, strict=True):
        if c is None:
            out.append(g)
        else:
            kept = tuple(toks[:c])
            out.append(replace(g, text="".join(x.token for x in kept), completion_tokens=c,
                               finish_reason="aborted", logprobs=kept))
    return tuple(out)


def generate_watched(backend: Any, prompt: Prompt, params: SamplingParams,
                     watch: Watch) -> tuple[GenerateOutput, bool]:
    """``params.n`` samples of ``prompt`` with every token shown to ``watch``; also whether
    they really streamed (False: whole samples were generated, then cut).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> out, streamed = generate_watched(FakeBackend(responses=["one two three"]), "q",
        ...     SamplingParams(n=2, logprobs=True), lambda i, t: i == 1 and t.token == " two")
        >>> [g.text for g in out.generations[0]], out.usage.completion_tokens, streamed
        (['one two three', 'one two'], 5, True)
    """
    if can_stream(backend):
        result: GenerateOutput = backend.generate_watched(prompt, params, watch)
        return result, True
    out = backend.generate([prompt], params.with_(logprobs=True))
    gens = watch_generations(out.generations[0], watch)
    return GenerateOutput((gens,), out.usage), False


def generate_streamed(backend: Any, prompt: Prompt, params: SamplingParams,
                      on_text: OnText) -> GenerateOutput:
    """``backend.generate([prompt], params)``, with the samples' text shown to ``on_text``
    as it is decoded where the backend can (``generate_streamed``), else each whole text
    once the call returns. The samples are the same either way.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> seen = []
        >>> out = generate_streamed(FakeBackend(responses=["so 4"]), "q", SamplingParams(n=2),
        ...                         lambda i, piece: seen.append((i, piece)))
        >>> seen
        [(0, 'so'), (1, 'so'), (0, ' 4'), (1, ' 4')]
        >>> class Whole(FakeBackend):  # a backend that cannot stream
        ...     generate_streamed = None
        >>> seen = []
        >>> out = generate_streamed(Whole(responses=["so 4"]), "q", SamplingParams(n=1),
        ...                         lambda i, piece: seen.append((i, piece)))
        >>> seen
        [(0, 'so 4')]
    """
    own = getattr(backend, "generate_streamed", None)
    if callable(own):
        result: GenerateOutput = own(prompt, params, on_text)
        return result
    out: GenerateOutput = backend.generate([prompt], params)
    for i, g in enumerate(out.generations[0]):
        on_text(i, g.text)
    return out


def usage_of(gens: tuple[Generation, ...], params_count: int, seconds: float,
             calls: int) -> Usage:
    """The usage of streamed samples: each its prompt plus the tokens it produced.

    Example:
        >>> gens = (Generation("4", 10, 2, "stop"), Generation("5", 10, 3, "aborted"))
        >>> u = usage_of(gens, 0, 1.5, 2)
        >>> u.prompt_tokens, u.completion_tokens, u.calls, u.seconds
        (20, 5, 2, 1.5)
    """
    usage = Usage(calls=calls, seconds=seconds)
    for g in gens:
        usage = usage + Usage.of(g.prompt_tokens, g.completion_tokens, params_count, 0.0,
                                 calls=0)
    return usage


@dataclass
class StreamedSample:
    """One sample being streamed in OpenAI chunk form (llama.cpp and OpenAI servers alike):
    its text, tokens and finish so far. ``feed`` takes one chunk and says whether to stop.

    Example:
        >>> s = StreamedSample(0, 7, lambda _i, t: t.token == "b", top_k=0)
        >>> lp = {"content": [{"token": "a", "logprob": -0.5}]}
        >>> s.feed({"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": lp}]})
        False
        >>> lp = {"content": [{"token": "b", "logprob": -0.1}]}
        >>> s.feed({"choices": [{"index": 0, "delta": {"content": "b"}, "logprobs": lp}]})
        True
        >>> g = s.generation(prompt_tokens=4)
        >>> g.text, g.completion_tokens, g.finish_reason, g.seed, g.logprobs is None
        ('ab', 2, 'aborted', 7, True)
    """

    index: int
    seed: int
    watch: Watch
    top_k: int = 0  # 0: keep no log-probabilities in the result (they were still watched)
    chat: bool = True
    parts: list[str] = field(default_factory=list)
    tokens: list[TokenLogprob] = field(default_factory=list)
    finish: FinishReason = "stop"
    prompt_tokens: int | None = None
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def feed(self, chunk: dict[str, Any]) -> bool:
        """Take one chunk; True when the sample must stop (aborted by the watch, or failed)."""
        if "error" in chunk or ("code" in chunk and "message" in chunk):
            err = chunk.get("error", chunk)
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)
            self.finish = "error"
            return True
        if self.finish in ("aborted", "error"):
            return True  # a chunk decoded after the stop: the sample is over
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            self.prompt_tokens = int(usage["prompt_tokens"])
        for choice in chunk.get("choices") or ():
            if self.chat:
                self.parts.append((choice.get("delta") or {}).get("content") or "")
            else:
                self.parts.append(choice.get("text") or "")
            if choice.get("finish_reason") == "length":
                self.finish = "length"
            ended = bool(choice.get("finish_reason"))
            for t in (choice.get("logprobs") or {}).get("content") or ():
                token = TokenLogprob(
                    str(t.get("token", "")), float(t.get("logprob", 0.0)),
                    tuple((str(c.get("token", "")), float(c.get("logprob", 0.0)))
                          for c in t.get("top_logprobs") or ()))
                self.tokens.append(token)
                if self.watch(self.index, token):
                    self.finish = "aborted"
                    return True
            if ended and (done := getattr(self.watch, "finished", None)) is not None:
                done(self.index)
        return False

    def generation(self, prompt_tokens: int) -> Generation:
        """The sample as a ``Generation``; ``prompt_tokens`` is used when no usage came."""
        text = "".join(self.parts)
        if self.finish == "aborted":
            # The text deltas may run ahead of the watched tokens: keep what was watched.
            text = "".join(t.token for t in self.tokens)
        return Generation(text, self.prompt_tokens if self.prompt_tokens is not None
                          else prompt_tokens, len(self.tokens), self.finish,
                          tuple(self.tokens) if self.top_k else None, self.seed)


def stream_body(body: dict[str, Any], params: SamplingParams) -> dict[str, Any]:
    """A request body turned into a streamed one that reports every token with its top
    candidates (the watch needs them even when the caller keeps none).

    Example:
        >>> stream_body({"messages": []}, SamplingParams(top_logprobs=5, logprobs=True))
        ... # doctest: +NORMALIZE_WHITESPACE
        {'messages': [], 'stream': True, 'stream_options': {'include_usage': True},
         'logprobs': True, 'top_logprobs': 5}
    """
    out = dict(body, stream=True, stream_options={"include_usage": True})
    if "messages" in out:
        out["logprobs"] = True
        out["top_logprobs"] = max(params.top_logprobs, 1)
    else:
        out["logprobs"] = max(params.top_logprobs, 1)
    return out
