"""What every strategy shares: explicit state, the environment it runs in, and sampling
that asks the accountant before it spends.

A strategy is stateless; the caller holds the state: ``state = strategy.step(state, env)``
until ``state.done``, then ``strategy.finish(state, env)`` builds the ``Result``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ttscale.aggregation.brevity import brevity_weights
from ttscale.answers import extract_answer, group_answers, solve_prompt
from ttscale.backends.base import Backend
from ttscale.backends.streaming import generate_streamed
from ttscale.budget import Accountant
from ttscale.errors import BudgetExceeded
from ttscale.params import SamplingParams
from ttscale.types import AnswerClass, GenerateOutput, Generation, Prompt, Result, Trace
from ttscale.verifiers.base import Verifier

Progress = Callable[[str], None]
TraceText = Callable[[int, str], None]
"""Called with (trace index, a piece of its text) while the trace is generated."""


@dataclass
class Env:
    """The world a strategy acts on: the backend, the accountant, an optional verifier.

    ``on_text`` (optional) sees the text of the traces ``sample`` draws as it is decoded,
    by trace index; a server streams it to its client."""

    backend: Backend
    accountant: Accountant
    sampling: SamplingParams
    verifier: Verifier | None = None
    progress: Progress = field(default=lambda _msg: None)
    on_text: TraceText | None = None
    _prompt_tokens: dict[Prompt, int] = field(default_factory=dict)

    def prompt_tokens(self, prompt: Prompt) -> int:
        if prompt not in self._prompt_tokens:
            self._prompt_tokens[prompt] = self.backend.count_tokens(prompt)
        return self._prompt_tokens[prompt]


@dataclass(frozen=True)
class State:
    question: str
    traces: tuple[Trace, ...] = ()
    done: bool = False
    budget_limited: bool = False
    notes: tuple[str, ...] = ()
    started: float = field(default_factory=time.perf_counter)


class Strategy(Protocol):
    name: str
    needs_verifier: bool

    def step(self, state: State, env: Env) -> State: ...

    def finish(self, state: State, env: Env) -> Result: ...


def to_trace(g: Generation) -> Trace:
    """A generation as a trace: its text, extracted answer, length and finish.

    Example:
        >>> t = to_trace(Generation("6*7 = 42. The answer is 42.", 20, 12, "stop"))
        >>> t.answer, t.completion_tokens, t.finish_reason, t.score
        ('42', 12, 'stop', None)
    """
    return Trace(g.text, extract_answer(g.text), g.completion_tokens, g.finish_reason)


Generate = Callable[[Prompt, SamplingParams], GenerateOutput]


def sample(env: Env, state: State, want: int, *, extra_per_sample: int = 0,
           params: SamplingParams | None = None, prompt: Prompt | None = None,
           generate: Generate | None = None,
           convert: Callable[[Generation], Trace] = to_trace) -> State:
    """Sample up to ``want`` traces in one batched call, as many as the budget allows.

    ``extra_per_sample`` reserves tokens each sample will cost later (e.g. its verification).
    ``generate`` replaces the backend's plain call for one prompt (a streamed, watched one);
    ``convert`` turns each generation into a trace (e.g. scored by its confidence).
    Raises ``BudgetExceeded`` when nothing has been spent yet and not even one sample fits.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant, Budget
        >>> env = Env(FakeBackend(), Accountant(Budget(max_calls=1)), SamplingParams())
        >>> state = sample(env, State("6*7?"), 3)  # three traces in one batched call
        >>> [t.answer for t in state.traces], env.accountant.spent.calls
        (['42', '42', '42'], 1)
    """
    params = params or env.sampling
    prompt = prompt or solve_prompt(state.question)
    # Counting prompt tokens costs a tokenizer round trip: only pay it when a cap needs it.
    p_tokens = env.prompt_tokens(prompt) if env.accountant.counts_tokens else 0
    k = env.accountant.affordable_samples(
        prompt_tokens=p_tokens, max_tokens=params.max_tokens + extra_per_sample,
        want=want, params_count=env.backend.params_count)
    if k <= 0:
        if not state.traces and env.accountant.spent.calls == 0:
            raise BudgetExceeded(
                f"the budget cannot pay for one sample (prompt {p_tokens} + up to "
                f"{params.max_tokens + extra_per_sample} tokens): raise the budget or lower "
                "max_tokens")
        return replace(state, done=True, budget_limited=True)
    env.progress(f"sampling {k} trace{'s' if k > 1 else ''}")
    asked = params.with_(n=k, seed=params.seed + len(state.traces))
    if generate is not None:
        out = generate(prompt, asked)
    elif env.on_text is not None:
        shown, first = env.on_text, len(state.traces)
        out = generate_streamed(env.backend, prompt, asked,
                                lambda i, piece: shown(first + i, piece))
    else:
        out = env.backend.generate([prompt], asked)
    env.accountant.charge(out.usage)
    new = tuple(convert(g) for g in out.generations[0])
    return replace(state, traces=state.traces + new, budget_limited=k < want)


def verify(env: Env, state: State) -> State:
    """Score every unscored trace with the environment's verifier.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> from ttscale.verifiers.self_judge import SelfJudge
        >>> judged = FakeBackend(yes_logprob=-0.1)
        >>> env = Env(judged, Accountant(), SamplingParams(), verifier=SelfJudge(judged))
        >>> [round(t.score, 3) for t in verify(env, sample(env, State("6*7?"), 2)).traces]
        [0.905, 0.905]
    """
    if env.verifier is None:
        return state
    todo = [i for i, t in enumerate(state.traces) if t.score is None]
    if not todo:
        return state
    env.progress(f"verifying {len(todo)} traces")
    out = env.verifier.score(state.question, [state.traces[i].text for i in todo])
    env.accountant.charge(out.usage)
    traces = list(state.traces)
    for i, steps in zip(todo, out.step_scores, strict=True):
        traces[i] = replace(traces[i], step_scores=tuple(steps),
                            score=env.verifier.reduce(steps))
    return replace(state, traces=tuple(traces), notes=state.notes + tuple(out.notes))


def classes_of(traces: Sequence[Trace], weight: str = "count") -> list[AnswerClass]:
    """Merge equivalent answers. ``weight``: ``count`` (no score), ``sum`` or ``max`` of
    the trace scores, or ``brevity`` (the summed brevity weights of the class's traces,
    :mod:`ttscale.aggregation.brevity`). Classes keep the order of their first trace.

    Example:
        >>> ts = [Trace("a", "4", 5, "stop", score=0.9), Trace("b", "5", 5, "stop", score=0.8),
        ...       Trace("c", "4.0", 5, "stop", score=0.3)]
        >>> [(c.answer, c.votes, c.score, c.traces) for c in classes_of(ts, "max")]
        [('4', 2, 0.9, (0, 2)), ('5', 1, 0.8, (1,))]
        >>> [round(c.score or 0, 3) for c in classes_of(ts, "brevity")]
        [0.736, 0.368]
    """
    groups = group_answers([t.answer for t in traces])
    brevity = brevity_weights([t.completion_tokens for t in traces]) \
        if weight == "brevity" else ()
    out = []
    for idx in groups:
        scores = [s for i in idx if (s := traces[i].score) is not None]
        score: float | None = None
        if weight == "brevity":
            score = float(sum(brevity[i] for i in idx))
        elif weight == "sum" and scores:
            score = float(sum(scores))
        elif weight == "max" and scores:
            score = float(max(scores))
        rep = traces[idx[0]].answer
        assert rep is not None  # grouped answers are never None
        out.append(AnswerClass(rep, len(idx), score, tuple(idx)))
    return out


def pick(classes: Sequence[AnswerClass], by: str) -> str | None:
    """The winning class by ``votes`` or ``score``; ties go to the earliest class.

    Example:
        >>> cs = [AnswerClass("4", 2, 0.9, (0, 2)), AnswerClass("5", 1, 1.5, (1,))]
        >>> pick(cs, "votes"), pick(cs, "score"), pick([], "votes")
        ('4', '5', None)
    """
    if not classes:
        return None
    if by == "votes":
        return max(classes, key=lambda c: c.votes).answer  # max keeps the first of equals
    return max(classes, key=lambda c: c.score if c.score is not None else float("-inf")).answer


def result(state: State, env: Env, name: str, classes: Sequence[AnswerClass],
           answer: str | None, tree: Any = None) -> Result:
    """The ``Result`` of a finished state: its answer, classes, traces and what it spent.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> env = Env(FakeBackend(), Accountant(), SamplingParams())
        >>> state = sample(env, State("6*7?"), 2)
        >>> r = result(state, env, "majority", classes_of(state.traces), "42")
        >>> r.strategy, r.answer, len(r.traces), r.usage.calls
        ('majority', '42', 2, 1)
    """
    return Result(
        question=state.question,
        answer=answer,
        strategy=name,
        classes=tuple(classes),
        traces=state.traces,
        usage=env.accountant.spent,
        seconds=time.perf_counter() - state.started,
        budget_limited=state.budget_limited,
        notes=state.notes,
        tree=tree,
    )


def run(strategy: Strategy, question: str, env: Env) -> Result:
    """Step a strategy to the end and build its result. A strategy that keeps more state
    than ``State`` (a search tree) makes its first state with ``start(question)``.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> from ttscale.strategies.spec import make_strategy
        >>> env = Env(FakeBackend(), Accountant(), SamplingParams())
        >>> r = run(make_strategy("majority", 3), "6*7?", env)
        >>> r.answer, r.classes[0].votes, r.usage.calls
        ('42', 3, 1)
    """
    start = getattr(strategy, "start", None)
    state: State = start(question) if callable(start) else State(question)
    while not state.done:
        state = strategy.step(state, env)
    return strategy.finish(state, env)
