"""DeepConf (Fu et al. 2025): confidence-filtered, confidence-weighted voting; offline and
online with early aborts. The measures and rules are in :mod:`ttscale.aggregation.confidence`.

``deepconf``: ``n`` samples in one batched call with their top-k log-probabilities; the
``ceil(eta · n)`` most confident vote, each weighted by its confidence.

``deepconf_online``: ``warmup`` complete samples set the bar; then batches of ``batch``
samples are streamed (``ttscale.backends.streaming``) and each is aborted the moment a window
of tokens falls below the bar: an aborted sample is charged the tokens it had and never votes.
Sampling stops when the leader holds ``tau`` of the confidence-weighted vote, or at ``n``.
A backend that cannot stream gets whole samples, cut afterwards: the vote is the same, but
nothing is saved (every generated token is charged), and the result says so in a note.

Options come as a spec, also from the command line: ``--strategy "deepconf:eta=0.1"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ttscale.aggregation.confidence import (
    ConfidenceParams,
    GroupMonitor,
    leader_share,
    parse_confidence,
    threshold,
    token_confidences,
    trace_confidence,
)
from ttscale.aggregation.confidence import select as select_confident
from ttscale.answers import extract_answer, group_answers
from ttscale.backends.streaming import generate_watched
from ttscale.errors import BackendError
from ttscale.params import SamplingParams
from ttscale.strategies.base import Env, State, pick, result, sample
from ttscale.types import AnswerClass, GenerateOutput, Generation, Prompt, Result, Trace


def scored(g: Generation, params: ConfidenceParams, measure: str | None = None) -> Trace:
    """A generation as a trace whose ``score`` is its confidence (None: aborted, no vote).

    Example:
        >>> from ttscale.types import TokenLogprob
        >>> lps = tuple(TokenLogprob(t, -0.1, ((t, -0.1), ("x", -2.5))) for t in ("So", " 42"))
        >>> t = scored(Generation("So 42", 10, 2, "stop", lps), ConfidenceParams())
        >>> t.answer, t.score
        ('42', 1.3)
        >>> scored(Generation("So", 10, 1, "aborted", lps[:1]), ConfidenceParams()).score is None
        True
    """
    if g.finish_reason == "aborted":
        return Trace(g.text, None, g.completion_tokens, g.finish_reason)
    if g.logprobs is None:
        raise BackendError("the backend returned no token log-probabilities, which DeepConf "
                           "needs: use llamacpp or a server that returns logprobs")
    conf = trace_confidence(token_confidences(g.logprobs, params.top_k), params, measure)
    return Trace(g.text, extract_answer(g.text), g.completion_tokens, g.finish_reason,
                 score=conf)


def confidence_classes(traces: Sequence[Trace],
                       keep: Sequence[bool] | None = None) -> list[AnswerClass]:
    """Answer classes of the kept, scored traces: votes and summed confidence; indices are
    positions in ``traces``, classes in order of first appearance.

    Example:
        >>> t = [Trace("", "2", 5, "stop", score=1.0), Trace("", "2.0", 5, "stop", score=2.0),
        ...      Trace("", "3", 5, "stop", score=4.0), Trace("", None, 2, "aborted")]
        >>> [(c.answer, c.votes, c.score, c.traces) for c in confidence_classes(t)]
        [('2', 2, 3.0, (0, 1)), ('3', 1, 4.0, (2,))]
    """
    voters = [i for i, t in enumerate(traces) if t.score is not None and t.answer is not None
              and (keep is None or keep[i])]
    out = []
    for group in group_answers([traces[i].answer for i in voters]):
        idx = tuple(voters[g] for g in group)
        answer = traces[idx[0]].answer
        assert answer is not None  # voters all have one
        out.append(AnswerClass(answer, len(idx), float(sum(traces[i].score or 0.0
                                                           for i in idx)), idx))
    return out


@dataclass(frozen=True, kw_only=True)
class DeepConf:
    """Offline DeepConf over ``n`` samples; ``options`` a spec such as ``eta=0.1,window=32``.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> sure = lambda _p, seed, _pos, _s: [-0.01, -6.0] if seed == 0 else [-1.0, -1.2]
        >>> fb = FakeBackend(responses=["so \\\\boxed{7}", "so \\\\boxed{9}", "so \\\\boxed{9}"],
        ...                  token_logprobs=sure)
        >>> r = solve("?", backend=fb, strategy="deepconf", n=3)  # one sure 7 beats two unsure 9s
        >>> r.answer, [(c.answer, c.votes) for c in r.classes]
        ('7', [('7', 1), ('9', 2)])
    """

    n: int = 16
    options: str = ""
    name: str = "deepconf"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        self.params  # noqa: B018  (a bad option fails here, before any sampling)

    @property
    def params(self) -> ConfidenceParams:
        return parse_confidence(self.options)

    def sampling(self, env: Env) -> SamplingParams:
        return env.sampling.with_(logprobs=True,
                                  top_logprobs=max(env.sampling.top_logprobs, self.params.top_k))

    def step(self, state: State, env: Env) -> State:
        p = self.params
        state = sample(env, state, self.n - len(state.traces), params=self.sampling(env),
                       convert=lambda g: scored(g, p))
        return replace(state, done=True)

    def finish(self, state: State, env: Env) -> Result:
        confs = [t.score if t.score is not None else float("-inf") for t in state.traces]
        keep = select_confident(confs, self.params.eta)
        classes = confidence_classes(state.traces, keep)
        return result(state, env, self.name, classes, pick(classes, "score"))


@dataclass(frozen=True, kw_only=True)
class DeepConfOnline(DeepConf):
    """Online DeepConf: a warm-up sets the bar, later samples are aborted below it, sampling
    stops at a ``tau`` consensus or at ``n``.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> unsure_later = lambda _p, seed, _pos, _s: [-0.01, -5.0 if seed < 2 else -1.0]
        >>> fb = FakeBackend(script=lambda _p, i: f"so {i} \\\\boxed{{{i % 2}}}",
        ...                  token_logprobs=unsure_later)
        >>> r = solve("?", backend=fb, strategy="deepconf_online:warmup=2,window=2", n=6)
        >>> [t.finish_reason for t in r.traces]
        ['stop', 'stop', 'aborted', 'aborted', 'aborted', 'aborted']
        >>> r.usage.completion_tokens  # 3 + 3 whole, then 2 tokens of each aborted sample
        14
    """

    name: str = "deepconf_online"

    def step(self, state: State, env: Env) -> State:
        p = self.params
        params = self.sampling(env)
        if len(state.traces) < p.warmup:
            state = sample(env, state, min(p.warmup, self.n) - len(state.traces),
                           params=params, convert=lambda g: scored(g, p, "lowest"))
        else:
            bar = threshold([t.score for t in state.traces[: p.warmup]
                             if t.score is not None] or [0.0], p.eta)
            monitors = [GroupMonitor(bar, p.window, p.top_k) for _ in range(p.batch)]
            streamed = [True]

            def watched(prompt: Prompt, asked: SamplingParams) -> GenerateOutput:
                out, streamed[0] = generate_watched(
                    env.backend, prompt, asked, lambda i, t: monitors[i].push(t))
                return out

            state = sample(env, state, min(p.batch, self.n - len(state.traces)),
                           params=params, generate=watched,
                           convert=lambda g: scored(g, p, "lowest"))
            if not streamed[0] and not any("cannot stream" in x for x in state.notes):
                note = (f"backend {env.backend.name} cannot stream: samples ran to their end "
                        "and were cut afterwards, so every generated token is charged")
                state = replace(state, notes=(*state.notes, note))
        if state.done:  # the budget ran out
            return state
        classes = confidence_classes(state.traces)
        share = leader_share({k: c.score or 0.0 for k, c in enumerate(classes)})
        return replace(state, done=len(state.traces) >= self.n or share >= p.tau)

    def finish(self, state: State, env: Env) -> Result:
        classes = confidence_classes(state.traces)
        return result(state, env, self.name, classes, pick(classes, "score"))

