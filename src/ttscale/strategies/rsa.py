"""Recursive self-aggregation, RSA (Venkatraman et al. 2025).

A population of ``n`` solutions is sampled (one batched call). In each of ``rounds``
aggregation rounds every new member is written by the model from ``k`` members of the
previous population drawn at random, shown under an aggregation prompt that asks it to
compare them and write one improved solution; all ``n`` prompts of a round are one batched
call. The answer is the majority over the last population (ties: the class seen first).

Our reading of the paper, stated: ``rounds`` counts aggregation rounds after the first
population (the paper's T counts that population as step 1), so a run makes
``n * (rounds + 1)`` generations. Parents are drawn without replacement within a member,
from ``numpy.random.default_rng([seed, round])``, so a run is reproducible; within a round
no two members draw the same ordered parents, because the same prompt with the round's one
seed would return the same text twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ttscale.answers import SYSTEM_PROMPT, solve_prompt
from ttscale.errors import ConfigError
from ttscale.strategies.base import Env, State, result
from ttscale.strategies.rounds import (
    PROMPT_ALLOWANCE,
    as_trace,
    generate,
    lift,
    numbered,
    trace_node,
    vote,
)
from ttscale.types import Chat, Result

DEFAULT_K = 4
# Redraws allowed per member before a repeated parent list is accepted (k = n = 1 has only
# one list; otherwise n members always have n distinct lists to choose from).
_REDRAWS = 200


def aggregate_prompt(question: str, candidates: list[str]) -> Chat:
    """The aggregation prompt: the question and ``k`` candidate solutions to combine.

    Example:
        >>> p = aggregate_prompt("2+3?", ["= 5", "= 6"])
        >>> "Solution 2:\\n= 6" in p.messages[1].content
        True
    """
    shown = ("Here is a candidate solution (it may be incorrect)" if len(candidates) == 1
             else "Here are candidate solutions (some may be incorrect)")
    return Chat.user(
        f"{question.strip()}\n\n{shown}:\n\n{numbered(candidates, 'Solution')}\n\n"
        "Check the reasoning of each, keep what is right and fix what is wrong, then write "
        "one complete, correct solution. If none is right, solve the problem yourself. End "
        "with the final answer as: The answer is \\boxed{ANSWER}.", system=SYSTEM_PROMPT)


def draw_parents(n: int, k: int, seed: int, round_: int) -> list[tuple[int, ...]]:
    """For each of ``n`` members, ``k`` distinct members of the previous population, in
    the order shown; no two members get the same ordered list when it can be avoided.

    Example:
        >>> ps = draw_parents(4, 2, seed=0, round_=1)
        >>> len(ps), len(set(ps)), all(len(set(p)) == 2 for p in ps)
        (4, 4, True)
        >>> ps == draw_parents(4, 2, seed=0, round_=1)
        True
    """
    import numpy as np

    rng = np.random.default_rng([seed, round_])
    drawn: list[tuple[int, ...]] = []
    for _ in range(n):
        for _try in range(_REDRAWS):
            parents = tuple(int(i) for i in rng.choice(n, size=k, replace=False))
            if parents not in drawn:
                break
        drawn.append(parents)
    return drawn


@dataclass(frozen=True)
class RSAState(State):
    rounds_: tuple[tuple[int, ...], ...] = ()  # per round, the trace indices of its members
    parents: tuple[tuple[int, ...], ...] = ()  # per trace: positions in the previous round
    prompt_tokens: tuple[int, ...] = ()  # per trace


@dataclass(frozen=True, kw_only=True)
class RSA:
    """Recursive self-aggregation: each of ``rounds`` rounds rewrites every member of a
    population of ``n`` from ``k`` random members of the last one (default ``min(4, n)``);
    the last population votes.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(script=lambda p, i: "\\\\boxed{7}" if "Solution 1" in str(p)
        ...                  else f"\\\\boxed{{{i}}}")
        >>> r = solve("?", backend=fb, strategy="rsa", n=4, seed=1)
        >>> r.answer, len(r.traces), r.usage.calls
        ('7', 16, 13)
    """

    n: int = 8
    k: int | None = None
    rounds: int = 3
    name: str = "rsa"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be a positive population size, got {self.n}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}: with no "
                              "aggregation round, use the majority strategy")
        if self.k is not None and not 1 <= self.k <= self.n:
            raise ConfigError(f"k must be between 1 and the population n={self.n}, got "
                              f"{self.k}: each member reads k distinct members of the "
                              "previous population")

    @property
    def aggregated(self) -> int:
        """The members each new member reads."""
        return self.k if self.k is not None else min(DEFAULT_K, self.n)

    def context_tokens(self, max_tokens: int) -> int:
        """The longest request: ``k`` shown solutions, the prompt, a new solution.

        Example:
            >>> RSA(n=8).context_tokens(1024)
            5632
        """
        return (self.aggregated + 1) * max_tokens + PROMPT_ALLOWANCE

    def step(self, state: State, env: Env) -> State:
        st = lift(state, RSAState)
        if not st.rounds_:
            out = generate(env, [solve_prompt(st.question)], env.sampling.with_(n=self.n),
                           partial=True, what=f"population: sampling {self.n}")
            assert out is not None  # partial: some fit, or BudgetExceeded was raised
            gens = out.generations[0]
            # A smaller first population than asked changes the method: vote on it.
            return replace(st, traces=tuple(as_trace(g) for g in gens),
                           rounds_=(tuple(range(len(gens))),), parents=((),) * len(gens),
                           prompt_tokens=tuple(g.prompt_tokens for g in gens),
                           budget_limited=len(gens) < self.n, done=len(gens) < self.n)
        t = len(st.rounds_)
        previous = st.rounds_[-1]
        draws = draw_parents(self.n, self.aggregated, env.sampling.seed, t)
        prompts = [aggregate_prompt(st.question, [st.traces[previous[j]].text for j in d])
                   for d in draws]
        params = env.sampling.with_(n=1, seed=env.sampling.seed + t * self.n)
        out = generate(env, prompts, params,
                       what=f"aggregation round {t} of {self.rounds}: {self.n} members")
        if out is None:
            return replace(st, done=True, budget_limited=True)
        made = [g[0] for g in out.generations]
        first = len(st.traces)
        return replace(st, traces=st.traces + tuple(as_trace(g) for g in made),
                       rounds_=(*st.rounds_, tuple(range(first, first + len(made)))),
                       parents=st.parents + tuple(draws),
                       prompt_tokens=st.prompt_tokens + tuple(g.prompt_tokens for g in made),
                       done=t >= self.rounds)

    def finish(self, state: State, env: Env) -> Result:
        st = lift(state, RSAState)
        last = list(st.rounds_[-1]) if st.rounds_ else []
        classes, answer = vote(st.traces, last)
        rounds = []
        for t, members in enumerate(st.rounds_):
            top_classes, top = vote(st.traces, members)
            votes = max((c.votes for c in top_classes), default=0)
            rounds.append({"text": "population" if t == 0 else f"aggregation round {t}",
                           "round": t, "majority": top, "votes": votes, "children": [
                               trace_node(i, st.traces[i], st.prompt_tokens[i], member=m,
                                          parents=list(st.parents[i]))
                               for m, i in enumerate(members)]})
        tree = {"text": st.question, "strategy": self.name, "n": self.n,
                "k": self.aggregated, "rounds": self.rounds, "children": rounds}
        return replace(result(st, env, self.name, classes, answer), tree=tree)
