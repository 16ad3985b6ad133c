"""Small frozen values that flow through ttscale: prompts, generations, traces, results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Chat:
    """A chat prompt. A non-empty ``prefill`` is a partial assistant message to continue.

    Example:
        >>> Chat((Message("user", "2+2?"),), prefill="Step 1:").prefill
        'Step 1:'
    """

    messages: tuple[Message, ...]
    prefill: str = ""

    @classmethod
    def user(cls, text: str, system: str | None = None) -> Chat:
        msgs = ((Message("system", system),) if system else ()) + (Message("user", text),)
        return cls(msgs)


# A raw string prompt is continued as-is (no chat template).
Prompt = Chat | str


@dataclass(frozen=True)
class Usage:
    """Compute spent by one or more calls. FLOPs are estimated as 2 x parameters x tokens.

    Example:
        >>> (Usage(prompt_tokens=10, completion_tokens=5, calls=1)
        ...  + Usage(prompt_tokens=1, completion_tokens=1, calls=1)).total_tokens
        17
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    seconds: float = 0.0
    flops: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            seconds=self.seconds + other.seconds,
            flops=self.flops + other.flops,
        )

    @staticmethod
    def of(prompt_tokens: int, completion_tokens: int, params_count: int, seconds: float,
           calls: int = 1) -> Usage:
        """Usage for one call of a model with ``params_count`` parameters (0 when unknown)."""
        tokens = prompt_tokens + completion_tokens
        return Usage(prompt_tokens, completion_tokens, calls, seconds, 2.0 * params_count * tokens)


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


# "aborted": stopped on purpose by the caller mid-way (a confidence check), not by the model.
FinishReason = Literal["stop", "length", "error", "aborted"]


@dataclass(frozen=True)
class Generation:
    """One sample: its text, its own token counts and (when asked) token log-probabilities.

    ``hit_stop`` says whether one of the request's stop strings ended it (True), or the model
    or the token cap did (False); None when the backend cannot tell. Step-level search reads
    it to know whether a step ended at the step delimiter or the whole solution ended.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprob, ...] | None = None
    seed: int | None = None
    hit_stop: bool | None = None


@dataclass(frozen=True)
class GenerateOutput:
    """What one batched ``generate`` returns: per prompt, its ``n`` generations; and the usage."""

    generations: tuple[tuple[Generation, ...], ...]
    usage: Usage


@dataclass(frozen=True)
class Trace:
    """One solution of a question, with its extracted answer and verifier scores."""

    text: str
    answer: str | None
    completion_tokens: int
    finish_reason: FinishReason
    step_scores: tuple[float, ...] | None = None
    score: float | None = None


@dataclass(frozen=True)
class AnswerClass:
    """Equivalent answers merged: how many traces voted for it and their summed score."""

    answer: str
    votes: int
    score: float | None
    traces: tuple[int, ...]


@dataclass(frozen=True)
class Result:
    """Everything ``solve`` learned about one question. ``tree`` is what a sequential or
    search strategy built, as JSON-ready nested nodes (``text``, ``score``, ``children``,
    ``pruned`` and fields of its own), shown by ``solve --json`` and the eval report."""

    question: str
    answer: str | None
    strategy: str
    classes: tuple[AnswerClass, ...]
    traces: tuple[Trace, ...]
    usage: Usage
    seconds: float
    budget_limited: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    tree: Any = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary."""
        from dataclasses import asdict

        out = asdict(self)
        out["total_tokens"] = self.usage.total_tokens
        return out
