"""Reasoning-effort modes: how much to spend, named instead of counted.

As in MetaStone-S1, ``low`` / ``medium`` / ``high`` are best-of-k with the SPRM verifier at
k = 2 / 8 / 32, for a model that has an SPRM head shipped with ttscale (found by the model's
SHA-256). A model without one gets majority voting at the same k, and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError

EFFORT_SAMPLES = {"low": 2, "medium": 8, "high": 32}


@dataclass(frozen=True)
class EffortPlan:
    """What an effort level resolves to for one model; ``note`` explains a fallback."""

    effort: str
    strategy: str
    n: int
    verifier: str | None = None
    note: str | None = None


def check_effort(effort: str) -> int:
    """The k of an effort level, or a ``ConfigError`` naming the levels.

    Example:
        >>> check_effort("medium")
        8
    """
    if effort not in EFFORT_SAMPLES:
        raise ConfigError(f"unknown effort {effort!r}: choose one of "
                          f"{', '.join(EFFORT_SAMPLES)}")
    return EFFORT_SAMPLES[effort]


def plan_effort(effort: str, *, model: str, sha256: str | None,
                heads_dir: Path | None = None) -> EffortPlan:
    """The strategy, samples and verifier of ``effort`` for the model with ``sha256``.

    Example:
        >>> p = plan_effort("high", model="fake", sha256=None)
        >>> p.strategy, p.n, p.verifier
        ('majority', 32, None)
        >>> p.note
        'no SPRM head ships for fake, so effort high is majority voting over 32 samples'
    """
    from ttscale.verifiers.sprm.head import shipped_head

    k = check_effort(effort)
    head = shipped_head(sha256, heads_dir)
    if head is not None:
        return EffortPlan(effort, "best_of_n", k, f"sprm:{head}")
    return EffortPlan(effort, "majority", k, None,
                      f"no SPRM head ships for {model}, so effort {effort} is majority voting "
                      f"over {k} samples")


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
