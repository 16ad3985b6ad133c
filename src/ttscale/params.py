"""Validated parameter objects: invalid values fail at construction, with the fix."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

from ttscale.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: one value object shared by every backend.

    Sample ``i`` of a request uses seed ``seed + i``, so a sample is reproducible on its own.

    Example:
        >>> SamplingParams(n=4, temperature=0.7).n
        4
        >>> SamplingParams(temperature=-1)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: temperature must be >= 0, got -1
    """

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "max_tokens", "seed", "top_logprobs"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        if self.n <= 0:
            raise ConfigError(f"n must be a positive number of samples, got {self.n}")
        if not math.isfinite(self.temperature):  # NaN passes every comparison below
            raise ConfigError(f"temperature must be a finite number, got {self.temperature:g}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature:g}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p:g}")
        if self.max_tokens <= 0:
            raise ConfigError(f"max_tokens must be positive, got {self.max_tokens}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"stop strings must be non-empty text (an empty one would end "
                              f"every sample at once), got {self.stop!r}")
        if not 0 <= self.top_logprobs <= 20:
            raise ConfigError(f"top_logprobs must be between 0 and 20, got {self.top_logprobs}")

    def with_(self, **changes: object) -> SamplingParams:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]
