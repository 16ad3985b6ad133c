"""Best-of-N and weighted Best-of-N over any verifier.

Best-of-N returns the answer of the single best-scored trace. Weighted Best-of-N sums the
scores of each answer class and returns the class with the largest sum (HF 2024), which is
usually better because it also rewards agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ttscale.answers import solve_prompt
from ttscale.errors import ConfigError
from ttscale.strategies.base import Env, State, classes_of, pick, result, sample, verify
from ttscale.types import Result

CLASS_WEIGHTS = ("max", "sum")  # how an answer class scores: its best trace, or their sum


@dataclass(frozen=True, kw_only=True)
class BestOfN:
    """Sample ``n`` traces, score them, keep the best one.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["\\\\boxed{3}", "\\\\boxed{4}"], yes_logprob=-0.1)
        >>> solve("?", backend=fb, strategy="best_of_n", n=2, verifier="self_judge").answer
        '3'
    """

    n: int = 8
    name: str = "best_of_n"
    needs_verifier: bool = True
    class_weight: str = "max"

    def __post_init__(self) -> None:
        if self.class_weight not in CLASS_WEIGHTS:
            raise ConfigError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)} (an "
                              f"answer's score: its best trace's, or their sum), got "
                              f"{self.class_weight!r}")

    def step(self, state: State, env: Env) -> State:
        reserve = 0
        if env.verifier is not None and env.accountant.counts_tokens:
            # each sample must also pay for its verification
            question_tokens = env.prompt_tokens(solve_prompt(state.question))
            reserve = env.verifier.reserve_tokens(env.sampling.max_tokens) + question_tokens
        state = sample(env, state, self.n - len(state.traces), extra_per_sample=reserve)
        return replace(verify(env, state), done=True)

    def finish(self, state: State, env: Env) -> Result:
        classes = classes_of(state.traces, weight=self.class_weight)
        return result(state, env, self.name, classes, pick(classes, "score"))


@dataclass(frozen=True, kw_only=True)
class WeightedBestOfN(BestOfN):
    """Best-of-N where each answer class scores the sum of its traces' scores."""

    name: str = "weighted_best_of_n"
    class_weight: str = "sum"
