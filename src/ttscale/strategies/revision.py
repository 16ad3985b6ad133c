"""Sequential revision (Snell et al. 2024): the model checks and corrects its own attempts.

Round 0 samples ``n`` first attempts (one batched call). Each of ``rounds`` later rounds shows
every chain the question and its last ``window`` attempts (oldest first) and asks for a
checked, corrected solution; all chains of a round are one batched call. Snell et al. found
sequential revision better than parallel sampling on easy questions, parallel search better
on hard ones; ``n`` chains of ``rounds`` revisions mix the two.

The answer: ``last``, the majority over the chains' last revisions (with one chain, its last
revision); or ``majority``, the majority over every attempt of every chain. Every attempt is
a trace of the result, round by round; the tree shows which attempts each one read.
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

ANSWER_RULES = ("last", "majority")


def revise_prompt(question: str, attempts: list[str]) -> Chat:
    """The prompt of a revision: the question, the previous attempt(s), the request.

    Example:
        >>> p = revise_prompt("What is 2+3?", ["2+3 = 6. The answer is \\\\boxed{6}."])
        >>> print(p.messages[1].content.splitlines()[2])
        Your previous attempt:
    """
    shown = "Your previous attempt:" if len(attempts) == 1 else \
        "Your previous attempts, oldest first:"
    return Chat.user(
        f"{question.strip()}\n\n{shown}\n\n{numbered(attempts, 'Attempt')}\n\n"
        "Check the last attempt step by step. If you find a mistake, correct it; if it is "
        "right, confirm it. Then write the complete corrected solution, ending with the "
        "final answer as: The answer is \\boxed{ANSWER}.", system=SYSTEM_PROMPT)


@dataclass(frozen=True)
class RevisionState(State):
    chains: tuple[tuple[int, ...], ...] = ()  # trace indices of each chain, in order
    reads: tuple[tuple[int, ...], ...] = ()  # per trace: the rounds of its chain it read
    prompt_tokens: tuple[int, ...] = ()  # per trace
    round: int = 0


@dataclass(frozen=True, kw_only=True)
class Revision:
    """``n`` chains of a first attempt and ``rounds`` revisions, each revision reading the
    chain's last ``window`` attempts; ``answer`` is ``last`` or ``majority``.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(script=lambda p, _i: "\\\\boxed{5}" if "attempt" in str(p)
        ...                  else "\\\\boxed{6}")
        >>> r = solve("2+3?", backend=fb, strategy="revision", n=1)
        >>> r.answer, [t.answer for t in r.traces], r.usage.calls
        ('5', ['6', '5', '5'], 3)
    """

    n: int = 1
    rounds: int = 2
    window: int = 1
    answer: str = "last"
    name: str = "revision"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be a positive number of chains, got {self.n}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}: with no "
                              "revision, use the majority strategy")
        if self.window < 1:
            raise ConfigError(f"window must show at least 1 previous attempt, got "
                              f"{self.window}")
        if self.answer not in ANSWER_RULES:
            raise ConfigError(f"answer must be one of {', '.join(ANSWER_RULES)}, got "
                              f"{self.answer!r}")

    def context_tokens(self, max_tokens: int) -> int:
        """The longest request: ``window`` shown attempts, the prompt, a new attempt.

        Example:
            >>> Revision(window=2).context_tokens(1024)
            3584
        """
        return (self.window + 1) * max_tokens + PROMPT_ALLOWANCE

    def step(self, state: State, env: Env) -> State:
        st = lift(state, RevisionState)
        if st.round == 0:
            out = generate(env, [solve_prompt(st.question)], env.sampling.with_(n=self.n),
                           partial=True, what=f"first attempts: {self.n}")
            assert out is not None  # partial: some fit, or BudgetExceeded was raised
            gens = out.generations[0]
            return replace(st, traces=tuple(as_trace(g) for g in gens),
                           chains=tuple((i,) for i in range(len(gens))),
                           reads=((),) * len(gens),
                           prompt_tokens=tuple(g.prompt_tokens for g in gens), round=1,
                           budget_limited=len(gens) < self.n)
        shown = [chain[-self.window:] for chain in st.chains]
        prompts = [revise_prompt(st.question, [st.traces[i].text for i in s]) for s in shown]
        params = env.sampling.with_(n=1, seed=env.sampling.seed + st.round * self.n)
        out = generate(env, prompts, params,
                       what=f"revision round {st.round} of {self.rounds}: {len(prompts)} "
                       f"chain{'s' if len(prompts) > 1 else ''}")
        if out is None:
            return replace(st, done=True, budget_limited=True)
        made = [g[0] for g in out.generations]
        first = len(st.traces)
        start = st.round - len(shown[0]) if shown else 0
        return replace(
            st, traces=st.traces + tuple(as_trace(g) for g in made),
            chains=tuple((*c, first + k) for k, c in enumerate(st.chains)),
            reads=st.reads + tuple(tuple(range(start, st.round)) for _ in made),
            prompt_tokens=st.prompt_tokens + tuple(g.prompt_tokens for g in made),
            round=st.round + 1, done=st.round >= self.rounds)

    def finish(self, state: State, env: Env) -> Result:
        st = lift(state, RevisionState)
        members = ([c[-1] for c in st.chains] if self.answer == "last"
                   else list(range(len(st.traces))))
        classes, answer = vote(st.traces, members)
        tree = {"text": st.question, "strategy": self.name, "rounds": self.rounds,
                "window": self.window, "answer_rule": self.answer, "children": [
                    {"chain": k, "answer": st.traces[c[-1]].answer, "children": [
                        trace_node(i, st.traces[i], st.prompt_tokens[i], round=r,
                                   reads=list(st.reads[i]))
                        for r, i in enumerate(c)]}
                    for k, c in enumerate(st.chains)]}
        return replace(result(st, env, self.name, classes, answer), tree=tree)
