"""The one place where compute is charged and limits are enforced."""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

from ttscale.errors import ConfigError
from ttscale.types import Usage


@dataclass(frozen=True)
class Budget:
    """Caps on compute for one question; ``None`` means no cap.

    Example:
        >>> Budget(max_tokens=4000).max_tokens
        4000
    """

    max_tokens: int | None = None
    max_flops: float | None = None
    max_calls: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_flops", "max_calls", "max_seconds"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, numbers.Real)
                                      or isinstance(value, bool) or not float(value) > 0):
                raise ConfigError(f"budget {name} must be a positive number, got {value!r}")


@dataclass
class Accountant:
    """Charges every call's ``Usage`` against a ``Budget``; strategies ask it before calling.

    It is the one mutable object of a solve: strategies keep their own state explicit and
    pass the accountant along.

    Example:
        >>> acc = Accountant(Budget(max_tokens=100))
        >>> acc.affordable_samples(prompt_tokens=20, max_tokens=30, want=4, params_count=0)
        2
        >>> acc.charge(Usage(prompt_tokens=20, completion_tokens=30, calls=1))
        >>> acc.spent.total_tokens
        50
    """

    budget: Budget = field(default_factory=Budget)
    spent: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)

    @property
    def counts_tokens(self) -> bool:
        """Whether a cap depends on token counts (so prompts must be measured first)."""
        return self.budget.max_tokens is not None or self.budget.max_flops is not None

    def charge(self, usage: Usage) -> None:
        self.spent = self.spent + usage

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def affordable_samples(
        self, *, prompt_tokens: int, max_tokens: int, want: int, params_count: int, calls: int = 1
    ) -> int:
        """How many of ``want`` samples fit in what is left, counting each at its worst case.

        A sample's worst case is its prompt plus ``max_tokens`` completion tokens. Seconds
        cannot be predicted, so a seconds cap only refuses calls once it has run out.
        """
        b = self.budget
        if b.max_calls is not None and self.spent.calls + calls > b.max_calls:
            return 0
        if b.max_seconds is not None and self.elapsed >= b.max_seconds:
            return 0
        per_sample = prompt_tokens + max_tokens
        fits = want
        if b.max_tokens is not None:
            fits = min(fits, (b.max_tokens - self.spent.total_tokens) // per_sample)
        if b.max_flops is not None and params_count > 0:
            left = b.max_flops - self.spent.flops
            fits = min(fits, math.floor(left / (2.0 * params_count * per_sample)))
        return max(0, fits)
