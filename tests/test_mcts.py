"""MCTS and AB-MCTS through treequest: whole-answer nodes, the budget honoured exactly,
revisions prompted with their parent, every token counted; the real 135M model too."""

from __future__ import annotations

from typing import Any

import pytest
from test_search import Calls, Scripted, words

from ttscale.answers import solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.budget import Accountant, Budget
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.solve import solve
from ttscale.strategies.base import Env, State
from ttscale.strategies.mcts import ABMCTS, MCTS, refine_prompt
from ttscale.strategies.stepwise import SearchState
from ttscale.types import Chat, Prompt

Q = "What is 1+1?"


def answers(prompt: Prompt, i: int) -> str:
    """Fresh answers box i % 3; a revision says so and boxes 2."""
    assert isinstance(prompt, Chat)
    if "previous attempt" in prompt.messages[-1].content:
        return f"revised {i} \\boxed{{2}}"
    return f"try {i} \\boxed{{{i % 3}}}"


def search(strategy: Any, backend: Any, judge: Any, budget: Budget | None = None
           ) -> tuple[SearchState, Env]:
    env = Env(backend, Accountant(budget or Budget()), SamplingParams(max_tokens=32), judge)
    state: State = strategy.start(Q)
    while not state.done:
        state = strategy.step(state, env)
    assert isinstance(state, SearchState)
    return state, env


def prompt_words(state: SearchState, parent: int | None) -> int:
    p = solve_prompt(Q) if parent is None else refine_prompt(
        Q, state.nodes[parent].text, state.nodes[parent].value)
    assert isinstance(p, Chat)
    return words(" ".join(m.content for m in p.messages))


@pytest.mark.parametrize("strategy", [MCTS(n=7), MCTS(n=6, samples_per_action=3),
                                      ABMCTS(n=7), ABMCTS(n=9, batch=3),
                                      ABMCTS(n=5, dist_type="beta")])
def test_exactly_n_answers_and_every_token_counted(strategy: Any) -> None:
    fb, judge = Calls(script=answers), Scripted()
    state, env = search(strategy, fb, judge)
    assert len(state.nodes) == strategy.n
    assert len(state.algo_state.tree) == strategy.n + 1  # treequest kept every answer
    for node in state.nodes:
        if node.parent is None:
            assert node.text.startswith("try")
        else:  # a deeper node revises its parent, whose answer is in its prompt
            assert node.text.startswith("revised")
            assert node.depth == state.nodes[node.parent].depth + 1
    r = strategy.finish(state, env)
    assert len(r.traces) == strategy.n
    scored = [t for call in judge.calls for t in call]
    assert len(scored) == strategy.n
    want_prompt = sum(prompt_words(state, n.parent) for n in state.nodes) + sum(
        words(t) for t in scored)
    assert r.usage.prompt_tokens == want_prompt
    assert r.usage.completion_tokens == sum(n.tokens for n in state.nodes) + len(scored)


def test_standard_mcts_shape() -> None:
    fb, judge = Calls(script=answers), Scripted()
    state, env = search(MCTS(n=6, samples_per_action=2), fb, judge)
    # the root is expanded samples_per_action times, then UCT picks a leaf each step
    assert [n.parent for n in state.nodes[:2]] == [None, None]
    assert fb.log == [(1, 2), (1, 2), (1, 2)]  # one call of n siblings per step
    r = MCTS(n=6).finish(state, env)
    assert r.answer == "2" and r.tree["n"] == 6
    assert sum(1 for _ in _walk(r.tree)) == 6


def _walk(tree: dict[str, Any]) -> Any:
    for child in tree["children"]:
        yield child
        yield from _walk(child)


def test_ab_mcts_is_reproducible_by_seed() -> None:
    def shape() -> list[int | None]:
        state, _ = search(ABMCTS(n=8, batch=2), FakeBackend(script=answers), Scripted())
        return [n.parent for n in state.nodes]

    assert shape() == shape()


def test_budget_stops_mcts_and_flags_it() -> None:
    fb, judge = Calls(script=answers), Scripted()
    state, env = search(ABMCTS(n=50), fb, judge, budget=Budget(max_tokens=2000))
    r = ABMCTS(n=50).finish(state, env)
    assert r.budget_limited and r.usage.total_tokens <= 2000 and 0 < len(state.nodes) < 50


@pytest.mark.parametrize(("spec", "message"), [
    ("ab_mcts:variant=z", "variant must be a or m"),
    ("ab_mcts:dist_type=cauchy", "dist_type must be gaussian or beta"),
    ("ab_mcts:batch=0", "batch must be at least 1"),
    ("mcts:samples_per_action=0", "samples_per_action must be at least 1"),
])
def test_bad_mcts_options(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        solve(Q, backend=FakeBackend(), strategy=spec, n=4, verifier="self_judge")


def test_missing_treequest_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from ttscale.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "treequest", None)
    with pytest.raises(MissingExtra, match=r"pip install 'ttscale\[search\]'"):
        MCTS(n=4)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [MCTS(n=3), ABMCTS(n=3, batch=2)])
def test_real_model_mcts(small_backend: Any, strategy: Any) -> None:
    from ttscale.verifiers.self_judge import SelfJudge

    judge = SelfJudge(small_backend)
    state, env = search(strategy, small_backend, judge)
    r = strategy.finish(state, env)
    assert len(state.nodes) == 3 and len(r.traces) == 3
    assert all(0.0 <= (n.value or 0.0) <= 1.0 for n in state.nodes)
    policy = sum(small_backend.count_tokens(
        solve_prompt(Q) if n.parent is None else refine_prompt(
            Q, state.nodes[n.parent].text, state.nodes[n.parent].value))
        for n in state.nodes)
    judged = sum(small_backend.count_tokens(judge.prompt(Q, n.text)) for n in state.nodes)
    assert r.usage.prompt_tokens == policy + judged
    assert r.usage.completion_tokens == sum(n.tokens for n in state.nodes) + 3
