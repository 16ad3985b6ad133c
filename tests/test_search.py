"""Beam search and DVTS on a scripted backend: tree shape, beams kept per round, rounds, bad
input, and token accounting to the token; then the real 135M model end to end."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest

from ttscale.answers import solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.budget import Accountant, Budget
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.solve import solve
from ttscale.strategies.base import Env, State
from ttscale.strategies.beam import BeamSearch
from ttscale.strategies.dvts import DVTS
from ttscale.strategies.stepwise import SearchState, step_prompt
from ttscale.types import Chat, Prompt, Usage
from ttscale.verifiers.base import VerifierOutput
from ttscale.verifiers.reduce import reduce_scores

Q = "What is 1+1?"


def words(text: str) -> int:
    return len(text.split())


def script(prompt: Prompt, i: int) -> str:
    """Two reasoning steps (even seeds good, odd bad), then a boxed answer."""
    prefix = prompt.prefill if not isinstance(prompt, str) else ""
    depth = prefix.count("\n\n")
    if depth < 2:
        return prefix + f"s{depth}-{i} {'good' if i % 2 == 0 else 'bad'}\n\nmore"
    return prefix + f"final \\boxed{{{i % 3}}}"


class Calls(FakeBackend):
    """The fake backend, recording each generate call as (prompts, n)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.log: list[tuple[int, int]] = []

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Any:
        self.log.append((len(prompts), params.n))
        return super().generate(prompts, params)


class Scripted:
    """A verifier that scores the last step by its words; usage: the partial answer's words
    as prompt tokens and one completion token per answer."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        self.calls.append(list(traces))
        out = []
        for t in traces:
            last = t.split("\n\n")[-1]
            boxed = re.search(r"boxed\{(\d)\}", last)
            s = 0.9 if "good" in last else 0.2 if "bad" in last else \
                {"2": 0.8, "1": 0.6, "0": 0.3}[boxed.group(1)] if boxed else 0.5
            out.append((s,))
        usage = Usage(sum(words(t) for t in traces), len(traces), 1)
        return VerifierOutput(tuple(out), usage)

    def reduce(self, steps: Sequence[float]) -> float:
        return reduce_scores(steps, "last")

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        return trace_max_tokens + 1


def search(strategy: Any, backend: Any, verifier: Any = None, budget: Budget | None = None,
           max_tokens: int = 64) -> tuple[SearchState, Env]:
    env = Env(backend, Accountant(budget or Budget()), SamplingParams(max_tokens=max_tokens),
              verifier if verifier is not None else Scripted())
    state: State = strategy.start(Q)
    while not state.done:
        state = strategy.step(state, env)
    assert isinstance(state, SearchState)
    return state, env


def expected_usage(state: SearchState, verifier: Scripted) -> Usage:
    """What the search must have cost, recomputed from its nodes: each node's prompt is the
    question's prompt plus its parent's whole partial answer, re-read every round."""
    base = words(" ".join(m.content for m in solve_prompt(Q).messages))
    prompt = completion = 0
    for node in state.nodes:
        parent = state.nodes[node.parent] if node.parent is not None else None
        prompt += base + (words(parent.prefix) if parent else 0)
        completion += node.tokens
    scored = [t for call in verifier.calls for t in call]
    return Usage(prompt + sum(words(t) for t in scored), completion + len(scored))


def test_beam_keeps_n_over_m_per_round_and_counts_every_token() -> None:
    fb, judge = Calls(script=script), Scripted()
    state, env = search(BeamSearch(n=4, width=2, max_steps=3), fb, judge)
    nodes = state.nodes
    assert state.rounds == 3 and len(nodes) == 12
    assert fb.log == [(1, 4), (2, 2), (2, 2)]  # one batched call per round
    assert len(judge.calls) == 3 and [len(c) for c in judge.calls] == [4, 4, 4]
    by_depth = [[n for n in nodes if n.depth == d] for d in (1, 2, 3)]
    # rounds 1 and 2: the two good steps survive, the two bad ones are pruned
    for layer in by_depth[:2]:
        assert [n.pruned for n in layer] == [False, True, False, True]
        assert all("good" in n.text for n in layer if not n.pruned)
    # each survivor has exactly width children; the last round ends every answer
    for kept in (n for layer in by_depth[:2] for n in layer if not n.pruned):
        assert sum(1 for c in nodes if c.parent == kept.id) == 2
    assert all(n.finished for n in by_depth[2]) and not any(n.finished for n in nodes[:8])
    assert by_depth[1][0].prefix == "s0-0 good\n\ns1-4 good\n\n"
    r = BeamSearch(n=4, width=2, max_steps=3).finish(state, env)
    assert len(r.traces) == 4 and r.answer == "2"
    assert r.traces[0].text == "s0-0 good\n\ns1-4 good\n\nfinal \\boxed{2}"
    assert r.traces[0].step_scores == (0.9, 0.9, 0.8)
    u, want = r.usage, expected_usage(state, judge)
    assert (u.prompt_tokens, u.completion_tokens) == (want.prompt_tokens,
                                                      want.completion_tokens)
    assert r.tree["rounds"] == 3 and len(r.tree["children"]) == 4
    assert [c["pruned"] for c in r.tree["children"]] == [False, True, False, True]
    assert r.tree["children"][0]["children"][0]["children"][0]["answer"] == "2"


def test_dvts_searches_independent_subtrees() -> None:
    fb, judge = Calls(script=script), Scripted()
    strategy = DVTS(n=4, width=2, max_steps=3)
    state, env = search(strategy, fb, judge)
    nodes = state.nodes
    assert len(nodes) == 12 and fb.log == [(1, 4), (2, 2), (2, 2)]
    assert [n.group for n in nodes[:4]] == [0, 0, 1, 1]
    for layer in ([n for n in nodes if n.depth == d] for d in (1, 2)):
        for group in (0, 1):  # one survivor per subtree per round: its best step
            kept = [n for n in layer if n.group == group and not n.pruned]
            assert len(kept) == 1 and "good" in kept[0].text
    assert all(n.group == nodes[n.parent].group for n in nodes if n.parent is not None)
    r = strategy.finish(state, env)
    assert len(r.traces) == 4 and r.tree["groups"] == 2
    want = expected_usage(state, judge)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want.prompt_tokens,
                                                                  want.completion_tokens)


def test_finished_answers_leave_the_beam() -> None:
    def early(prompt: Prompt, i: int) -> str:
        prefix = prompt.prefill if not isinstance(prompt, str) else ""
        if not prefix and i % 2:  # odd first samples answer at once
            return f"quick \\boxed{{{i % 3}}}"
        return script(prompt, i)

    fb, judge = Calls(script=early), Scripted()
    state, env = search(BeamSearch(n=4, width=2, max_steps=3), fb, judge)
    first = [n for n in state.nodes if n.depth == 1]
    assert [n.finished for n in first] == [False, True, False, True]
    assert not any(n.pruned for n in first)  # ended answers are kept, not pruned
    assert all(n.parent not in (1, 3) for n in state.nodes)
    r = BeamSearch(n=4, width=2, max_steps=3).finish(state, env)
    assert len(r.traces) == 2 + 4  # two quick answers plus the beam's four
    assert expected_usage(state, judge).total_tokens == r.usage.total_tokens


def test_a_delimiter_that_never_occurs_scores_whole_answers() -> None:
    fb = FakeBackend(script=lambda _p, i: f"all in one line \\boxed{{{i % 2}}}")
    r = solve(Q, backend=fb, strategy="beam:width=2", n=4, verifier=Scripted())
    assert len(r.traces) == 4 and r.tree["rounds"] == 1
    assert any("never ended a generation" in note and "whole answer" in note
               for note in r.notes)


def test_budget_stops_the_search_and_flags_it() -> None:
    fb, judge = Calls(script=script), Scripted()
    budget = Budget(max_tokens=600)
    state, env = search(BeamSearch(n=4, width=2, max_steps=3), fb, judge, budget=budget,
                        max_tokens=32)
    r = BeamSearch(n=4, width=2, max_steps=3).finish(state, env)
    assert r.budget_limited and r.usage.total_tokens <= 600
    assert len(fb.log) < 3 or fb.log[-1] != (2, 2)
    assert r.traces  # the open branches stand in for answers


@pytest.mark.parametrize(("spec", "n", "message"), [
    ("beam:width=3", 8, "beam width 3 does not divide n 8"),
    ("beam:width=8", 4, "beam width 8 is larger than n 4"),
    ("beam:max_steps=0", 4, "max_steps must be at least 1"),
    ("dvts:width=0", 4, "beam width must be at least 1"),
    ("beam:delimiter=\"\"", 4, "step delimiter must be a non-empty string"),
    ("beam:aggregate=mean", 4, "unknown aggregate 'mean'"),
])
def test_bad_beam_input_is_one_sentence(spec: str, n: int, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        solve(Q, backend=FakeBackend(), strategy=spec, n=n, verifier="self_judge")
    assert "\n" not in str(err.value)


def test_search_strategies_need_a_verifier() -> None:
    with pytest.raises(ConfigError, match="strategy dvts needs a verifier"):
        solve(Q, backend=FakeBackend(), strategy="dvts", n=4)


def test_step_prompt_continues_the_answer() -> None:
    p = step_prompt(Q, "a\n\n")
    assert isinstance(p, Chat)
    assert p.prefill == "a\n\n" and p.messages == solve_prompt(Q).messages


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [BeamSearch(n=4, width=2, max_steps=3),
                                      DVTS(n=4, width=2, max_steps=3)])
def test_real_model_search_counts_every_token(small_backend: Any, strategy: Any) -> None:
    from ttscale.verifiers.self_judge import SelfJudge

    judge = SelfJudge(small_backend)
    state, env = search(strategy, small_backend, judge, max_tokens=48)
    r = strategy.finish(state, env)
    assert r.traces and r.tree["children"]
    assert sum(1 for n in state.nodes if n.depth == 1) == 4
    # prompts as the backend's own tokenizer counts them: the question plus the parent's
    # partial answer, for every node; the judge's prompts likewise
    policy = sum(small_backend.count_tokens(step_prompt(
        Q, state.nodes[n.parent].prefix if n.parent is not None else "")) for n in state.nodes)
    scored = [n for n in state.nodes if n.step_scores is not None]
    judged = sum(small_backend.count_tokens(judge.prompt(Q, n.answer_text)) for n in scored)
    assert r.usage.prompt_tokens == policy + judged
    assert r.usage.completion_tokens == sum(n.tokens for n in state.nodes) + len(scored)
    assert any(n.delimited for n in state.nodes) or any("never" in x for x in r.notes)


@pytest.mark.slow
def test_llamacpp_step_generation_is_exact(small_backend: Any) -> None:
    """Each sample's stop reason and completion count agree with llama.cpp's own report
    (its verbose ``stop_type`` and ``tokens_predicted``), and a continued answer's prompt
    is counted whole."""
    prompt = solve_prompt("Tom has 3 apples and buys 5 more. How many apples does he have?")
    kinds = set()
    for seed in range(16):  # enough seeds that some sample writes the delimiter
        params = SamplingParams(max_tokens=60, seed=seed, temperature=1.0, stop=("\n\n",))
        g = small_backend.generate([prompt], params).generations[0][0]
        body = dict(small_backend._request(prompt, params, 1, seed), verbose=True)
        told = small_backend._server.handle_chat_completions(body)["__verbose"]
        assert g.completion_tokens == told["tokens_predicted"]
        assert g.hit_stop == (told["stop_type"] == "word")
        kinds.add(told["stop_type"])
        if g.hit_stop:
            more = step_prompt(prompt.messages[-1].content, g.text + "\n\n")
            cont = small_backend.generate([more], params).generations[0][0]
            assert cont.prompt_tokens == small_backend.count_tokens(more)
    assert "word" in kinds  # the delimiter was met at least once


def test_an_answer_at_its_token_cap_ends() -> None:
    # every step is 3 words; a cap of 6 tokens ends each answer after its second step
    fb = FakeBackend(script=lambda p, i: getattr(p, "prefill", "") + f"w{i} x y\n\nz")
    state, _env = search(BeamSearch(n=2, width=1, max_steps=5), fb, max_tokens=6)
    assert max(n.depth for n in state.nodes) == 2 and state.rounds == 2
    assert all(n.finished for n in state.nodes if n.depth == 2)
    assert all(n.path_tokens <= 6 for n in state.nodes)
