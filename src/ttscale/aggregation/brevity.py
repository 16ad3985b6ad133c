"""A vote that weighs shorter samples more: reasoning models that are right tend to say so
in fewer tokens than when they are wrong (Hassid et al. 2025, "Don't overthink it"), so
among equally many votes the class of the shorter traces is the better bet.

Each sample's weight is ``exp(-length / m)``, ``m`` the median length of the samples drawn
(the upper one for an even count), so the weights do not depend on the question's scale: a
sample of median length weighs ``1/e``, one half as long 1.65 times that. Ties in votes go
to the shorter class, and a class of short samples can outvote a slightly larger one of
long samples. The planner answers by it only where its calibration questions show it beats
the plain majority.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def brevity_weights(lengths: Sequence[int]) -> tuple[float, ...]:
    """Each sample's vote weight from its completion length.

    Example:
        >>> [round(w, 3) for w in brevity_weights([100, 200, 300])]
        [0.607, 0.368, 0.223]
        >>> brevity_weights([]), brevity_weights([0, 0])
        ((), (1.0, 1.0))
    """
    if not lengths:
        return ()
    median = sorted(lengths)[len(lengths) // 2]
    if median <= 0:
        return tuple(1.0 for _ in lengths)
    return tuple(math.exp(-n / median) for n in lengths)


def brevity_winner(classes: Sequence[int], lengths: Sequence[int]) -> int | None:
    """The class id (``-1``: no answer, never chosen) with the largest summed brevity
    weight; ties go to the class drawn first. ``None`` when no sample answered.

    Example:
        >>> brevity_winner([0, 1], [300, 100])      # one vote each: the shorter sample
        1
        >>> brevity_winner([0, 0, 1], [300, 300, 100])   # two long votes outweigh one short
        0
        >>> brevity_winner([-1, -1], [5, 5]) is None
        True
    """
    return weighted_winner(classes, brevity_weights(lengths))


def weighted_winner(classes: Sequence[int], weights: Sequence[float]) -> int | None:
    """The class id (``-1``: no answer, never chosen) with the largest summed weight; ties
    go to the class drawn first. ``None`` when no sample answered.

    Example:
        >>> weighted_winner([0, 1, 1, -1], [0.9, 0.5, 0.3, 5.0])
        0
        >>> weighted_winner([2, 0], [1.0, 1.0])   # a tie: the first drawn
        2
    """
    total: dict[int, float] = {}
    for c, w in zip(classes, weights, strict=True):
        if c >= 0:
            total[c] = total.get(c, 0.0) + w
    if not total:
        return None
    best = max(total.values())
    return next(c for c, w in total.items() if w == best)
