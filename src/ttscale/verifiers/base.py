"""The verifier protocol: step scores for each trace, plus the ``Usage`` they cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ttscale.types import Usage


@dataclass(frozen=True)
class VerifierOutput:
    """Per trace, its step scores in (0, 1); the call's usage; remarks for the result;
    and, where the verifier can tell, each trace's own share of the usage (``per_trace``)."""

    step_scores: tuple[tuple[float, ...], ...]
    usage: Usage
    notes: tuple[str, ...] = ()
    per_trace: tuple[Usage, ...] = ()


@runtime_checkable
class Verifier(Protocol):
    """Scores solutions of a question. An outcome verifier returns one step per trace."""

    name: str

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput: ...

    def reduce(self, steps: Sequence[float]) -> float: ...

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        """Worst-case tokens verifying one trace of up to ``trace_max_tokens`` costs."""
        ...
