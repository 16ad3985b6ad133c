"""The rows of a run store and their values: what a generation, score, question, result or
tree is in Python, and how one becomes the values of its table (``runs.store`` holds the
SQLite side). Prompts and sampling parameters are keyed by the SHA-256 of their canonical
JSON; a sample's key leaves ``n`` and ``seed`` out, as its index stands for both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.backends.packed import PackedGeneration, pack
from ttscale.params import SamplingParams
from ttscale.types import Chat, Generation, Message, Prompt, Usage


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """Sorted, compact JSON (dataclasses as dicts): equal values give equal text.

    Example:
        >>> canonical_json({"b": (1, 2), "a": None})
        '{"a":null,"b":[1,2]}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_default,
                      ensure_ascii=False)


def sha(text: str) -> str:
    """The SHA-256 of ``text``, hex: the key of a prompt or of sampling parameters.

    Example:
        >>> sha("")[:12]
        'e3b0c44298fc'
    """
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_json(prompt: Prompt) -> str:
    """A prompt as canonical JSON; its SHA-256 is the prompt's key.

    Example:
        >>> prompt_json(Chat.user("2+2?"))
        '{"messages":[["user","2+2?"]],"prefill":""}'
        >>> prompt_from_json(prompt_json(Chat.user("2+2?"))) == Chat.user("2+2?")
        True
    """
    if isinstance(prompt, str):
        return canonical_json({"text": prompt})
    return canonical_json({"messages": [[m.role, m.content] for m in prompt.messages],
                           "prefill": prompt.prefill})


def prompt_from_json(text: str) -> Prompt:
    """The prompt ``prompt_json`` wrote.

    Example:
        >>> prompt_from_json(prompt_json("2+2="))
        '2+2='
        >>> prompt_from_json(prompt_json(Chat((Message("user", "2+2?"),), "So"))).prefill
        'So'
    """
    data = json.loads(text)
    if "text" in data:
        return str(data["text"])
    return Chat(tuple(Message(r, c) for r, c in data["messages"]), data["prefill"])


def params_json(params: SamplingParams) -> str:
    """Sampling parameters without ``n`` and ``seed``: the sample index stands for both.

    Example:
        >>> params_json(SamplingParams(n=8, seed=3)) == params_json(SamplingParams())
        True
    """
    fields = dataclasses.asdict(params)
    del fields["n"], fields["seed"]
    return canonical_json(fields)


@dataclass(frozen=True)
class NewGeneration:
    """A generation to store, with what produced it."""

    model_sha256: str
    prompt: Prompt
    params: SamplingParams
    sample_index: int
    generation: Generation
    answer: str | None = None


@dataclass(frozen=True)
class StoredGeneration:
    """A stored generation, rebuilt as the backend returned it (its seed is its index)."""

    id: int
    sample_index: int
    generation: Generation
    answer: str | None


@dataclass(frozen=True)
class SampleBrief:
    """A stored sample without its text and log-probabilities: enough for a vote."""

    id: int
    sample_index: int
    answer: str | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class ScoreRow:
    """A verifier's scores of one stored generation and the compute the scoring cost."""

    generation_id: int
    verifier: str
    step_scores: tuple[float, ...]
    score: float | None = None
    usage: Usage = dataclasses.field(default_factory=Usage)


@dataclass(frozen=True)
class QuestionRow:
    """A question of an evaluation run, kept so a report needs no dataset at hand."""

    id: str
    question: str
    gold: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ResultRow:
    """The outcome of one (question, strategy, n, seed) in a run; ``usage`` is its full cost."""

    run: str
    question_id: str
    strategy: str
    n: int
    seed: int
    answer: str | None
    correct: bool | None
    usage: Usage


@dataclass(frozen=True)
class TreeRow:
    id: int
    question_id: str
    strategy: str
    tree: Any


PUT_GENERATION = (
    "INSERT OR IGNORE INTO generations (model_sha256, prompt_hash, params_hash, "
    "sample_index, prompt, params, text, prompt_tokens, completion_tokens, "
    "finish_reason, logprobs, token_logprobs, answer, created, hit_stop) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
PUT_RESULT = ("INSERT OR IGNORE INTO results (run, question_id, strategy, n, seed, answer, "
               "correct, usage, created) VALUES (?,?,?,?,?,?,?,?,?)")


def generation_values(rows: Sequence[NewGeneration],
                      now: float | None = None) -> list[tuple[Any, ...]]:
    """The generations table's values of ``rows``; prompts and parameters shared by many
    rows (a question's samples) are serialised once.

    Example:
        >>> g = Generation("The answer is 4.", 12, 5, "stop")
        >>> row = NewGeneration("sha", "2+2?", SamplingParams(), 0, g, "4")
        >>> values = generation_values([row], now=0.0)[0]
        >>> values[3:5], values[6:10], values[12:]
        ((0, '{"text":"2+2?"}'), ('The answer is 4.', 12, 5, 'stop'), ('4', 0.0, None))
    """
    now = time.time() if now is None else now
    keys: dict[int, tuple[str, str]] = {}  # id of a prompt or params object -> json, hash
    values = []
    for r in rows:
        p_json, p_hash = keys.get(id(r.prompt)) or keys.setdefault(
            id(r.prompt), _keyed(prompt_json(r.prompt)))
        s_json, s_hash = keys.get(id(r.params)) or keys.setdefault(
            id(r.params), _keyed(params_json(r.params)))
        g = r.generation
        # Token log-probabilities as [[token, logprob, [[alt, logprob], ...]], ...]; a
        # controller's generations come packed so from the decoder (no object per token)
        packed = g.packed if isinstance(g, PackedGeneration) else None
        if packed is None and g.logprobs is not None:
            packed = pack(g.logprobs)
        values.append((r.model_sha256, p_hash, s_hash, r.sample_index, p_json, s_json, g.text,
                       g.prompt_tokens, g.completion_tokens, g.finish_reason,
                       None if packed is None else packed.summary(),
                       None if packed is None else packed.text, r.answer, now,
                       None if g.hit_stop is None else int(g.hit_stop)))
    return values


def _keyed(text: str) -> tuple[str, str]:
    return text, sha(text)


def result_values(rows: Sequence[ResultRow], now: float) -> list[tuple[Any, ...]]:
    """The results table's values of ``rows``, stored at time ``now``.

    Example:
        >>> row = ResultRow("eval", "q0", "majority", 4, 0, "4", True, Usage(10, 5, 1))
        >>> result_values([row], now=0.0)  # doctest: +ELLIPSIS
        [('eval', 'q0', 'majority', 4, 0, '4', 1, '{"calls":1,"completion_tokens":5,...}', 0.0)]
    """
    return [(r.run, r.question_id, r.strategy, r.n, r.seed, r.answer,
             None if r.correct is None else int(r.correct), canonical_json(r.usage), now)
            for r in rows]
