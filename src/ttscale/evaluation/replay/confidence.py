"""DeepConf replayed on stored samples (their stored top-k log-probabilities), no generation.

**Offline** at ``n`` samples: the vote of DeepConf over ``n`` of a question's samples (all of
them, in stored order, when ``n`` is the number stored; otherwise the first ``n`` of each of
``orders`` random orders); every one of the ``n`` samples is charged in full.

**Online** with at most ``n`` samples: for each of ``orders`` random orders of the question's
samples (without replacement), the first ``warmup`` are whole traces and set the bar; later
samples come ``batch`` at a time, and a sample whose window confidence falls below the bar is
cut at that token: it is charged its prompt and the tokens up to the cut, and never votes.
The stop rule (leader share >= ``tau``, or ``n`` drawn) is asked after each batch, as the
online strategy does. The stored rest of a cut trace is never read.

A sample is charged ``prompt + completion`` tokens, as everywhere in ttscale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.aggregation.confidence import (
    ConfidenceParams,
    abort_after,
    leader_share,
    select,
    threshold,
    token_confidences,
    trace_confidence,
    weighted_vote,
)
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.adaptive import Outcome, per_question
from ttscale.evaluation.replay.metrics import (
    CurvePoint,
    point_of,
    prepare,
)
from ttscale.evaluation.runs.records import QuestionRecord


@dataclass(frozen=True)
class ConfQuestion:
    """One question ready for replay: class ids (-1: no answer), class correctness, each
    sample's prompt and completion tokens and its token confidences."""

    id: str
    classes: tuple[int, ...]
    correct: tuple[bool, ...]
    prompt_tokens: tuple[int, ...]
    completion_tokens: tuple[int, ...]
    confidences: tuple[np.ndarray, ...]

    @property
    def pass_rate(self) -> float:
        n = len(self.classes)
        return sum(c >= 0 and self.correct[c] for c in self.classes) / n if n else 0.0


def prepare_confidence(records: Sequence[QuestionRecord], top_k: int = 5) -> list[ConfQuestion]:
    """The questions with the token confidences of every stored sample; a ``ConfigError``
    when the run stored no log-probabilities (an import, or an old run).

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> from ttscale.types import TokenLogprob
        >>> lp = (TokenLogprob("7", -0.1, (("7", -0.1), ("8", -4.0))),)
        >>> q = prepare_confidence([QuestionRecord("q", "?", "7", (
        ...     TraceRecord(0, 0, "7", "7", 10, 1, logprobs=lp),))])[0]
        >>> q.classes, q.correct, q.confidences[0].tolist()
        ((0,), (True,), [2.05])
    """
    out = []
    for r in records:
        if any(t.logprobs is None for t in r.traces):
            raise ConfigError(f"question {r.id} has samples without token log-probabilities, "
                              "which DeepConf needs: replay a run made by ttscale eval")
        p = prepare([(t.answer, t.tokens, None) for t in r.traces], r.gold)
        out.append(ConfQuestion(
            r.id, p.classes, p.correct, tuple(t.prompt_tokens for t in r.traces),
            tuple(t.completion_tokens for t in r.traces),
            tuple(token_confidences(t.logprobs or (), top_k) for t in r.traces)))
    return out


def offline(q: ConfQuestion, drawn: Sequence[int], params: ConfidenceParams) -> Outcome:
    """DeepConf offline over the samples ``drawn`` (in that order).

    Example:
        >>> q = ConfQuestion("q", (0, 1, 1), (True, False), (2, 2, 2), (3, 3, 3),
        ...                  (np.full(3, 9.0), np.full(3, 1.0), np.full(3, 2.0)))
        >>> offline(q, [0, 1, 2], ConfidenceParams(eta=0.9))
        Outcome(winner=0, correct=True, drawn=3, tokens=15)
    """
    confs = [trace_confidence(q.confidences[i], params) for i in drawn]
    keep = select(confs, params.eta)
    winner, _ = weighted_vote([q.classes[i] for i in drawn], confs, keep)
    tokens = sum(q.prompt_tokens[i] + q.completion_tokens[i] for i in drawn)
    return Outcome(winner, winner is not None and q.correct[winner], len(drawn), tokens)


def online(q: ConfQuestion, order: Sequence[int], params: ConfidenceParams,
           n_max: int) -> Outcome:
    """DeepConf online over the samples in ``order``, at most ``n_max`` of them.

    Example:
        >>> q = ConfQuestion("q", (0, 0, 1, 1), (True, False), (2,) * 4, (4,) * 4,
        ...                  (np.full(4, 9.0), np.full(4, 8.0), np.full(4, 1.0), np.full(4, 1.0)))
        >>> online(q, [0, 1, 2, 3], ConfidenceParams(warmup=2, window=2, batch=1), 4)
        Outcome(winner=0, correct=True, drawn=2, tokens=12)
        >>> online(q, [0, 2, 3, 1], ConfidenceParams(warmup=2, window=2, batch=1), 4)
        Outcome(winner=0, correct=True, drawn=4, tokens=22)
    """
    order = list(order)[:n_max]
    warm = order[: params.warmup]
    classes: list[int] = []
    weights: list[float] = []
    tokens = 0
    for i in warm:
        classes.append(q.classes[i])
        weights.append(trace_confidence(q.confidences[i], params, "lowest"))
        tokens += q.prompt_tokens[i] + q.completion_tokens[i]
    bar = threshold(weights, params.eta)
    drawn = len(warm)
    winner, total = weighted_vote(classes, weights)
    rest = order[len(warm):]
    while rest and leader_share(total) < params.tau:
        batch, rest = rest[: params.batch], rest[params.batch:]
        for i in batch:
            kept = abort_after(q.confidences[i], params.window, bar)
            tokens += q.prompt_tokens[i] + (q.completion_tokens[i] if kept is None else kept)
            if kept is None:
                classes.append(q.classes[i])
                weights.append(trace_confidence(q.confidences[i], params, "lowest"))
        drawn += len(batch)
        winner, total = weighted_vote(classes, weights)
    return Outcome(winner, winner is not None and q.correct[winner], drawn, tokens)


def replay_confidence(questions: Sequence[ConfQuestion], params: ConfidenceParams, n: int, *,
                      mode: str = "offline", orders: int = 5, seed: int = 0,
                      ) -> tuple[CurvePoint, list[tuple[float, float]]]:
    """One curve point of DeepConf ``mode`` (``offline`` or ``online``) at ``n`` samples, and
    per question its mean (accuracy, tokens) over the orders.

    Example:
        >>> q = ConfQuestion("q", (0, 1), (True, False), (1, 1), (2, 2),
        ...                  (np.full(2, 5.0), np.full(2, 1.0)))
        >>> point, per = replay_confidence([q], ConfidenceParams(eta=0.5), 2)
        >>> point.strategy, point.accuracy, per
        ('deepconf[eta=0.5]', 1.0, [(1.0, 6.0)])
    """
    if mode not in ("offline", "online"):
        raise ConfigError(f"mode must be offline or online, got {mode!r}")

    def play(q: ConfQuestion, draw: Callable[[], list[list[int]]]) -> list[Outcome]:
        if mode == "offline" and n == len(q.classes):
            return [offline(q, range(n), params)]  # every order holds the same n samples
        if mode == "offline":
            return [offline(q, o[:n], params) for o in draw()]
        return [online(q, o, params, n) for o in draw()]

    accs, toks, bins = per_question(questions, n, orders, seed, play)
    name = "deepconf" if mode == "offline" else "deepconf_online"
    label = params.label()
    per = list(zip(accs, toks, strict=True))
    return point_of(f"{name}[{label}]" if label else name, n, accs, toks, bins), per

