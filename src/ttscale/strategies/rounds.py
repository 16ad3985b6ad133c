"""What the sequential strategies share (budget forcing, revision, RSA, abstraction-first):
a round of many prompts bought from the accountant as one batched call, traces made from
generations, votes over a subset of traces, and the nodes of the tree a strategy records.

A round is all-or-nothing unless asked otherwise: half an RSA population or half a revision
round would change what the method is, so a round the budget cannot pay for ends the search
and the answer rests on what was finished (``budget_limited``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any, TypeVar

from ttscale.answers import extract_answer
from ttscale.errors import BudgetExceeded
from ttscale.params import SamplingParams
from ttscale.strategies.base import Env, State, classes_of, pick
from ttscale.types import AnswerClass, GenerateOutput, Generation, Prompt, Trace

S = TypeVar("S", bound=State)
# Context allowed for a prompt's own text (system prompt, question, instructions), on top of
# the earlier traces it shows: what a backend slot must hold beyond the generated tokens.
PROMPT_ALLOWANCE = 512


def lift(state: State, cls: type[S]) -> S:
    """``state`` as the strategy's own state class (``run`` starts every strategy from a
    plain ``State``); the fields it adds start at their defaults.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Mine(State):
        ...     round: int = 0
        >>> lift(State("2+2?"), Mine).round, lift(State("2+2?"), Mine).question
        (0, '2+2?')
    """
    if isinstance(state, cls):
        return state
    return cls(**{f.name: getattr(state, f.name) for f in fields(State)})


def affordable(env: Env, prompts: Sequence[Prompt], max_tokens: int, want: int) -> int:
    """How many samples of *every* prompt (0..``want``) the budget pays for, each sample at
    its worst case: its prompt plus ``max_tokens``. Prompts are measured only when a cap
    depends on tokens; each prompt is one call.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant, Budget
        >>> env = Env(FakeBackend(), Accountant(Budget(max_tokens=100)), SamplingParams())
        >>> affordable(env, ["one two", "three four five"], max_tokens=10, want=8)
        4
    """
    acc = env.accountant
    prompt_tokens = sum(env.prompt_tokens(p) for p in prompts) if acc.counts_tokens else 0
    layer = prompt_tokens + len(prompts) * max_tokens
    # One sample of every prompt is priced as one "sample" of the whole layer, so the
    # accountant's own rule (tokens, FLOPs, calls, seconds) decides.
    return acc.affordable_samples(prompt_tokens=layer - max_tokens, max_tokens=max_tokens,
                                  want=want, params_count=env.backend.params_count,
                                  calls=len(prompts))


def generate(env: Env, prompts: Sequence[Prompt], params: SamplingParams, *, what: str,
             partial: bool = False) -> GenerateOutput | None:
    """One batched call: ``params.n`` samples of every prompt, charged to the accountant.

    ``None`` when the budget cannot pay for all of them (with ``partial``, for none of
    them; then the call asks for as many samples per prompt as fit). Before anything was
    spent that is ``BudgetExceeded``: the strategy could not even start.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> env = Env(FakeBackend(), Accountant(), SamplingParams())
        >>> out = generate(env, ["a", "b"], SamplingParams(n=2), what="sampling")
        >>> [len(g) for g in out.generations], env.accountant.spent.calls
        ([2, 2], 2)
    """
    k = affordable(env, prompts, params.max_tokens, params.n)
    if k == 0 or (k < params.n and not partial):
        if env.accountant.spent.calls == 0:
            raise BudgetExceeded(
                f"the budget cannot pay for the first call ({len(prompts)} prompt(s) x "
                f"{params.n} sample(s) of up to {params.max_tokens} tokens each): raise the "
                "budget or lower max_tokens")
        return None
    env.progress(what)
    out = env.backend.generate(list(prompts), params.with_(n=k))
    env.accountant.charge(out.usage)
    return out


def as_trace(g: Generation) -> Trace:
    """A generation as a trace with its extracted answer.

    Example:
        >>> from ttscale.types import Generation
        >>> as_trace(Generation("so \\\\boxed{3}", 10, 4, "stop")).answer
        '3'
    """
    return Trace(g.text, extract_answer(g.text), g.completion_tokens, g.finish_reason)


def vote(traces: Sequence[Trace], members: Sequence[int]) -> tuple[list[AnswerClass], str | None]:
    """Majority over ``traces[i] for i in members``; the classes name indices of ``traces``.
    Ties go to the class seen first, as in majority voting.

    Example:
        >>> ts = [Trace("", a, 1, "stop") for a in ["1", "2", "0.5", "1/2"]]
        >>> classes, answer = vote(ts, [1, 2, 3])
        >>> answer, [(c.answer, c.traces) for c in classes]
        ('0.5', [('2', (1,)), ('0.5', (2, 3))])
    """
    chosen = [traces[i] for i in members]
    classes = [replace(c, traces=tuple(members[j] for j in c.traces))
               for c in classes_of(chosen)]
    return classes, pick(classes, "votes")


def numbered(texts: Sequence[str], label: str) -> str:
    """Texts shown to the model one after another, each under a numbered label.

    Example:
        >>> print(numbered(["x = 1", "x = 2 "], "Solution"))
        Solution 1:
        x = 1
        <BLANKLINE>
        Solution 2:
        x = 2
    """
    return "\n\n".join(f"{label} {i}:\n{text.strip()}" for i, text in enumerate(texts, 1))


def trace_node(index: int, trace: Trace, prompt_tokens: int, **fields_: Any) -> dict[str, Any]:
    """A tree node for one generated trace: the strategy's own fields first, then where it
    is in ``Result.traces``, its answer, tokens and text (the report shows text last).

    Example:
        >>> t = Trace("so \\\\boxed{3}", "3", 4, "stop")
        >>> trace_node(5, t, 12, round=1)
        {'round': 1, 'trace': 5, 'answer': '3', 'prompt_tokens': 12, 'tokens': 4, \
'finish': 'stop', 'text': 'so \\\\boxed{3}'}
    """
    return {**fields_, "trace": index, "answer": trace.answer, "prompt_tokens": prompt_tokens,
            "tokens": trace.completion_tokens, "finish": trace.finish_reason,
            "text": trace.text}
