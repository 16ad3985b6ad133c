"""Step-level beam search guided by a verifier (Snell et al. 2024; HF search-and-learn).

``n`` partial answers are open at once, beam width ``m``. Round 1 samples ``n`` first steps
from the question; every later round, each surviving prefix is continued ``m`` times by one
more step (generation stops at the step delimiter, one batched call for all of them), the
verifier scores every new step in one call, answers that ended leave the beam, and the
``n / m`` best open prefixes survive (ranked by the verifier's reduction of their step
scores; identical prefixes count once). The search stops after ``max_steps`` rounds (the
last round writes each answer to its end), when ``n`` answers have ended, or when no
prefix is left. The answer: the finished answers voted by ``aggregate`` (``weighted``:
summed scores per answer class, as weighted best-of-N; ``best``; ``majority``).

Unlike HF's implementation, which duplicates survivors until ``n`` prefixes are open again,
a round here expands each survivor exactly ``m`` times, as the method is usually described;
the two agree while no answer has ended.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import cast

from ttscale.errors import ConfigError
from ttscale.strategies.base import Env, State
from ttscale.strategies.stepwise import (
    SearchState,
    check_aggregate,
    expand,
    finish_search,
    score,
    verification_reserve,
)
from ttscale.types import Result
from ttscale.verifiers.steps import DEFAULT_DELIMITER, check_delimiter


def check_beam(n: int, width: int, max_steps: int) -> None:
    """A ``ConfigError`` naming the fix for a beam that cannot be searched.

    Example:
        >>> check_beam(8, 3, 5)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: beam width 3 does not divide n 8: use n = a multiple \
of the width (e.g. -n 9) or a width that divides n (e.g. width=2)
    """
    if width < 1:
        raise ConfigError(f"beam width must be at least 1, got {width}: e.g. width=2")
    if width > n:
        raise ConfigError(f"beam width {width} is larger than n {n}: lower the width or raise "
                          f"n to at least {width}")
    if n % width:
        divisor = max(d for d in range(1, width + 1) if n % d == 0)
        raise ConfigError(f"beam width {width} does not divide n {n}: use n = a multiple of "
                          f"the width (e.g. -n {n + width - n % width}) or a width that "
                          f"divides n (e.g. width={divisor})")
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}: a search needs one "
                          "step to write an answer")


def search_round(env: Env, state: SearchState, *, n: int, width: int, groups: int,
                 max_steps: int, delimiter: str) -> SearchState:
    """One round of ``groups`` independent beams of ``n / groups`` answers each, all
    expanded in one batched call and scored in one verifier call.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> from ttscale.params import SamplingParams
        >>> from ttscale.verifiers.self_judge import SelfJudge
        >>> fb = FakeBackend(["First, 2+2.\\n\\nSo \\\\boxed{4}"], yes_logprob=-0.2)
        >>> env = Env(fb, Accountant(), SamplingParams(), verifier=SelfJudge(fb))
        >>> s = search_round(env, SearchState("2+2?"), n=4, width=2, groups=1, max_steps=3,
        ...                  delimiter="\\n\\n")  # four first steps; the best of them survives
        >>> s.rounds, len(s.nodes), s.frontier, [node.pruned for node in s.nodes]
        (1, 4, (0,), [False, True, True, True])
    """
    per = n // groups  # answers per independent beam
    keep = per // width  # survivors per beam per round
    last = state.rounds + 1 >= max_steps
    reserve = verification_reserve(env, state.question)
    if state.rounds == 0:  # one prompt, n samples: the first steps of every beam
        state, new = expand(env, state, [None], n, delimiter=None if last else delimiter,
                            reserve=reserve, groups=[i // per for i in range(n)])
    else:
        state, new = expand(env, state, list(state.frontier), width,
                            delimiter=None if last else delimiter, reserve=reserve)
    if not new:
        return replace(state, done=True)
    state = score(env, state, new)
    nodes = list(state.nodes)
    ended = Counter(node.group for node in nodes if node.finished)
    frontier: list[int] = []
    for group in sorted({nodes[i].group for i in new}):
        open_ = [i for i in new if nodes[i].group == group and not nodes[i].finished]
        ranked = sorted(open_, key=lambda i: _value(nodes[i].value), reverse=True)
        survivors: list[int] = []
        seen: set[str] = set()
        for i in ranked:
            if len(survivors) == keep or ended[group] >= per:
                break
            if nodes[i].prefix not in seen:  # the same prefix twice is one branch
                seen.add(nodes[i].prefix)
                survivors.append(i)
        for i in open_:
            if i not in survivors:
                nodes[i] = replace(nodes[i], pruned=True)
        frontier.extend(survivors)
    return replace(state, nodes=tuple(nodes), frontier=tuple(frontier),
                   rounds=state.rounds + 1,
                   done=last or not frontier or state.budget_limited)


def _value(v: float | None) -> float:
    return float("-inf") if v is None else v


@dataclass(frozen=True, kw_only=True)
class BeamSearch:
    """Step-level beam search: ``n`` open prefixes, beam ``width``, at most ``max_steps``
    rounds, steps split at ``delimiter``; ``aggregate`` picks the answer.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["2+2 is 4.\\n\\nSo \\\\boxed{4}."], yes_logprob=-0.1)
        >>> r = solve("2+2?", backend=fb, strategy="beam:width=2", n=4, verifier="self_judge")
        >>> r.answer, r.tree["children"][0]["text"]  # four equal first steps: one branch
        ('4', '2+2 is 4.')
        >>> [len(c["children"]) for c in r.tree["children"]], len(r.traces)
        ([2, 0, 0, 0], 2)
    """

    n: int = 8
    width: int = 2
    max_steps: int = 10
    delimiter: str = DEFAULT_DELIMITER
    aggregate: str = "weighted"
    name: str = "beam"
    needs_verifier: bool = True

    def __post_init__(self) -> None:
        check_beam(self.n, self.width, self.max_steps)
        check_delimiter(self.delimiter)
        check_aggregate(self.aggregate)

    @property
    def groups(self) -> int:
        """Independent beams: one."""
        return 1

    def start(self, question: str) -> SearchState:
        return SearchState(question)

    def step(self, state: State, env: Env) -> State:
        return search_round(env, cast(SearchState, state), n=self.n, width=self.width,
                            groups=self.groups, max_steps=self.max_steps,
                            delimiter=self.delimiter)

    def finish(self, state: State, env: Env) -> Result:
        return finish_search(cast(SearchState, state), env, self.name, self.aggregate,
                             self.delimiter, n=self.n, width=self.width, groups=self.groups,
                             rounds=cast(SearchState, state).rounds)
