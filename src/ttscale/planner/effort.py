"""Reasoning-effort modes: how much to spend, named instead of counted.

``low`` / ``medium`` / ``high`` are three budgets of the model's fitted plan, run by the
``auto`` strategy (:mod:`ttscale.planner.auto`): by default the mean cost per question of
majority voting over 2, 8 and the most samples the plan was fitted with, spent where the
plan predicts it pays. A model without a shipped plan (found by the model's SHA-256, as SPRM
heads are) falls back to adaptive majority over at most 2 / 8 / 32 samples, and the result's
notes say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError

EFFORT_SAMPLES = {"low": 2, "medium": 8, "high": 32}


def check_effort(effort: str) -> int:
    """The fallback's most samples for an effort level, or a ``ConfigError`` naming the
    levels.

    Example:
        >>> check_effort("medium")
        8
    """
    if effort not in EFFORT_SAMPLES:
        raise ConfigError(f"unknown effort {effort!r}: choose one of "
                          f"{', '.join(EFFORT_SAMPLES)}")
    return EFFORT_SAMPLES[effort]


def effort_strategy(effort: str, n_max: int | None = None) -> str:
    """The strategy spec an effort level runs.

    Example:
        >>> effort_strategy("low"), effort_strategy("high", 16)
        ('auto:effort=low', 'auto:effort=high,n_max=16')
    """
    check_effort(effort)
    return f"auto:effort={effort}" + (f",n_max={n_max}" if n_max is not None else "")


def describe_efforts(sha256: str | None, model: str) -> str:
    """One line saying what low / medium / high do for this model.

    Example:
        >>> describe_efforts(None, "fake")
        'effort low/medium/high: adaptive majority over at most 2/8/32 samples (no plan \
ships for fake)'
    """
    from ttscale.planner.plan import load_plan, shipped_plan

    path = shipped_plan(sha256)
    if path is None:
        return (f"effort low/medium/high: adaptive majority over at most 2/8/32 samples (no "
                f"plan ships for {model})")
    plan = load_plan(path)
    points = [plan.select(plan.effort_budget(e), plan.currency) for e in EFFORT_SAMPLES]
    shown = "/".join(f"{p.tokens:,.0f}" for p in points)
    verifier = plan.verifier or "no verifier"
    return (f"effort low/medium/high: the shipped plan for {model} ({verifier}), about "
            f"{shown} tokens a question on average")


def backend_sha256(backend: Any) -> str | None:
    """The SHA-256 of a backend's model weights where it has a local file, else ``None``.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> backend_sha256(FakeBackend()) is None
        True
    """
    sha = getattr(backend, "sha256", None)
    if sha:
        return str(sha)
    path = getattr(backend, "model_path", None)
    if path is None:
        return None
    from ttscale import models

    return models.sha256_of(Path(path))
