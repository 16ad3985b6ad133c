"""Sequential strategies: budget forcing, revision, RSA, abstraction-first.

The scripted backend checks what each strategy built (rounds, members, which parents or
attempts each generation read, calls per round) and its token accounting to the token: the
expected prompts are rebuilt here from the scripted texts and measured with the backend's
tokenizer. Slow tests run each strategy on the real 135M model through llama.cpp.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ttscale import Budget, solve
from ttscale.answers import solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.budget import Accountant
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.strategies.abstraction import AbstractionFirst, propose_prompt, solver_prompt
from ttscale.strategies.base import Env, run
from ttscale.strategies.budget_forcing import BudgetForcing, split_end
from ttscale.strategies.revision import Revision, revise_prompt
from ttscale.strategies.rsa import RSA, aggregate_prompt, draw_parents
from ttscale.types import Chat, GenerateOutput, Prompt, Result

Q = "What is 3 + 4?"
P = solve_prompt(Q)
CUE = "The answer is \\boxed{"
LONG = " ".join(f"w{i}" for i in range(40))


class Batches(FakeBackend):
    """The scripted backend, also recording each ``generate`` call: (prompts, params)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches: list[tuple[int, SamplingParams]] = []

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        self.batches.append((len(prompts), params))
        return super().generate(prompts, params)


def go(strategy: Any, fb: FakeBackend, budget: Budget | None = None,
       **sampling: Any) -> Result:
    env = Env(fb, Accountant(budget or Budget()), SamplingParams(**sampling))
    return run(strategy, Q, env)


def prompt_tokens(fb: FakeBackend, prompts: Sequence[Prompt]) -> int:
    return sum(fb.count_tokens(p) for p in prompts)


def words(texts: Sequence[str]) -> int:
    return sum(len(t.split()) for t in texts)


def prefilled(prefill: str) -> Chat:
    return Chat(P.messages, prefill=prefill)


def sent(fb: FakeBackend) -> list[Prompt]:
    return [p for p, _ in fb.calls]


# --- budget forcing ---------------------------------------------------------------------

# The scripted backend joins words with single spaces: no newlines in its texts.
FIRST = "3 + 4 = 7. The answer is \\boxed{7}."  # ends early: 9 words
MORE = "let me check: 4 + 3 = 7 too. So the answer is \\boxed{7}."  # 14 words


def forcing_script(p: Prompt, i: int) -> str:
    assert isinstance(p, Chat)
    if p.prefill.endswith(CUE):
        return "7}."
    if p.prefill.endswith("Wait,"):
        return MORE
    return FIRST if i % 2 == 0 else LONG


def test_capped_thinking_gets_the_answer_cue_and_exact_usage() -> None:
    fb = Batches(script=lambda p, _i: "7}." if p.prefill.endswith(CUE) else LONG)
    r = solve(Q, backend=fb, strategy="budget_forcing", n=1, max_tokens=16)
    thinking = " ".join(f"w{i}" for i in range(16))
    answer_prompt = prefilled(thinking + "\n\n" + CUE)
    assert sent(fb) == [P, answer_prompt]
    assert [params.max_tokens for _, params in fb.calls] == [16, 24]
    assert r.answer == "7" and r.traces[0].text == thinking + "\n\n" + CUE + "7}."
    # the answer call re-reads the prompt and all the thinking
    assert r.usage.prompt_tokens == prompt_tokens(fb, [P, answer_prompt])
    assert r.usage.completion_tokens == 16 + 1 == r.traces[0].completion_tokens
    assert r.usage.calls == 2
    [trace] = r.tree["children"]
    assert (trace["thinking_tokens"], trace["answer_tokens"], trace["capped"]) == (16, 1, True)
    assert [s["kind"] for s in trace["children"]] == ["think", "cue", "answer"]
    assert "".join(s["text"] for s in trace["children"]) == r.traces[0].text
    assert "thinking tokens per trace 16 (budget 16" in r.notes[-1]


def test_early_end_is_dropped_and_extended_with_wait() -> None:
    fb = Batches(script=forcing_script)
    r = go(BudgetForcing(min_thinking=60, max_extensions=2), fb, max_tokens=64)
    p2 = split_end(FIRST)[0] + "Wait,"
    p3 = p2 + split_end(MORE)[0] + "Wait,"
    assert p2 == "3 + 4 = 7. Wait,"
    assert sent(fb) == [P, prefilled(p2), prefilled(p3)]
    # the budget left shrinks with the thinking spent: 64, 64 - 9, 64 - 23
    assert [params.max_tokens for _, params in fb.calls] == [64, 55, 41]
    assert r.usage.prompt_tokens == prompt_tokens(fb, [P, prefilled(p2), prefilled(p3)])
    assert r.usage.completion_tokens == 9 + 14 + 14 == r.traces[0].completion_tokens
    assert r.traces[0].text == p3 + MORE and r.answer == "7"
    [trace] = r.tree["children"]
    assert (trace["thinking_tokens"], trace["extensions"], trace["capped"]) == (37, 2, False)
    assert [s["kind"] for s in trace["children"]] == [
        "think", "end", "wait", "think", "end", "wait", "think"]
    ends = [s for s in trace["children"] if s["kind"] == "end"]
    assert all(s["pruned"] for s in ends)
    assert ends[0]["text"] == "The answer is \\boxed{7}."


def test_no_extension_once_min_thinking_is_reached() -> None:
    fb = Batches(script=forcing_script)
    r = go(BudgetForcing(min_thinking=20, max_extensions=5), fb, max_tokens=64)
    assert len(fb.calls) == 2 and r.tree["children"][0]["extensions"] == 1
    assert r.tree["children"][0]["thinking_tokens"] == 23


def test_an_end_without_an_answer_gets_the_cue() -> None:
    fb = Batches(script=lambda p, _i: "7}." if p.prefill.endswith(CUE)
                 else "I think it is seven.")
    r = go(BudgetForcing(), fb, max_tokens=64)
    assert sent(fb) == [P, prefilled("I think it is seven.\n\n" + CUE)]
    assert r.answer == "7" and r.tree["children"][0]["capped"] is False


def test_traces_are_forced_side_by_side_and_vote() -> None:
    # trace 0 ends early (extended), trace 1 thinks to the budget (capped)
    fb = Batches(script=forcing_script)
    r = go(BudgetForcing(n=2, budget=16, min_thinking=12), fb, max_tokens=64)
    assert [(k, params.n, params.max_tokens) for k, params in fb.batches] == [
        (1, 2, 16), (1, 1, 16 - 9), (2, 1, 24)]
    assert r.answer == "7" and r.classes[0].votes == 2
    kids = r.tree["children"]
    assert [(k["thinking_tokens"], k["extensions"], k["capped"]) for k in kids] == [
        (16, 1, True), (16, 0, True)]
    assert r.usage.completion_tokens == 9 + 7 + 16 + 1 + 1


def test_no_budget_for_the_answer_keeps_what_was_written() -> None:
    fb = Batches(script=lambda p, _i: LONG)
    cap = fb.count_tokens(P) + 16 + 5
    r = go(BudgetForcing(), fb, budget=Budget(max_tokens=cap), max_tokens=16)
    assert len(fb.calls) == 1 and r.budget_limited and r.usage.total_tokens <= cap
    assert r.answer == "15"  # the last number of what it thought


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"budget": 8}, "below one thinking step of 16 tokens"),
    ({"budget": 32, "min_thinking": 64}, "min_thinking 64 is above the thinking budget"),
    ({"answer_tokens": 0}, "answer_tokens must be positive"),
    ({"max_extensions": -1}, "must be >= 0"),
])
def test_budget_forcing_refuses_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BudgetForcing(**kwargs)


def test_budget_forcing_refuses_a_small_max_tokens_before_any_call() -> None:
    fb = FakeBackend()
    with pytest.raises(ConfigError, match="max_tokens 8"):
        solve(Q, backend=fb, strategy="budget_forcing", max_tokens=8)
    assert fb.calls == []


# --- revision ----------------------------------------------------------------------------

def revision_script(p: Prompt, i: int) -> str:
    assert isinstance(p, Chat)
    text = p.messages[-1].content
    if "Attempt 1:" not in text:
        return f"first{i} \\boxed{{{i}}}"
    return f"fixed({text.split('Attempt 1:')[1].split()[0]}) \\boxed{{9}}"


def test_revision_chains_read_their_own_last_attempts() -> None:
    fb = Batches(script=revision_script)
    r = go(Revision(n=2, rounds=2, window=2), fb)
    t = [f"first{c} \\boxed{{{c}}}" for c in range(2)]
    fixed = [f"fixed(first{c}) \\boxed{{9}}" for c in range(2)]
    expected = [P, revise_prompt(Q, [t[0]]), revise_prompt(Q, [t[1]]),
                revise_prompt(Q, [t[0], fixed[0]]), revise_prompt(Q, [t[1], fixed[1]])]
    assert sent(fb) == expected
    assert [(k, params.n) for k, params in fb.batches] == [(1, 2), (2, 1), (2, 1)]
    assert [tr.text for tr in r.traces] == [*t, *fixed, *fixed]
    chains = r.tree["children"]
    assert [[a["trace"] for a in c["children"]] for c in chains] == [[0, 2, 4], [1, 3, 5]]
    assert [a["reads"] for a in chains[0]["children"]] == [[], [0], [0, 1]]
    assert r.answer == "9" and r.classes[0].traces == (4, 5)
    assert r.usage.prompt_tokens == prompt_tokens(fb, [P, *expected])  # P once per sample
    assert r.usage.completion_tokens == words([tr.text for tr in r.traces])
    assert r.usage.calls == 5


def test_revision_answer_last_or_majority() -> None:
    def script(p: Prompt, _i: int) -> str:
        return "\\boxed{2}" if "Attempt 1:" in str(p) else "\\boxed{1}"
    last = go(Revision(n=3, rounds=1), FakeBackend(script=script))
    every = go(Revision(n=3, rounds=1, answer="majority"), FakeBackend(script=script))
    assert last.answer == "2" and [c.votes for c in last.classes] == [3]
    # 3 votes each: the tie goes to the class seen first, the first attempts'
    assert every.answer == "1" and [c.votes for c in every.classes] == [3, 3]


def test_revision_stops_when_a_round_does_not_fit() -> None:
    fb = FakeBackend(script=revision_script)
    t = [f"first{c} \\boxed{{{c}}}" for c in range(2)]
    fixed = [f"fixed(first{c}) \\boxed{{9}}" for c in range(2)]
    round0 = prompt_tokens(fb, [P, P]) + words(t)
    round1 = prompt_tokens(fb, [revise_prompt(Q, [x]) for x in t]) + words(fixed)
    worst2 = prompt_tokens(fb, [revise_prompt(Q, [x]) for x in fixed]) + 2 * 10
    cap = round0 + round1 + worst2 - 1
    r = go(Revision(n=2, rounds=2), fb, budget=Budget(max_tokens=cap), max_tokens=10)
    assert len(r.traces) == 4 and r.budget_limited and r.answer == "9"
    assert r.usage.total_tokens == round0 + round1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rounds": 0}, "rounds must be at least 1"),
    ({"window": 0}, "window must show at least 1"),
    ({"answer": "best"}, "answer must be one of last, majority"),
])
def test_revision_refuses_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Revision(**kwargs)


# --- RSA ---------------------------------------------------------------------------------

def rsa_script(p: Prompt, i: int) -> str:
    text = p.messages[-1].content  # type: ignore[union-attr]
    if "Solution 1:" not in text:
        return f"pop{i} \\boxed{{{i % 2}}}"
    shown = re.findall(r"Solution \d+:\n(\S+)", text)
    return f"agg({','.join(shown)}) \\boxed{{7}}"


def test_rsa_members_read_their_drawn_parents_in_one_call_per_round() -> None:
    fb = Batches(script=rsa_script)
    r = go(RSA(n=4, k=2, rounds=2), fb, seed=3)
    assert [(k, params.n, params.seed) for k, params in fb.batches] == [
        (1, 4, 3), (4, 1, 3 + 4), (4, 1, 3 + 8)]
    rounds = r.tree["children"]
    assert [len(rd["children"]) for rd in rounds] == [4, 4, 4]
    expected = [P]
    for t in (1, 2):
        previous = [m["trace"] for m in rounds[t - 1]["children"]]
        parents = [tuple(m["parents"]) for m in rounds[t]["children"]]
        assert parents == draw_parents(4, 2, 3, t)
        for m, ps in zip(rounds[t]["children"], parents, strict=True):
            shown = [r.traces[previous[j]].text for j in ps]
            expected.append(aggregate_prompt(Q, shown))
            assert m["text"] == "agg(" + ",".join(s.split()[0] for s in shown) + ") \\boxed{7}"
    assert sent(fb) == expected
    assert r.usage.prompt_tokens == 4 * fb.count_tokens(P) + prompt_tokens(fb, expected[1:])
    assert r.usage.completion_tokens == words([tr.text for tr in r.traces])
    assert r.usage.calls == 9 and len(r.traces) == 12


def test_rsa_answer_is_the_last_population_majority() -> None:
    fb = FakeBackend(script=lambda p, _i: "\\boxed{2}" if "Solution 1:" in str(p)
                     else "\\boxed{1}")
    r = go(RSA(n=4, k=2, rounds=1), fb)
    # over all 8 traces it would be a 4-4 tie, won by the first population's 1
    assert r.answer == "2" and [(c.votes, c.traces) for c in r.classes] == [(4, (4, 5, 6, 7))]
    assert [rd["majority"] for rd in r.tree["children"]] == ["1", "2"]


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 1), (2, 2), (3, 1), (5, 5), (8, 4)])
def test_rsa_parents_are_distinct_and_seeded(n: int, k: int) -> None:
    drawn = draw_parents(n, k, seed=0, round_=1)
    assert len(set(drawn)) == n  # no two members get the same prompt
    assert all(len(set(d)) == k and all(0 <= j < n for j in d) for d in drawn)
    assert drawn == draw_parents(n, k, seed=0, round_=1)
    assert draw_parents(8, 3, 0, 1) != draw_parents(8, 3, 1, 1)


def test_rsa_default_k_fits_small_populations() -> None:
    r = solve(Q, backend=FakeBackend(), strategy="rsa", n=1)
    assert r.tree["k"] == 1 and len(r.traces) == 4


def test_rsa_stops_when_a_round_does_not_fit() -> None:
    fb = FakeBackend(script=rsa_script)
    pop = [f"pop{i} \\boxed{{{i % 2}}}" for i in range(4)]
    round0 = 4 * fb.count_tokens(P) + words(pop)
    cap = round0 + 4 * 10  # the aggregation prompts alone cost more than 40
    r = go(RSA(n=4, k=2), fb, budget=Budget(max_tokens=cap), max_tokens=10)
    assert r.budget_limited and len(r.traces) == 4 and r.usage.total_tokens == round0
    assert r.answer == "0"  # the first population's vote, ties to the first class
    part = go(RSA(n=4, k=2), FakeBackend(script=rsa_script),
              budget=Budget(max_tokens=2 * (fb.count_tokens(P) + 10)), max_tokens=10)
    assert len(part.traces) == 2 and part.budget_limited and part.usage.calls == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 2, "k": 3}, "k must be between 1 and the population n=2, got 3"),
    ({"k": 0}, "k must be between 1"),
    ({"rounds": 0}, "rounds must be at least 1"),
])
def test_rsa_refuses_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RSA(**kwargs)


# --- abstraction-first -------------------------------------------------------------------

def hint_script(p: Prompt, i: int) -> str:
    text = p.messages[-1].content  # type: ignore[union-attr]
    if "Do not solve" in text:
        return f"Idea{i} is useful here"
    return f"using {text.split('help:')[1].split()[0]} \\boxed{{5}}"


def test_abstraction_spreads_solutions_over_hints() -> None:
    fb = Batches(script=hint_script)
    r = go(AbstractionFirst(n=6, k=4), fb, seed=2)
    assert [(k, params.n, params.seed, params.max_tokens) for k, params in fb.batches] == [
        (1, 4, 2, 96), (4, 1, 2, 1024), (2, 1, 3, 1024)]
    hints = [f"Idea{i} is useful here" for i in range(2, 6)]
    nodes = r.tree["children"]
    assert [h["text"] for h in nodes] == hints
    assert [len(h["children"]) for h in nodes] == [2, 2, 1, 1]
    for h, node in zip(hints, nodes, strict=True):
        assert all(s["text"] == f"using {h.split()[0]} \\boxed{{5}}" for s in node["children"])
    solved = [solver_prompt(Q, h) for h in hints]
    assert sent(fb) == [propose_prompt(Q), *solved, *solved[:2]]
    assert r.usage.prompt_tokens == (4 * fb.count_tokens(propose_prompt(Q))
                                     + prompt_tokens(fb, [*solved, *solved[:2]]))
    assert r.usage.completion_tokens == words(hints) + words([t.text for t in r.traces])
    assert r.usage.calls == 7 and r.answer == "5" and len(r.traces) == 6


def test_abstraction_divisible_n_is_one_solver_call_and_hints_are_capped() -> None:
    fb = Batches(script=hint_script)
    r = go(AbstractionFirst(n=8, k=4, hint_tokens=2), fb)
    assert [(k, params.n) for k, params in fb.batches] == [(1, 4), (4, 2)]
    assert [h["text"] for h in r.tree["children"]] == [
        f"Idea{i} is" for i in range(4)]
    assert r.usage.completion_tokens == 4 * 2 + words([t.text for t in r.traces])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 2, "k": 3}, "k must be between 1 and n=2, got 3"),
    ({"hint_tokens": 0}, "hint_tokens must be positive"),
])
def test_abstraction_refuses_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AbstractionFirst(**kwargs)


# --- the tree reaches solve --json and the eval store ------------------------------------

def test_trees_reach_the_eval_store_and_report(tmp_path: Path) -> None:
    from ttscale.evaluation.datasets import Problem
    from ttscale.evaluation.harness import EvalConfig, Harness, run_settings
    from ttscale.evaluation.report.html import question_view
    from ttscale.evaluation.runs.cache import CachedBackend
    from ttscale.evaluation.runs.records import load_records
    from ttscale.evaluation.runs.store import Store

    names = ("budget_forcing", "revision", "rsa", "abstraction")
    cfg = EvalConfig(strategies=names, ns=(1, 2))
    settings = run_settings(cfg, model="fake", model_sha256="f" * 64, dataset="t",
                            split="test")
    store = Store.open(tmp_path, settings)
    fb = FakeBackend(script=lambda _p, i: f"so \\boxed{{{i % 2}}}")
    Harness(cfg, CachedBackend(fb, store, "f" * 64), store).run([Problem("q0", Q, "7")])
    Harness(cfg, CachedBackend(fb, store, "f" * 64), store).run([Problem("q0", Q, "7")])
    store.close()
    _settings, [record] = load_records(tmp_path)
    view = question_view(record)
    assert sorted(t["strategy"] for t in view["trees"]) == sorted(
        f"{s}, n={n}, seed=0" for s in names for n in (1, 2))  # once each, after a rerun
    rsa = next(t["tree"] for t in view["trees"] if t["strategy"] == "rsa, n=2, seed=0")
    assert rsa["strategy"] == "rsa" and len(rsa["children"]) == 4
    json.dumps(view)


def test_result_dict_carries_the_tree() -> None:
    r = solve(Q, backend=FakeBackend(), strategy="revision", n=2)
    out = json.loads(json.dumps(r.to_dict()))
    assert out["tree"]["strategy"] == "revision"
    assert [len(c["children"]) for c in out["tree"]["children"]] == [3, 3]
    assert solve(Q, backend=FakeBackend(), strategy="majority", n=2).tree is None


# --- the real 135M model -----------------------------------------------------------------

def _segments_usage(tree: dict[str, Any]) -> tuple[int, int]:
    segs = [s for t in tree["children"] for s in t["children"] if "tokens" in s]
    return sum(s["prompt_tokens"] for s in segs), sum(s["tokens"] for s in segs)


def _nodes(tree: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for group in tree["children"] for m in group["children"]]


REAL_Q = "Tom has 3 apples and buys 5 more. How many apples does he have?"


def _real(strategy: Any, backend: Any, **sampling: Any) -> Result:
    env = Env(backend, Accountant(), SamplingParams(**{"max_tokens": 32, "temperature": 0.7,
                                                       **sampling}))
    return run(strategy, REAL_Q, env)


@pytest.mark.slow
def test_budget_forcing_on_the_real_model(small_backend: Any) -> None:
    r = _real(BudgetForcing(min_thinking=24, max_extensions=1), small_backend)
    [trace] = r.tree["children"]
    assert 0 < trace["thinking_tokens"] <= 32
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == _segments_usage(r.tree)
    assert r.traces[0].completion_tokens == r.usage.completion_tokens
    # each call re-read the prompt and the transcript so far, as llama.cpp counts them
    text = ""
    for seg in trace["children"]:
        if "prompt_tokens" in seg:
            assert seg["prompt_tokens"] == small_backend.count_tokens(
                Chat(solve_prompt(REAL_Q).messages, prefill=text))
        if not seg.get("pruned"):
            text += seg["text"]
    assert text == r.traces[0].text


@pytest.mark.slow
def test_revision_on_the_real_model(small_backend: Any) -> None:
    r = _real(Revision(n=2, rounds=1), small_backend)
    nodes = _nodes(r.tree)
    assert len(r.traces) == 4 and [n["reads"] for n in nodes] == [[], [0], [], [0]]
    assert r.usage.prompt_tokens == sum(n["prompt_tokens"] for n in nodes)
    assert r.usage.completion_tokens == sum(n["tokens"] for n in nodes)


@pytest.mark.slow
def test_rsa_on_the_real_model(small_backend: Any) -> None:
    r = _real(RSA(n=2, k=2, rounds=1), small_backend)
    rounds = r.tree["children"]
    assert [len(rd["children"]) for rd in rounds] == [2, 2]
    assert [sorted(m["parents"]) for m in rounds[1]["children"]] == [[0, 1], [0, 1]]
    nodes = _nodes(r.tree)
    assert r.usage.prompt_tokens == sum(n["prompt_tokens"] for n in nodes)
    assert r.usage.completion_tokens == sum(n["tokens"] for n in nodes)
    # an aggregation prompt holds both parents: longer than the question's prompt
    assert all(m["prompt_tokens"] > rounds[0]["children"][0]["prompt_tokens"]
               for m in rounds[1]["children"])


@pytest.mark.slow
def test_abstraction_on_the_real_model(small_backend: Any) -> None:
    r = _real(AbstractionFirst(n=2, k=2, hint_tokens=16), small_backend)
    hints = r.tree["children"]
    assert len(hints) == 2 and all(0 < h["tokens"] <= 16 for h in hints)
    assert [len(h["children"]) for h in hints] == [1, 1]
    nodes = _nodes(r.tree)
    assert r.usage.prompt_tokens == (sum(h["prompt_tokens"] for h in hints)
                                     + sum(n["prompt_tokens"] for n in nodes))
    assert r.usage.completion_tokens == (sum(h["tokens"] for h in hints)
                                         + sum(n["tokens"] for n in nodes))
