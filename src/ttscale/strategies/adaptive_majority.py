"""Adaptive majority: sample a small batch at a time, stop once a stopping rule says the vote
is settled (``ttscale.aggregation.stopping``), at most ``n`` samples.

Each step samples ``batch`` traces in one call through ``strategies.base.sample`` (so the
budget is asked first, and sample ``i`` keeps seed ``seed + i`` whatever the batching), merges
equivalent answers into classes and asks the rule. Easy questions stop after a few samples;
scattered ones use up to ``n``. The answer is the majority of the drawn traces, ties to the
earliest class, as in :mod:`ttscale.strategies.majority`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ttscale.aggregation.stopping import DEFAULT_RULE, StoppingRule, Tally, parse_rule
from ttscale.errors import ConfigError
from ttscale.strategies.base import Env, State, classes_of, pick, result, sample
from ttscale.types import Result, Trace


def tally_of(traces: Sequence[Trace]) -> Tally:
    """The vote of ``traces`` as a :class:`Tally` (classes by math-verify equivalence).

    Example:
        >>> t = [Trace("", "1/2", 4, "stop"), Trace("", None, 9, "stop"),
        ...      Trace("", "0.5", 3, "stop"), Trace("", "2", 1, "stop")]
        >>> tally_of(t)
        Tally(counts=(2, 1), drawn=4, tokens=17)
    """
    class_of = {i: k for k, c in enumerate(classes_of(traces)) for i in c.traces}
    tally = Tally()
    for i, t in enumerate(traces):
        tally = tally.add(class_of.get(i), t.completion_tokens)
    return tally


@dataclass(frozen=True, kw_only=True)
class AdaptiveMajority:
    """Majority vote with adaptive N: ``n`` is the most samples, ``batch`` the samples per
    call, ``rule`` a stopping rule spec (``budgeted``, ``bayes_factor,threshold=10``).

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> r = solve("?", backend=FakeBackend(responses=["\\\\boxed{7}"]),
        ...           strategy="adaptive_majority", n=80)
        >>> r.answer, len(r.traces), r.usage.calls
        ('7', 4, 2)
    """

    n: int = 80
    batch: int = 2
    rule: str = DEFAULT_RULE
    name: str = "adaptive_majority"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch must be a positive number of samples, got {self.batch}")
        self.stopping_rule()  # an unknown rule or option fails here, before any sampling

    def stopping_rule(self) -> StoppingRule:
        return parse_rule(self.rule, n_max=self.n)

    def step(self, state: State, env: Env) -> State:
        state = sample(env, state, min(self.batch, self.n - len(state.traces)))
        if state.done:  # the budget ran out
            return state
        tally = tally_of(state.traces)
        return replace(state, done=tally.drawn >= self.n
                       or self.stopping_rule().should_stop(tally))

    def finish(self, state: State, env: Env) -> Result:
        classes = classes_of(state.traces)
        return result(state, env, self.name, classes, pick(classes, "votes"))
