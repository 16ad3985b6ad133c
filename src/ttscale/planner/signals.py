"""Difficulty signals: label-free features of a probe state, the same at fit and solve time.

A *probe state* is what a question has shown after ``k`` samples: their answer classes (by
math-verify equivalence, ``-1`` for no answer), their lengths and finish reasons, and, once a
verifier has read them, their scores. Two feature sets:

- ``U`` (unverified): agreement and shape only, free once the samples exist: the leader's vote
  share, its margin over the runner-up, distinct answers per sample, vote entropy, the share
  with no answer, log of the Best-of-Infinity Bayes factor, mean length, share cut at
  ``max_tokens``, the prompt's length; and DeepConf trace confidence where every sample has
  one (log-probabilities were kept).
- ``V`` (verified): ``U`` plus the verifier's view: mean, max and spread of the scores, the
  mean score of the majority's class, the weighted winner's share of the summed scores, and
  whether the weighted winner is the majority's.

Both are plain tuples of floats in the order of :data:`U_SIGNALS` / :data:`V_SIGNALS`, so a
plan stores the names beside its coefficients and a reader can see what each weighs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttscale.aggregation.brevity import weighted_winner
from ttscale.aggregation.stopping import bayes_factor

U_SIGNALS = ("leader_share", "margin", "distinct", "entropy", "no_answer", "log_bf",
             "mean_length", "cut_share", "prompt_length")
CONFIDENCE_SIGNAL = "confidence"
V_SIGNALS = ("score_mean", "score_max", "score_spread", "leader_score", "weighted_share",
             "weighted_is_leader")


@dataclass(frozen=True)
class Probe:
    """What ``k`` samples of one question showed, in the order drawn.

    ``classes``: answer class ids in first-seen order (``-1``: no answer); ``lengths``:
    completion tokens; ``cut``: whether each stopped at ``max_tokens``; ``scores``: verifier
    scores (``None`` until verified); ``confidences``: DeepConf trace confidences (``None``
    without log-probabilities); ``prompt_tokens``: the question's prompt length.
    """

    classes: tuple[int, ...]
    lengths: tuple[int, ...]
    cut: tuple[bool, ...]
    prompt_tokens: int = 0
    scores: tuple[float, ...] | None = None
    confidences: tuple[float, ...] | None = None

    @property
    def counts(self) -> tuple[int, ...]:
        """Votes per class id (first-seen order), unanswered samples left out."""
        top = max(self.classes, default=-1)
        return tuple(sum(1 for c in self.classes if c == k) for k in range(top + 1))

    @property
    def leader(self) -> int | None:
        """The majority's class, ties to the first seen; ``None`` when nothing answered."""
        counts = self.counts
        if not counts or max(counts) == 0:
            return None
        return counts.index(max(counts))

    @property
    def weighted_leader(self) -> int | None:
        """The class with the largest summed score (ties to the first seen)."""
        if self.scores is None:
            return self.leader
        return weighted_winner(self.classes, self.scores)


def u_features(p: Probe, *, confidence: bool = False) -> tuple[float, ...]:
    """The unverified signals of a probe (``U_SIGNALS``, plus ``confidence`` when asked).

    Example:
        >>> p = Probe((0, 0, 1, -1), (100, 120, 300, 768), (False, False, False, True), 130)
        >>> dict(zip(U_SIGNALS, (round(x, 3) for x in u_features(p))))["leader_share"]
        0.5
        >>> [round(x, 3) for x in u_features(p)][:5]
        [0.5, 0.25, 0.5, 0.918, 0.25]
    """
    k = len(p.classes)
    counts = sorted(p.counts, reverse=True)
    top = counts[0] if counts else 0
    second = counts[1] if len(counts) > 1 else 0
    answered = sum(counts)
    entropy = -sum(c / answered * math.log2(c / answered) for c in counts if c) if answered \
        else 0.0
    feats = [top / k, (top - second) / k, len([c for c in counts if c]) / k, entropy,
             (k - answered) / k, math.log1p(bayes_factor(list(p.counts))),
             sum(p.lengths) / k / 1000.0, sum(p.cut) / k, math.log1p(p.prompt_tokens)]
    if confidence:
        confs = p.confidences or ()
        feats.append(sum(confs) / len(confs) if confs else 0.0)
    return tuple(feats)


def v_features(p: Probe, *, confidence: bool = False) -> tuple[float, ...]:
    """The verified signals: ``u_features`` then ``V_SIGNALS``.

    Example:
        >>> p = Probe((0, 0, 1), (100, 120, 300), (False,) * 3, 130, scores=(0.2, 0.3, 0.9))
        >>> [round(x, 3) for x in v_features(p)[-6:]]
        [0.467, 0.9, 0.309, 0.25, 0.643, 0.0]
    """
    if p.scores is None:
        raise ValueError("v_features needs the probe's verifier scores")
    scores = p.scores
    k = len(scores)
    mean = sum(scores) / k
    spread = math.sqrt(sum((s - mean) ** 2 for s in scores) / k)
    leader, wleader = p.leader, p.weighted_leader
    of_leader = [s for c, s in zip(p.classes, scores, strict=True) if c == leader and c >= 0]
    answered = sum(s for c, s in zip(p.classes, scores, strict=True) if c >= 0)
    of_w = sum(s for c, s in zip(p.classes, scores, strict=True) if c == wleader and c >= 0)
    return (*u_features(p, confidence=confidence), mean, max(scores), spread,
            sum(of_leader) / len(of_leader) if of_leader else 0.0,
            of_w / answered if answered > 0 else 0.0, float(leader == wleader))


def signal_names(track: str, *, confidence: bool = False) -> tuple[str, ...]:
    """The names of a track's features, in order.

    Example:
        >>> signal_names("V")[-1], len(signal_names("U", confidence=True))
        ('weighted_is_leader', 10)
    """
    u = U_SIGNALS + ((CONFIDENCE_SIGNAL,) if confidence else ())
    return u + V_SIGNALS if track == "V" else u


def features(p: Probe, track: str, *, confidence: bool = False) -> tuple[float, ...]:
    """The features of ``track`` (``U`` or ``V``) for a probe.

    Example:
        >>> p = Probe((0, 0, 1), (100, 120, 300), (False,) * 3, 130, scores=(0.2, 0.3, 0.9))
        >>> len(features(p, "U")), len(features(p, "V")), len(features(p, "U", confidence=True))
        (9, 15, 10)
        >>> features(p, "V")[:9] == features(p, "U")
        True
    """
    return v_features(p, confidence=confidence) if track == "V" \
        else u_features(p, confidence=confidence)


def auroc_table(rows: Sequence[Sequence[float]], labels: Sequence[bool],
                names: Sequence[str]) -> dict[str, float | None]:
    """Each signal's AUROC for ``labels`` (the probe's answer is correct), oriented so that
    0.5 is chance and 1 is perfect whichever way the signal points.

    Example:
        >>> auroc_table([(0.9, 1.0), (0.2, 1.0)], [True, False], ["a", "b"])
        {'a': 1.0, 'b': 0.5}
    """
    from ttscale.stats import auroc

    out: dict[str, float | None] = {}
    ys = [int(y) for y in labels]
    for j, name in enumerate(names):
        a = auroc([r[j] for r in rows], ys)
        out[name] = None if a is None else round(max(a, 1.0 - a), 4)
    return out


def confidence_of(logprobs: Sequence[Any] | None) -> float | None:
    """A trace's DeepConf confidence (lowest group confidence, default window) from its
    token log-probabilities; ``None`` without them.

    Example:
        >>> from ttscale.types import TokenLogprob
        >>> round(confidence_of([TokenLogprob("a", -0.5)] * 3), 3), confidence_of(None)
        (0.5, None)
    """
    if not logprobs:
        return None
    from ttscale.aggregation.confidence import (
        ConfidenceParams,
        token_confidences,
        trace_confidence,
    )

    return trace_confidence(token_confidences(logprobs), ConfidenceParams())
