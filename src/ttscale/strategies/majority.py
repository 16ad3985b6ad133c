"""Majority voting / self-consistency (Wang et al. 2022).

N samples are requested in one batched call; equivalent answers (math-verify) are merged
into classes and the largest class wins. Ties go to the class whose first trace came first.
``vote=brevity`` weighs each sample by its length instead
(:mod:`ttscale.aggregation.brevity`): ties and near-ties go to the shorter traces, which
reasoning models reward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ttscale.errors import ConfigError
from ttscale.strategies.base import Env, State, classes_of, pick, result, sample
from ttscale.types import Result

VOTES = ("count", "brevity")


@dataclass(frozen=True, kw_only=True)
class Majority:
    """Self-consistency: ``n`` samples in one call, equivalent answers merged, the largest
    class wins.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["\\\\boxed{0.5}", "\\\\boxed{3}", "\\\\boxed{1/2}"])
        >>> r = solve("?", backend=fb, strategy="majority", n=3)
        >>> r.answer, [c.votes for c in r.classes]
        ('0.5', [2, 1])
    """

    n: int = 8
    vote: str = "count"
    name: str = "majority"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.vote not in VOTES:
            raise ConfigError(f"vote must be one of {', '.join(VOTES)} (count: one vote a "
                              f"sample; brevity: shorter samples weigh more), got "
                              f"{self.vote!r}")

    def step(self, state: State, env: Env) -> State:
        state = sample(env, state, self.n - len(state.traces))
        return replace(state, done=True)

    def finish(self, state: State, env: Env) -> Result:
        classes = classes_of(state.traces, self.vote)
        by = "votes" if self.vote == "count" else "score"
        return result(state, env, self.name, classes, pick(classes, by))
