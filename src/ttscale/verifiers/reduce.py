"""Reductions of per-step scores into one trace score."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ttscale.errors import ConfigError


def _geo(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(max(x, 1e-12)) for x in xs) / len(xs))


REDUCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda xs: xs[-1],
    "min": min,
    "prod": math.prod,
    "mean": lambda xs: sum(xs) / len(xs),
    "geometric_mean": _geo,
}


def check_reduction(how: str) -> str:
    """``how`` if it names a reduction, else a ``ConfigError`` listing them (for constructors).

    Example:
        >>> check_reduction("min")
        'min'
    """
    if how not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {how!r}: choose one of {', '.join(REDUCTIONS)}")
    return how


def reduce_scores(steps: Sequence[float], how: str = "last") -> float:
    """One score from step scores.

    Example:
        >>> reduce_scores([0.9, 0.5], "min"), reduce_scores([0.9, 0.5], "prod")
        (0.5, 0.45)
        >>> round(reduce_scores([0.25, 1.0], "geometric_mean"), 3)
        0.5
    """
    check_reduction(how)
    if not steps:
        return 0.5  # nothing to judge: neutral
    return float(REDUCTIONS[how](steps))

