"""Greedy decoding: one sample at temperature 0, the baseline every method must beat."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ttscale.strategies.base import Env, State, classes_of, pick, result, sample
from ttscale.types import Result


@dataclass(frozen=True, kw_only=True)
class Greedy:
    """One temperature-0 sample.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> solve("2+2?", backend=FakeBackend(responses=["\\\\boxed{4}"]), strategy="greedy").answer
        '4'
    """

    name: str = "greedy"
    needs_verifier: bool = False

    def step(self, state: State, env: Env) -> State:
        state = sample(env, state, 1, params=env.sampling.with_(temperature=0.0, n=1))
        return replace(state, done=True)

    def finish(self, state: State, env: Env) -> Result:
        classes = classes_of(state.traces)
        return result(state, env, self.name, classes, pick(classes, "votes"))
