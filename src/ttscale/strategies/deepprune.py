"""DeepPrune (Tu et al. 2025): finish one trace per cluster of similar prefixes.

Step 1: ``n`` samples of at most ``prefix`` tokens each, in one batched call. Step 2: their
texts are clustered greedily (:mod:`ttscale.aggregation.pruning`); the representative (first
member) of every cluster that has not finished yet is continued to the end in one batched
call, each as the partial answer of its prompt (``Chat.prefill``), with the rest of the token
allowance (``max_tokens - prefix``). Each representative's answer votes with its cluster's size; the
other members are left unfinished (finish ``aborted``, no answer of their own).

Every token is charged: the prefixes, and for each continuation its prompt with the prefix
re-read (the backend's own count) plus its new tokens. Options: ``--strategy
"deepprune:prefix=64,similarity=embedding"``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ttscale.aggregation.pruning import PruneParams, cluster, parse_prune, similarity_matrix
from ttscale.answers import extract_answer, group_answers, solve_prompt
from ttscale.strategies.base import Env, State, pick, result, sample
from ttscale.types import AnswerClass, Chat, Generation, Result, Trace


@dataclass(frozen=True)
class PruneState(State):
    """The state after the prefixes: the clusters, as trace indices, representative first."""

    clusters: tuple[tuple[int, ...], ...] = ()


def _prefix_trace(g: Generation) -> Trace:
    # a prefix cut at the token limit has no answer yet
    answer = extract_answer(g.text) if g.finish_reason == "stop" else None
    return Trace(g.text, answer, g.completion_tokens, g.finish_reason)


@dataclass(frozen=True, kw_only=True)
class DeepPrune:
    """``n`` prefixes, clustered; one finished trace per cluster votes with its size.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> texts = ["add 3 and 4 to get 7 so \\\\boxed{7}",
        ...          "add 3 and 4 to get 7 hence \\\\boxed{7}",
        ...          "multiply 3 by 4 for 12 so \\\\boxed{12}"]
        >>> def script(p, i):  # the prefixes, then each continuation follows its prefix
        ...     if not p.prefill:
        ...         return texts[i % 3]
        ...     return "so \\\\boxed{12}" if "multiply" in p.prefill else "so \\\\boxed{7}"
        >>> fb = FakeBackend(script=script)
        >>> r = solve("?", backend=fb, strategy="deepprune:prefix=4,threshold=0.5", n=3)
        >>> r.answer, [(c.answer, c.votes) for c in r.classes]
        ('7', [('7', 2), ('12', 1)])
        >>> [t.finish_reason for t in r.traces]
        ['stop', 'aborted', 'stop']
    """

    n: int = 16
    options: str = ""
    name: str = "deepprune"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        self.params  # noqa: B018  (a bad option fails here, before any sampling)

    @property
    def params(self) -> PruneParams:
        return parse_prune(self.options)

    def step(self, state: State, env: Env) -> State:
        p = self.params
        if not isinstance(state, PruneState):
            state = sample(env, state, self.n, convert=_prefix_trace,
                           params=env.sampling.with_(max_tokens=min(p.prefix,
                                                                    env.sampling.max_tokens)))
            if not state.traces:
                return state
            groups = cluster(similarity_matrix([t.text for t in state.traces], p), p.cut)
            env.progress(f"{len(groups)} clusters of {len(state.traces)} prefixes")
            return PruneState(state.question, state.traces, state.done, state.budget_limited,
                              state.notes, state.started, tuple(tuple(g) for g in groups))
        return replace(self._continue(state, env), done=True)

    def _continue(self, state: PruneState, env: Env) -> PruneState:
        """Finish the representatives still open, in one call of several prompts."""
        traces = list(state.traces)
        for group in state.clusters:
            for i in group[1:]:
                traces[i] = replace(traces[i], answer=None, finish_reason="aborted")
        todo = [g[0] for g in state.clusters if traces[g[0]].finish_reason == "length"]
        left = env.sampling.max_tokens - self.params.prefix
        if not todo or left <= 0:
            return replace(state, traces=tuple(traces))
        base = solve_prompt(state.question)
        prompts = [Chat(base.messages, prefill=traces[i].text) for i in todo]
        counted = [env.prompt_tokens(pr) if env.accountant.counts_tokens else 0
                   for pr in prompts]
        fits = env.accountant.affordable_samples(
            prompt_tokens=max(counted), max_tokens=left, want=len(todo),
            params_count=env.backend.params_count)
        limited = fits < len(todo)
        todo, prompts = todo[:fits], prompts[:fits]
        if todo:
            env.progress(f"finishing {len(todo)} representative{'s' * (len(todo) > 1)}")
            out = env.backend.generate(prompts, env.sampling.with_(
                n=1, max_tokens=left, seed=env.sampling.seed + len(traces)))
            env.accountant.charge(out.usage)
            for i, gens in zip(todo, out.generations, strict=True):
                g = gens[0]
                text = traces[i].text + g.text
                traces[i] = Trace(text, extract_answer(text),
                                  traces[i].completion_tokens + g.completion_tokens,
                                  g.finish_reason)
        return replace(state, traces=tuple(traces),
                       budget_limited=state.budget_limited or limited)

    def finish(self, state: State, env: Env) -> Result:
        clusters = state.clusters if isinstance(state, PruneState) else tuple(
            (i,) for i in range(len(state.traces)))
        voters = [g for g in clusters if state.traces[g[0]].answer is not None]
        out = []
        for merged in group_answers([state.traces[g[0]].answer for g in voters]):
            members = tuple(sorted(i for k in merged for i in voters[k]))
            answer = state.traces[voters[merged[0]][0]].answer
            assert answer is not None  # voters all have one
            out.append(AnswerClass(answer, len(members), None, members))
        return result(state, env, self.name, out, pick(out, "votes"))
