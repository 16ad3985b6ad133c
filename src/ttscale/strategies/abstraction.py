"""Abstraction first (reasoning abstractions, RLAD 2025), at inference time only.

A proposer writes ``k`` short hints ("abstractions": a key idea, principle or method, not a
solution) for the question, in one batched call of ``k`` samples. The solver then samples
solutions conditioned on each hint, all hints in one batched call, and every solution votes
(majority; ties to the class seen first). The paper also trains proposer and solver with RL;
here both are the same model, prompted.

``n`` solutions are spread over the hints: each gets ``n // k``, and the first ``n % k``
hints one more (a second call of those prompts only, as a call asks the same number of
samples of every prompt). Hints cost ``hint_tokens`` completion tokens at most each; their
tokens are counted like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ttscale.answers import SYSTEM_PROMPT
from ttscale.errors import ConfigError
from ttscale.strategies.base import Env, State, result
from ttscale.strategies.rounds import PROMPT_ALLOWANCE, as_trace, generate, lift, trace_node, vote
from ttscale.types import Chat, Generation, Result

DEFAULT_K = 4
PROPOSER_SYSTEM = ("You are a math teacher. You give short, general hints that help a "
                   "student solve a problem; you never solve it yourself.")


def propose_prompt(question: str) -> Chat:
    """The proposer's prompt: one short abstraction for ``question``, not a solution.

    Example:
        >>> propose_prompt("2+3?").messages[1].content.startswith("Problem:")
        True
    """
    return Chat.user(
        f"Problem:\n{question.strip()}\n\nDo not solve the problem. Write one short hint "
        "for it, in one or two sentences: a key idea, principle or method, stated in "
        "general terms, that would help solve it.", system=PROPOSER_SYSTEM)


def solver_prompt(question: str, hint: str) -> Chat:
    """The solver's prompt: the question and one hint.

    Example:
        >>> solver_prompt("2+3?", "Add.").messages[1].content
        '2+3?\\n\\nA hint that may help:\\nAdd.'
    """
    return Chat.user(f"{question.strip()}\n\nA hint that may help:\n{hint.strip()}",
                     system=SYSTEM_PROMPT)


def spread(n: int, k: int) -> list[int]:
    """Solutions per hint: ``n // k`` each, one more for the first ``n % k`` hints.

    Example:
        >>> spread(10, 4)
        [3, 3, 2, 2]
    """
    return [n // k + (i < n % k) for i in range(k)]


@dataclass(frozen=True)
class AbstractionState(State):
    hints: tuple[str, ...] = ()
    hint_tokens: tuple[tuple[int, int], ...] = ()  # per hint: (prompt, completion) tokens
    of_hint: tuple[int, ...] = ()  # per trace: the hint it was conditioned on
    prompt_tokens: tuple[int, ...] = ()  # per trace


@dataclass(frozen=True, kw_only=True)
class AbstractionFirst:
    """Abstraction first: ``k`` short hints (default ``min(4, n)``) of at most
    ``hint_tokens`` tokens, then ``n`` solutions spread over them, all voting.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(script=lambda p, i: f"Idea {i}." if "Do not solve" in str(p)
        ...                  else "\\\\boxed{5}")
        >>> r = solve("2+3?", backend=fb, strategy="abstraction", n=6)
        >>> r.answer, [len(h["children"]) for h in r.tree["children"]], r.usage.calls
        ('5', [2, 2, 1, 1], 7)
    """

    n: int = 8
    k: int | None = None
    hint_tokens: int = 96
    name: str = "abstraction"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be a positive number of solutions, got {self.n}")
        if self.k is not None and not 1 <= self.k <= self.n:
            raise ConfigError(f"k must be between 1 and n={self.n}, got {self.k}: every "
                              "hint needs at least one solution")
        if self.hint_tokens < 1:
            raise ConfigError(f"hint_tokens must be positive, got {self.hint_tokens}")

    @property
    def hints(self) -> int:
        """How many hints are proposed."""
        return self.k if self.k is not None else min(DEFAULT_K, self.n)

    def context_tokens(self, max_tokens: int) -> int:
        """The longest request: a solver prompt with its hint, and a solution.

        Example:
            >>> AbstractionFirst().context_tokens(1024)
            1632
        """
        return self.hint_tokens + max_tokens + PROMPT_ALLOWANCE

    def step(self, state: State, env: Env) -> State:
        st = lift(state, AbstractionState)
        if not st.hints:
            params = env.sampling.with_(n=self.hints, max_tokens=self.hint_tokens)
            out = generate(env, [propose_prompt(st.question)], params, partial=True,
                           what=f"proposing {self.hints} hint{'s' if self.hints > 1 else ''}")
            assert out is not None  # partial: some fit, or BudgetExceeded was raised
            gens = out.generations[0]
            return replace(st, hints=tuple(g.text.strip() for g in gens),
                           hint_tokens=tuple((g.prompt_tokens, g.completion_tokens)
                                             for g in gens),
                           budget_limited=len(gens) < self.hints)
        counts = spread(self.n, len(st.hints))
        prompts = [solver_prompt(st.question, h) for h in st.hints]
        made: list[list[Generation]] = [[] for _ in st.hints]
        limited = st.budget_limited
        # Layer 0: n // k of every hint; layer 1: one more of the first n % k hints.
        for first, want in ((0, counts[-1]), (counts[-1], counts[0] - counts[-1])):
            todo = [h for h, c in enumerate(counts) if c > first]
            if want == 0 or not todo:
                continue
            params = env.sampling.with_(n=want, seed=env.sampling.seed + first)
            out = generate(env, [prompts[h] for h in todo], params, partial=True,
                           what=f"solving with {len(todo)} hint{'s' if len(todo) > 1 else ''}")
            got = 0 if out is None else len(out.generations[0])
            limited = limited or got < want
            if out is not None:
                for h, gens in zip(todo, out.generations, strict=True):
                    made[h].extend(gens)
            if got < want:
                break
        traces, of_hint, p_tokens = list(st.traces), [], []
        for h, mine in enumerate(made):
            for g in mine:
                traces.append(as_trace(g))
                of_hint.append(h)
                p_tokens.append(g.prompt_tokens)
        return replace(st, traces=tuple(traces), of_hint=tuple(of_hint),
                       prompt_tokens=tuple(p_tokens), budget_limited=limited, done=True)

    def finish(self, state: State, env: Env) -> Result:
        st = lift(state, AbstractionState)
        classes, answer = vote(st.traces, range(len(st.traces)))
        children = []
        for h, hint in enumerate(st.hints):
            mine = [i for i, of in enumerate(st.of_hint) if of == h]
            _, top = vote(st.traces, mine)
            children.append({"hint": h, "majority": top, "prompt_tokens": st.hint_tokens[h][0],
                             "tokens": st.hint_tokens[h][1], "text": hint, "children": [
                                 trace_node(i, st.traces[i], st.prompt_tokens[i])
                                 for i in mine]})
        tree = {"text": st.question, "strategy": self.name, "n": self.n, "k": len(st.hints),
                "children": children}
        return replace(result(st, env, self.name, classes, answer), tree=tree)
