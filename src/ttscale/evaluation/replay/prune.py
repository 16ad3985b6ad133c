"""DeepPrune replayed on stored samples: no generation, the first ``prefix`` tokens of each
stored trace are its stored first tokens.

For each of ``orders`` random orders of a question's samples, the first ``n`` are taken, their
prefixes are clustered greedily in that order (:func:`ttscale.aggregation.pruning.cluster`) and each
cluster's representative votes for its stored answer with the cluster's size. Tokens charged:
every sample's prompt and prefix (``min(prefix, length)``), and for each representative that
had not finished within the prefix, its continuation: the prompt again with the prefix as a
partial answer (counted as ``prompt + prefix``: the re-read prefix is re-tokenized by a live
backend, which can differ by a token or two) plus its remaining ``length - prefix`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.aggregation.pruning import PruneParams, cluster, similarity_matrix
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.adaptive import Outcome, per_question
from ttscale.evaluation.replay.metrics import (
    CurvePoint,
    point_of,
    prepare,
)
from ttscale.evaluation.runs.records import QuestionRecord


@dataclass(frozen=True)
class PruneQuestion:
    """One question: class ids (-1: no answer), class correctness, tokens per sample and the
    pairwise similarity of the samples' prefixes."""

    id: str
    classes: tuple[int, ...]
    correct: tuple[bool, ...]
    prompt_tokens: tuple[int, ...]
    completion_tokens: tuple[int, ...]
    similarity: np.ndarray

    @property
    def pass_rate(self) -> float:
        n = len(self.classes)
        return sum(c >= 0 and self.correct[c] for c in self.classes) / n if n else 0.0


def prefix_text(record_tokens: Sequence[str], prefix: int) -> str:
    """The text of a trace's first ``prefix`` tokens.

    Example:
        >>> prefix_text(["So", " 3", " +", " 4"], 2)
        'So 3'
    """
    return "".join(record_tokens[:prefix])


def prepare_prune(records: Sequence[QuestionRecord], params: PruneParams) -> list[PruneQuestion]:
    """The questions with their prefixes' similarities; a ``ConfigError`` when the run kept
    no tokens (an import, or an old run).

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> from ttscale.types import TokenLogprob
        >>> lp = tuple(TokenLogprob(w, -0.1) for w in ("x", " =", " 7"))
        >>> t = TraceRecord(0, 0, "x = 7", "7", 5, 3, logprobs=lp)
        >>> q = prepare_prune([QuestionRecord("q", "?", "7", (t, t))], PruneParams(prefix=2))[0]
        >>> q.classes, q.similarity.tolist()
        ((0, 0), [[1.0, 1.0], [1.0, 1.0]])
    """
    out = []
    for r in records:
        if any(t.logprobs is None for t in r.traces):
            raise ConfigError(f"question {r.id} has samples without stored tokens, which the "
                              "DeepPrune replay needs: replay a run made by ttscale eval")
        texts = [prefix_text([x.token for x in t.logprobs or ()], params.prefix)
                 for t in r.traces]
        p = prepare([(t.answer, t.tokens, None) for t in r.traces], r.gold)
        out.append(PruneQuestion(r.id, p.classes, p.correct,
                                 tuple(t.prompt_tokens for t in r.traces),
                                 tuple(t.completion_tokens for t in r.traces),
                                 similarity_matrix(texts, params)))
    return out


def pruned(q: PruneQuestion, drawn: Sequence[int], params: PruneParams) -> Outcome:
    """DeepPrune over the samples ``drawn``, clustered in that order.

    Example:
        >>> s = np.array([[1, .9, .1], [.9, 1, .1], [.1, .1, 1]])
        >>> q = PruneQuestion("q", (0, 0, 1), (True, False), (10,) * 3, (100, 100, 50), s)
        >>> pruned(q, [0, 1, 2], PruneParams(prefix=64, threshold=0.5))
        Outcome(winner=0, correct=True, drawn=3, tokens=318)
    """
    sub = q.similarity[np.ix_(list(drawn), list(drawn))]
    groups = cluster(sub, params.cut)
    tokens = sum(q.prompt_tokens[i] + min(params.prefix, q.completion_tokens[i])
                 for i in drawn)
    weight: dict[int, int] = {}
    for g in groups:
        rep = drawn[g[0]]
        if q.completion_tokens[rep] > params.prefix:
            tokens += q.prompt_tokens[rep] + q.completion_tokens[rep]
        c = q.classes[rep]
        if c >= 0:
            weight[c] = weight.get(c, 0) + len(g)
    winner = max(weight, key=lambda c: weight[c]) if weight else None  # ties: first seen
    return Outcome(winner, winner is not None and q.correct[winner], len(drawn), tokens)


def replay_prune(questions: Sequence[PruneQuestion], params: PruneParams, n: int, *,
                 orders: int = 5, seed: int = 0,
                 ) -> tuple[CurvePoint, list[tuple[float, float]]]:
    """One curve point of DeepPrune at ``n`` samples (mean over ``orders`` random orders), and
    per question its mean (accuracy, tokens).

    Example:
        >>> q = PruneQuestion("q", (0, 0), (True,), (1, 1), (9, 9), np.ones((2, 2)))
        >>> point, per = replay_prune([q], PruneParams(prefix=4), 2)
        >>> point.strategy, point.accuracy, per
        ('deepprune[jaccard,prefix=4]', 1.0, [(1.0, 20.0)])
    """
    accs, toks, bins = per_question(
        questions, n, orders, seed,
        lambda q, draw: [pruned(q, o[:n], params) for o in draw()])
    per = list(zip(accs, toks, strict=True))
    label = f"deepprune[{params.similarity},prefix={params.prefix}"
    label += f",threshold={params.threshold:g}]" if params.threshold is not None else "]"
    return point_of(label, n, accs, toks, bins), per
