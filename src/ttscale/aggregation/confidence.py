"""How confident a model was while writing a trace, from its token log-probabilities:
DeepConf (Fu et al. 2025, "Deep Think with Confidence").

- **Token confidence** at position i: ``C_i = -(1/k) Σ_j log P_i(j)`` over the top-k
  candidates. High when the distribution is peaked: the sampled token takes nearly all the
  mass and the other candidates are very unlikely.
- **Group confidence**: the mean of ``C`` over a sliding window of ``window`` tokens; one group
  ends at every position from the window's end on (a trace shorter than the window is one
  group). The default window is 64 tokens, not the paper's 2048: the paper's traces run to
  tens of thousands of tokens, ours (GSM8K) to a few hundred, and 64 tokens is about one
  reasoning step here: long enough that one hesitant token (the first digit of a number)
  does not sink a group, short enough that a confused step shows before the trace ends.
  ``bench/gsm8k_efficiency.py`` compares windows on a real run.
- **Trace confidence** (``measure``): ``lowest`` (the lowest group, the paper's choice for
  online use), ``tail`` (the mean over the last ``tail`` tokens, where the answer is written),
  ``bottom10`` (the mean of the lowest 10% of groups) or ``mean`` (the mean token confidence,
  the paper's baseline).
- **Offline** (:func:`select`, :func:`weighted_vote`): keep the ``ceil(eta · N)`` most
  confident traces (eta = 0.1 and 0.9 in the paper: DeepConf-low and -high) and weight each
  kept vote by its confidence.
- **Online** (:func:`threshold`, :class:`GroupMonitor`, :func:`leader_share`): after
  ``warmup`` complete traces, the threshold is the ``100 · (1 - eta)``-th percentile of their
  lowest-group confidences; every later trace is aborted the moment a full window's
  confidence falls below it (its tokens so far still count; it never votes); sampling stops
  once the leader's confidence-weighted share of the vote reaches ``tau`` or at N.

The online rule always uses the lowest group confidence (an abort is a group falling below
the bar); ``measure`` chooses the weights and the offline filter. Where the paper is silent
on short traces we say so above; the rest follows its Algorithm 1 and 2.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from ttscale.aggregation.settings import key_values
from ttscale.errors import ConfigError
from ttscale.types import TokenLogprob

MEASURES = ("lowest", "tail", "bottom10", "mean")


@dataclass(frozen=True, kw_only=True)
class ConfidenceParams:
    """Every DeepConf setting, validated at construction.

    ``eta``: the share of traces kept offline and the online percentile (0.1: keep the top
    10%, the threshold at the 90th percentile of the warm-up). ``warmup``: complete traces
    before the online threshold is set; ``batch``: traces streamed at once online (the stop
    rule is asked between batches); ``tau``: the vote share that ends online sampling.

    Example:
        >>> ConfidenceParams(eta=0.1).window
        64
        >>> ConfidenceParams(eta=1.5)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: eta must be in (0, 1] (the share of traces kept), got 1.5
    """

    top_k: int = 5
    window: int = 64
    measure: str = "lowest"
    tail: int = 64
    eta: float = 0.9
    warmup: int = 4
    batch: int = 4
    tau: float = 0.95

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 20:
            raise ConfigError(f"top_k must be between 1 and 20 candidates, got {self.top_k}")
        if self.window < 1 or self.tail < 1:
            raise ConfigError(f"window and tail must be positive numbers of tokens, got "
                              f"{min(self.window, self.tail)}")
        if self.measure not in MEASURES:
            raise ConfigError(f"unknown confidence measure {self.measure!r}: choose one of "
                              f"{', '.join(MEASURES)}")
        if not 0 < self.eta <= 1:
            raise ConfigError(f"eta must be in (0, 1] (the share of traces kept), got "
                              f"{self.eta:g}")
        if self.warmup < 1 or self.batch < 1:
            raise ConfigError(f"warmup and batch must be positive numbers of traces, got "
                              f"{min(self.warmup, self.batch)}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"tau must be in (0, 1] (a vote share), got {self.tau:g}")

    def label(self) -> str:
        """The settings that differ from the defaults, for tables.

        Example:
            >>> ConfidenceParams(eta=0.1, window=32).label()
            'window=32,eta=0.1'
        """
        default = ConfidenceParams()
        return ",".join(f"{f.name}={getattr(self, f.name):g}"
                        if not isinstance(getattr(self, f.name), str)
                        else f"{f.name}={getattr(self, f.name)}"
                        for f in fields(self) if getattr(self, f.name) != getattr(default,
                                                                                   f.name))


def parse_confidence(spec: str) -> ConfidenceParams:
    """Settings from ``KEY=VALUE,...`` (empty: the defaults).

    Example:
        >>> parse_confidence("eta=0.1, window=32, measure=tail").measure
        'tail'
        >>> parse_confidence("speed=2")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: DeepConf has no option 'speed': choose from top_k, \
window, measure, tail, eta, warmup, batch, tau
    """
    options = key_values(spec.split(","), fields(ConfidenceParams), "DeepConf", "eta=0.1")
    return ConfidenceParams(**options)


def token_confidences(tokens: Sequence[TokenLogprob], top_k: int = 5) -> np.ndarray:
    """``C_i = -mean(log P)`` over each position's top-``top_k`` candidates (the sampled
    token's own log-probability when none were returned).

    Example:
        >>> t = [TokenLogprob("a", -0.1, (("a", -0.1), ("b", -3.0), ("c", -5.0))),
        ...      TokenLogprob("b", -1.0)]
        >>> [round(float(c), 3) for c in token_confidences(t, top_k=2)]
        [1.55, 1.0]
    """
    out = np.empty(len(tokens))
    for i, t in enumerate(tokens):
        top = [lp for _, lp in t.top[:top_k]] or [t.logprob]
        # -inf (a candidate the model rules out) would make every mean infinite: floor it
        out[i] = -sum(max(lp, -100.0) for lp in top) / len(top)
    return out


def group_confidences(conf: np.ndarray, window: int) -> np.ndarray:
    """Means over every full window of ``window`` tokens (one group if the trace is shorter).

    Example:
        >>> group_confidences(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist()
        [1.5, 2.5, 3.5]
        >>> group_confidences(np.array([1.0, 2.0]), 8).tolist()
        [1.5]
    """
    if len(conf) == 0:
        return np.array([])
    if len(conf) <= window:
        return np.array([float(conf.mean())])
    sums = np.cumsum(np.concatenate([[0.0], conf]))
    return np.asarray((sums[window:] - sums[:-window]) / window)


def trace_confidence(conf: np.ndarray, params: ConfidenceParams,
                     measure: str | None = None) -> float:
    """A trace's confidence from its token confidences (``measure`` defaults to the params').

    Example:
        >>> c = np.array([5.0, 5.0, 1.0, 5.0, 5.0, 2.0])
        >>> p = ConfidenceParams(window=2, tail=2)
        >>> [trace_confidence(c, p, m) for m in MEASURES]
        [3.0, 3.5, 3.0, 3.8333333333333335]
    """
    measure = measure or params.measure
    if len(conf) == 0:
        return 0.0
    if measure == "mean":
        return float(conf.mean())
    if measure == "tail":
        return float(conf[-params.tail:].mean())
    groups = group_confidences(conf, params.window)
    if measure == "lowest":
        return float(groups.min())
    lowest = np.sort(groups)[: max(1, math.ceil(0.1 * len(groups)))]
    return float(lowest.mean())


def abort_after(conf: np.ndarray, window: int, bar: float) -> int | None:
    """How many tokens a trace keeps when it is aborted online: up to the end of its first
    full window whose mean is below ``bar``; None when none is (a trace shorter than the
    window is never aborted: it has no full window). Agrees with :class:`GroupMonitor`.

    Example:
        >>> abort_after(np.array([3.0, 3.0, 1.0, 1.0, 3.0]), 2, 2.5)
        3
        >>> abort_after(np.array([3.0, 1.0]), 4, 2.5) is None
        True
    """
    if len(conf) < window:
        return None
    below = np.flatnonzero(group_confidences(conf, window) < bar)
    return None if len(below) == 0 else int(below[0]) + window


def select(confidences: Sequence[float], eta: float) -> list[bool]:
    """Which traces DeepConf keeps offline: the ``ceil(eta · N)`` most confident (at least
    one; ties to the earlier trace).

    Example:
        >>> select([0.5, 2.0, 1.0, 2.0], 0.5)
        [False, True, False, True]
        >>> select([3.0, 1.0], 0.1)
        [True, False]
    """
    n = len(confidences)
    keep = max(1, math.ceil(eta * n - 1e-9)) if n else 0
    ranked = sorted(range(n), key=lambda i: (-confidences[i], i))[:keep]
    chosen = set(ranked)
    return [i in chosen for i in range(n)]


def weighted_vote(classes: Sequence[int], weights: Sequence[float],
                  keep: Sequence[bool] | None = None) -> tuple[int | None, dict[int, float]]:
    """The class with the largest summed weight among kept traces (class -1: no answer, never
    votes; ties to the class seen first), and the weight of every class.

    Example:
        >>> weighted_vote([0, 1, 1, -1], [3.0, 1.0, 1.5, 9.0])
        (0, {0: 3.0, 1: 2.5})
        >>> weighted_vote([0, 1], [1.0, 1.0], [False, True])[0]
        1
    """
    total: dict[int, float] = {}
    for i, (c, w) in enumerate(zip(classes, weights, strict=True)):
        if c < 0 or (keep is not None and not keep[i]):
            continue
        total[c] = total.get(c, 0.0) + w
    if not total:
        return None, total
    best = max(total.values())
    return next(c for c, w in total.items() if w == best), total


def leader_share(total: dict[int, float]) -> float:
    """The leading class's share of the confidence-weighted vote (0 with no votes).

    Example:
        >>> leader_share({0: 3.0, 1: 1.0}), leader_share({})
        (0.75, 0.0)
    """
    mass = sum(total.values())
    return max(total.values()) / mass if mass > 0 else 0.0


def threshold(warmup_confidences: Sequence[float], eta: float) -> float:
    """The online bar: the ``100 · (1 - eta)``-th percentile of the warm-up traces' lowest
    group confidences (linear interpolation, numpy's default).

    Example:
        >>> threshold([1.0, 2.0, 3.0, 4.0, 5.0], 0.1), threshold([1.0, 2.0, 3.0], 0.9)
        (4.6, 1.2)
    """
    if not warmup_confidences:
        raise ConfigError("the online threshold needs at least one warm-up trace")
    return float(np.percentile(np.asarray(warmup_confidences, dtype=float), 100 * (1 - eta)))


class GroupMonitor:
    """Watches one trace token by token: ``push`` returns True the moment the mean confidence
    of the last ``window`` tokens (a full window) is below ``bar``. The one mutable object of
    the online rule, owned by the trace it watches.

    Example:
        >>> m = GroupMonitor(bar=2.5, window=2, top_k=1)
        >>> [m.push(TokenLogprob("x", lp)) for lp in (-3.0, -3.0, -1.0, -1.0)]
        [False, False, True, True]
    """

    def __init__(self, bar: float, window: int, top_k: int) -> None:
        self.bar = bar
        self.window = window
        self.top_k = top_k
        self._last: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self.confidences: list[float] = []

    def push(self, token: TokenLogprob) -> bool:
        c = float(token_confidences([token], self.top_k)[0])
        self.confidences.append(c)
        if len(self._last) == self.window:
            self._sum -= self._last[0]
        self._last.append(c)
        self._sum += c
        return len(self._last) == self.window and self._sum / self.window < self.bar
