"""Budget forcing (s1, Muennighoff et al. 2025): how long the model thinks, in thinking tokens.

s1's models think between delimiters and then answer. Ours are instruct models that reason
and end with a final-answer statement, so here *thinking* is everything a trace writes before
the answer cue, and *the end* is the final-answer statement it closed with:

- **capped**: each trace thinks for at most ``budget`` tokens; one still thinking at the
  budget gets the answer cue appended (``The answer is \\boxed{``) and ``answer_tokens`` more
  tokens to finish, as s1 appends "Final Answer:".
- **extended**: a trace that ends before ``min_thinking`` thinking tokens has its end dropped
  (from the first ``the answer is`` / ``final answer`` / ``\\boxed`` on its last line, and the
  end of turn), ``Wait,`` appended, and is continued from there (a prefilled assistant
  message), at most ``max_extensions`` times.
- A trace that ends on its own with an answer statement keeps it: s1 would append the cue
  and read the same answer again, a call that only re-reads the prompt. One that ends with
  no answer statement gets the cue.

Accounting: every continuation re-reads the prompt and the thinking so far; those are that
call's prompt tokens, charged as the backend reports them. A trace's thinking tokens are the
completion tokens of its thinking calls (dropped ends included: they were generated); they
are reported per trace in ``Result.tree`` and ``Result.notes``. A trace's node in the tree
holds its segments: thinking, dropped ends (``pruned``), each ``Wait``, the cue, the answer;
those that made a call carry its prompt and completion tokens, and the trace's text is the
concatenation of the segments not pruned.

``n`` traces are forced side by side, each phase one batched call (traces with different
budgets left go in one call each), and vote by majority; ``n = 1`` is s1 itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from ttscale.answers import extract_answer, last_boxed, solve_prompt
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.strategies.base import Env, State, result
from ttscale.strategies.rounds import PROMPT_ALLOWANCE, generate, lift, vote
from ttscale.types import Chat, FinishReason, Generation, Result, Trace

# A budget smaller than this cannot hold one reasoning step (a sentence and a computation):
# the cap would only ask for a guess, which greedy does for less.
ONE_STEP = 16
# The final-answer statement a trace ends with: what "dropping the end" removes.
END = re.compile(r"(?:\b(?:so|thus|therefore|hence)[,:]?\s+)?(?:\bthe\s+)?"
                 r"(?:final\s+answer|answer\s+is)|\\boxed|\\fbox", re.IGNORECASE)


def split_end(text: str) -> tuple[str, str]:
    """``text`` split before the final-answer statement it ends with: (kept, dropped).

    Example:
        >>> split_end("3+4 = 7.\\n\\nSo the answer is \\\\boxed{7}.")
        ('3+4 = 7.\\n\\n', 'So the answer is \\\\boxed{7}.')
        >>> split_end("no statement at all")
        ('no statement at all', '')
    """
    matches = list(END.finditer(text))
    if not matches:
        return text, ""
    line = text.rfind("\n", 0, matches[-1].start()) + 1
    cut = next(m.start() for m in matches if m.start() >= line)
    return text[:cut], text[cut:]


def has_answer(text: str) -> bool:
    """Whether ``text`` states a final answer (a box, or "answer is" followed by one).

    Example:
        >>> has_answer("so \\\\boxed{4}"), has_answer("I think 4 is close")
        (True, False)
    """
    if last_boxed(text):
        return True
    m = re.search(r"answer\s+is", text, re.IGNORECASE)
    return m is not None and extract_answer(text[m.start():]) is not None


def _appended(text: str, addition: str) -> str:
    # The cue or "Wait" starts a new paragraph, as it would in s1's thinking.
    if not text or text.endswith(("\n", " ")):
        return addition
    return "\n\n" + addition


@dataclass(frozen=True)
class Forced:
    """One trace being forced: its transcript so far and what it has spent."""

    text: str = ""
    phase: str = "think"  # think, answer, done
    thinking_tokens: int = 0
    answer_tokens: int = 0
    answer_from: int = -1  # where the forced answer starts in text, -1 if none
    extensions: int = 0
    capped: bool = False
    finish: FinishReason = "stop"
    segments: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ForcingState(State):
    forced: tuple[Forced, ...] = ()
    round: int = 0
    budget: int = 0


@dataclass(frozen=True, kw_only=True)
class BudgetForcing:
    """s1 budget forcing: ``budget`` thinking tokens at most per trace (default: the
    sampling ``max_tokens``), at least ``min_thinking`` by appending ``wait`` up to
    ``max_extensions`` times, then ``cue`` and ``answer_tokens`` tokens for the answer.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(script=lambda p, _i: "7}." if p.prefill.endswith("{")
        ...                  else "think " * 40)
        >>> r = solve("3+4?", backend=fb, strategy="budget_forcing", n=1, max_tokens=16)
        >>> r.answer, r.tree["children"][0]["thinking_tokens"], r.tree["children"][0]["capped"]
        ('7', 16, True)
    """

    n: int = 1
    budget: int | None = None
    min_thinking: int = 0
    max_extensions: int = 2
    answer_tokens: int = 24
    wait: str = "Wait,"
    cue: str = "The answer is \\boxed{"
    name: str = "budget_forcing"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be a positive number of traces, got {self.n}")
        if self.budget is not None:
            self._check_budget(self.budget, "budget")
        if self.min_thinking < 0 or self.max_extensions < 0:
            raise ConfigError("min_thinking and max_extensions must be >= 0, got "
                              f"{self.min_thinking} and {self.max_extensions}")
        if self.answer_tokens < 1:
            raise ConfigError(f"answer_tokens must be positive, got {self.answer_tokens}: "
                              "the answer after the cue needs at least one token")
        if not self.wait.strip() or not self.cue.strip():
            raise ConfigError("wait and cue must be non-empty text, e.g. wait=Wait, and "
                              "cue='Final answer:'")

    def context_tokens(self, max_tokens: int) -> int:
        """The longest request: the prompt, all the thinking, the cue and the answer.

        Example:
            >>> BudgetForcing(budget=4096).context_tokens(1024)
            4640
        """
        budget = self.budget if self.budget is not None else max_tokens
        return budget + self.answer_tokens + PROMPT_ALLOWANCE + 8  # 8: "Wait," and the cue

    def check_sampling(self, sampling: SamplingParams) -> None:
        """Refuse a thinking budget that the sampling ``max_tokens`` makes too small, before
        anything is loaded (``solve.check`` calls it).

        Example:
            >>> BudgetForcing().check_sampling(SamplingParams(max_tokens=8))
            Traceback (most recent call last):
            ...
            ttscale.errors.ConfigError: the thinking budget (max_tokens 8) is below one \
thinking step of 16 tokens: give at least 16, or use greedy for an answer without thinking
        """
        if self.budget is None:
            self._check_budget(sampling.max_tokens, "max_tokens")

    def _check_budget(self, budget: int, what: str) -> None:
        if budget < ONE_STEP:
            raise ConfigError(f"the thinking budget ({what} {budget}) is below one thinking "
                              f"step of {ONE_STEP} tokens: give at least {ONE_STEP}, or use "
                              "greedy for an answer without thinking")
        if self.min_thinking > budget:
            raise ConfigError(f"min_thinking {self.min_thinking} is above the thinking "
                              f"budget of {budget} tokens: lower it or raise the budget")

    def step(self, state: State, env: Env) -> State:
        st = lift(state, ForcingState)
        if not st.forced:
            budget = self.budget if self.budget is not None else env.sampling.max_tokens
            self._check_budget(budget, "budget" if self.budget is not None else "max_tokens")
            return self._first(replace(st, budget=budget), env)
        thinking = [i for i, f in enumerate(st.forced) if f.phase == "think"]
        if thinking:
            return self._think(st, env, thinking)
        answering = [i for i, f in enumerate(st.forced) if f.phase == "answer"]
        if answering:
            return self._answer(st, env, answering)
        return replace(st, done=True)

    def _first(self, st: ForcingState, env: Env) -> State:
        params = env.sampling.with_(n=self.n, max_tokens=st.budget)
        out = generate(env, [solve_prompt(st.question)], params, partial=True,
                       what=f"thinking: {self.n} trace{'s' if self.n > 1 else ''}")
        assert out is not None  # partial: some fit, or BudgetExceeded was raised
        gens = out.generations[0]
        forced = tuple(self._after_thinking(Forced(), g, st.budget) for g in gens)
        return replace(st, forced=forced, round=1, budget_limited=len(gens) < self.n)

    def _think(self, st: ForcingState, env: Env, todo: list[int]) -> State:
        forced = list(st.forced)
        # One call per distinct budget left: a call has one max_tokens for all its prompts.
        by_left: dict[int, list[int]] = {}
        for i in todo:
            by_left.setdefault(st.budget - forced[i].thinking_tokens, []).append(i)
        limited = st.budget_limited
        for left, group in sorted(by_left.items()):
            prompts = [Chat(solve_prompt(st.question).messages, prefill=forced[i].text)
                       for i in group]
            params = env.sampling.with_(n=1, max_tokens=left,
                                        seed=env.sampling.seed + st.round * self.n)
            out = generate(env, prompts, params,
                           what=f"thinking on: {len(group)} trace{'s' if len(group) > 1 else ''}")
            for j, i in enumerate(group):
                if out is None:  # the budget cannot pay for more thinking: answer now
                    forced[i] = replace(forced[i], phase="answer")
                else:
                    forced[i] = self._after_thinking(forced[i], out.generations[j][0],
                                                     st.budget)
            limited = limited or out is None
        return replace(st, forced=tuple(forced), round=st.round + 1, budget_limited=limited)

    def _after_thinking(self, f: Forced, g: Generation, budget: int) -> Forced:
        spent = f.thinking_tokens + g.completion_tokens
        think = {"kind": "think", "prompt_tokens": g.prompt_tokens,
                 "tokens": g.completion_tokens, "finish": g.finish_reason}
        if g.finish_reason == "length":  # stopped by the budget, still thinking
            capped = spent >= budget
            return replace(f, text=f.text + g.text, thinking_tokens=spent, capped=capped,
                           phase="answer" if capped else "think", finish=g.finish_reason,
                           segments=(*f.segments, {**think, "text": g.text}))
        if spent < min(self.min_thinking, budget) and f.extensions < self.max_extensions:
            kept, dropped = split_end(g.text)
            wait = _appended(f.text + kept, self.wait)
            segs = ({**think, "text": kept}, {"kind": "end", "text": dropped, "pruned": True},
                    {"kind": "wait", "text": wait})
            return replace(f, text=f.text + kept + wait, thinking_tokens=spent,
                           extensions=f.extensions + 1, finish=g.finish_reason,
                           segments=f.segments + segs)
        # It ended by itself with enough thinking (or no extension left): keep its answer.
        return replace(f, text=f.text + g.text, thinking_tokens=spent, finish=g.finish_reason,
                       phase="done" if has_answer(g.text) else "answer",
                       segments=(*f.segments, {**think, "text": g.text}))

    def _answer(self, st: ForcingState, env: Env, todo: list[int]) -> State:
        forced = list(st.forced)
        cues = [_appended(forced[i].text, self.cue) for i in todo]
        prefills = [forced[i].text + cue for i, cue in zip(todo, cues, strict=True)]
        prompts = [Chat(solve_prompt(st.question).messages, prefill=p) for p in prefills]
        params = env.sampling.with_(n=1, max_tokens=self.answer_tokens,
                                    seed=env.sampling.seed + st.round * self.n)
        out = generate(env, prompts, params, what=f"answering: {len(todo)} "
                       f"trace{'s' if len(todo) > 1 else ''} at the answer cue")
        for j, i in enumerate(todo):
            f = forced[i]
            if out is None:  # no budget left even for the answer: what it wrote stands
                forced[i] = replace(f, phase="done")
                continue
            g = out.generations[j][0]
            cue_at = len(prefills[j]) - len(self.cue)
            segs = ({"kind": "cue", "text": cues[j]},
                    {"kind": "answer", "prompt_tokens": g.prompt_tokens,
                     "tokens": g.completion_tokens, "finish": g.finish_reason, "text": g.text})
            forced[i] = replace(f, text=prefills[j] + g.text, phase="done", answer_from=cue_at,
                                answer_tokens=g.completion_tokens, finish=g.finish_reason,
                                segments=f.segments + segs)
        return replace(st, forced=tuple(forced), round=st.round + 1,
                       budget_limited=st.budget_limited or out is None, done=True)

    def finish(self, state: State, env: Env) -> Result:
        st = lift(state, ForcingState)
        traces = tuple(Trace(f.text, _answer_of(f), f.thinking_tokens + f.answer_tokens,
                             f.finish) for f in st.forced)
        classes, answer = vote(traces, range(len(traces)))
        spent = [f.thinking_tokens for f in st.forced]
        capped = sum(f.capped for f in st.forced)
        extended = sum(f.extensions > 0 for f in st.forced)
        note = (f"budget forcing: thinking tokens per trace {', '.join(map(str, spent))} "
                f"(budget {st.budget}, min {self.min_thinking}); {capped} capped, "
                f"{extended} extended with {self.wait!r}")
        tree = {"text": st.question, "strategy": self.name, "budget": st.budget,
                "min_thinking": self.min_thinking, "max_extensions": self.max_extensions,
                "children": [{"trace": i, "answer": t.answer,
                              "thinking_tokens": f.thinking_tokens,
                              "answer_tokens": f.answer_tokens, "extensions": f.extensions,
                              "capped": f.capped, "children": list(f.segments)}
                             for i, (f, t) in enumerate(zip(st.forced, traces, strict=True))]}
        st = replace(st, traces=traces, notes=(*st.notes, note))
        return replace(result(st, env, self.name, classes, answer), tree=tree)


def _answer_of(f: Forced) -> str | None:
    # A forced answer is read after the cue, so a number in the thinking is not taken for it.
    if f.answer_from >= 0:
        forced = extract_answer(f.text[f.answer_from:])
        if forced is not None:
            return forced
    return extract_answer(f.text)
