"""DeepConf (offline and online) and DeepPrune replayed on a run's stored tokens: the
strategies of ``replay`` that spend less, one curve point per settings and n.

Example:
    >>> efficiency_points([], ["majority"], [4], [], [], orders=1, seed=0)
    []
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttscale.aggregation.confidence import ConfidenceParams
from ttscale.aggregation.pruning import PruneParams
from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.runs.records import QuestionRecord

CONFIDENCE = ("deepconf", "deepconf_online")  # replayed per --confidence spec
PRUNE = "deepprune"  # replayed per --prune spec
DEFAULT_CONFIDENCE = ("eta=0.1", "eta=0.9")  # DeepConf-low and -high, as in the paper


def efficiency_points(records: Sequence[QuestionRecord], names: Sequence[str],
                      ns: Sequence[int], conf_params: Sequence[ConfidenceParams],
                      prune_params: Sequence[PruneParams], *, orders: int,
                      seed: int) -> list[CurvePoint]:
    """Curve points of DeepConf (offline, online) and DeepPrune replayed on stored tokens.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> from ttscale.types import TokenLogprob
        >>> lps = (TokenLogprob("4", -0.1, (("4", -0.1), ("5", -2.3))),)
        >>> drawn = tuple(TraceRecord(0, i, "4", "4", 10, 1, logprobs=lps) for i in range(2))
        >>> points = efficiency_points([QuestionRecord("q", "2+2?", "4", drawn)], ["deepconf"], [2],
        ...                            [ConfidenceParams()], [PruneParams()], orders=4, seed=0)
        >>> [(p.strategy, p.n, p.accuracy) for p in points]
        [('deepconf', 2, 1.0), ('deepprune[jaccard,prefix=64]', 2, 1.0)]
    """
    from ttscale.evaluation.replay.confidence import prepare_confidence, replay_confidence
    from ttscale.evaluation.replay.prune import prepare_prune, replay_prune

    points: list[CurvePoint] = []
    prepared: dict[int, Any] = {}  # by top_k: token confidences are computed once
    for params in conf_params:
        if params.top_k not in prepared:
            prepared[params.top_k] = prepare_confidence(records, params.top_k)
        for name in (x for x in CONFIDENCE if x in names):
            mode = "offline" if name == "deepconf" else "online"
            points += [replay_confidence(prepared[params.top_k], params, k, mode=mode,
                                         orders=orders, seed=seed)[0] for k in ns]
    for p in prune_params:
        questions = prepare_prune(records, p)
        points += [replay_prune(questions, p, k, orders=orders, seed=seed)[0] for k in ns]
    return points
