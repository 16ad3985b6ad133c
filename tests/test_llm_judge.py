"""The LLM judge on a scripted backend: verdict counts, averages, notes, pairwise, usage."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from ttscale.backends.fake import FakeBackend, prompt_text
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.solve import solve
from ttscale.types import GenerateOutput, Prompt
from ttscale.verifiers.llm_judge import (
    LLMJudge,
    break_tie,
    lower_bound,
    parse_choice,
    parse_verdict,
    pick_pessimistic,
)
from ttscale.verifiers.spec import build_verifier


class Counting(FakeBackend):
    """A fake backend that also counts its generate calls."""

    generate_calls = 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        self.generate_calls += 1
        return super().generate(prompts, params)


def _by_trace(verdicts: dict[str, list[str]]) -> Counting:
    """Verdict texts per trace (found by a word of its solution), one per sample index."""
    def script(prompt: Prompt, i: int) -> str:
        text = prompt_text(prompt)
        key = next(k for k in verdicts if k in text)
        return verdicts[key][i % len(verdicts[key])]
    return Counting(script=script)


def test_verdicts_are_averaged_from_one_batched_call() -> None:
    fb = _by_trace({"alpha": ["Fine. \\boxed{Yes}", "\\boxed{No}", "Verdict: correct", "yes"],
                    "beta": ["Wrong at step 2. \\boxed{No}"]})
    judge = LLMJudge(fb, k=4)
    out = judge.score("q", ["alpha 4", "beta 5"])
    assert fb.generate_calls == 1
    assert [p.n for _, p in fb.calls] == [4, 4]  # k samples of each trace
    assert out.step_scores == ((0.75,), (0.0,))
    assert out.notes == ()
    assert judge.reduce(out.step_scores[0]) == 0.75


def test_no_verdict_is_neutral_counted_and_noted() -> None:
    fb = _by_trace({"alpha": ["\\boxed{Yes}", "I am not sure.", "\\boxed{Yes}", "hmm"]})
    v = LLMJudge(fb, k=4).verdicts("q", ["alpha", "alpha again"])
    assert v.scores[0] == (1.0, 0.5, 1.0, 0.5)
    assert (v.missing, v.total) == (4, 8)
    out = LLMJudge(fb, k=4).score("q", ["alpha"])
    assert out.step_scores == ((0.75,),)
    assert out.notes == ("llm_judge gave no verdict in 2 of 4 verdicts; scored 0.5",)


def test_usage_is_exact_to_the_token() -> None:
    fb = _by_trace({"alpha": ["ok \\boxed{Yes}", "\\boxed{No}"], "beta": ["\\boxed{Yes}"]})
    judge = LLMJudge(fb, k=3)
    traces = ["alpha one two", "beta"]
    out = judge.score("What is x?", traces)
    prompts = [fb.count_tokens(judge.prompt("What is x?", t)) for t in traces]
    completions = [2 + 1 + 2, 1 + 1 + 1]  # alpha's samples 0, 1, 2 cycle ok-yes, no, ok-yes
    assert out.usage.prompt_tokens == 3 * sum(prompts)  # prompt counted once per sample
    assert out.usage.completion_tokens == sum(completions)
    assert out.usage.flops == 2 * fb.params_count * (3 * sum(prompts) + sum(completions))
    assert [u.prompt_tokens for u in out.per_trace] == [3 * p for p in prompts]
    assert [u.completion_tokens for u in out.per_trace] == completions
    assert math.fsum(u.flops for u in out.per_trace) == out.usage.flops
    assert judge.reserve_tokens(100) == 3 * (100 + 80 + 1024)


def test_logprob_mode_reads_p_yes() -> None:
    fb = Counting(responses=["Yes"], yes_logprob=math.log(0.8))
    judge = LLMJudge(fb, k=4, logprob=True)
    out = judge.score("2+2?", ["4", "5"])
    assert [round(s[0], 6) for s in out.step_scores] == [0.8, 0.8]
    assert fb.calls[0][1].max_tokens == 1 and fb.calls[0][1].n == 1
    assert out.usage.completion_tokens == 2
    silent = LLMJudge(FakeBackend(responses=["Hmm"]), logprob=True).score("q", ["a"])
    assert silent.step_scores == ((0.5,),) and "no verdict in 1 of 1" in silent.notes[0]


def test_pairwise_cancels_position_bias() -> None:
    always_a = Counting(responses=["\\boxed{A}"])
    duel = LLMJudge(always_a, k=3).pairwise("q", "x = 1", "x = 2")
    assert duel.p_first == 0.5 and duel.winner is None  # A in both orders: no preference
    assert always_a.generate_calls == 1 and len(always_a.calls) == 2  # both orders, one call
    assert duel.usage.calls == 2

    def knows(prompt: Prompt, i: int) -> str:  # the solution "x = 2" is right, wherever it is
        text = prompt_text(prompt)
        return "\\boxed{A}" if text.index("x = 2") < text.index("x = 1") else "\\boxed{B}"

    duel = LLMJudge(FakeBackend(script=knows), k=2).pairwise("q", "x = 1", "x = 2")
    assert duel.votes == (0.0, 0.0, 0.0, 0.0) and duel.winner == 1
    duel = LLMJudge(FakeBackend(script=knows), k=2).pairwise("q", "x = 2", "x = 1")
    assert duel.p_first == 1.0 and duel.winner == 0
    unsure = LLMJudge(FakeBackend(responses=["both?"]), k=1).pairwise("q", "a", "b")
    assert unsure.missing == 2 and unsure.p_first == 0.5


def test_break_tie_asks_only_when_the_top_two_tie() -> None:
    fb = Counting(script=lambda p, i: "\\boxed{B}")  # always the second shown: a draw
    judge = LLMJudge(fb, k=1)
    clear = break_tie(judge, "q", ["a", "b"], [0.2, 0.9])
    assert (clear.index, clear.pairwise, fb.generate_calls) == (1, None, 0)
    draw = break_tie(judge, "q", ["a", "b", "c"], [0.5, 0.9, 0.9])
    assert draw.index == 1 and draw.pairwise is not None and draw.usage.calls == 2


def test_pessimistic_prefers_the_consistent_candidate() -> None:
    assert lower_bound([1.0, 0.0], z=0) == 0.5
    assert lower_bound([1.0, 1.0, 0.0, 1.0], z=2) == pytest.approx(0.75 - 2 * 0.5 / 2)
    # the second has the higher mean (0.925 > 0.9) but a lower bound (0.85 < 0.9)
    steady, spread = [0.9, 0.9, 0.9, 0.9], [1.0, 1.0, 1.0, 0.7]
    assert pick_pessimistic([steady, spread]) == 0
    assert pick_pessimistic([steady, spread], z=0) == 1  # z=0: the best mean
    assert pick_pessimistic([[1, 1, 1, 0], [1, 1]]) == 1
    with pytest.raises(ConfigError):
        pick_pessimistic([[1.0], []])
    # pessimistic=True: a trace scores its bound, so best-of-N picks by the bound
    fb = _by_trace({"sure": ["\\boxed{Yes}"],
                    "split": ["\\boxed{Yes}", "\\boxed{No}"],
                    "never": ["\\boxed{No}"]})
    traces = ["sure", "split", "never"]
    mean = LLMJudge(fb, k=4).score("q", traces).step_scores
    low = LLMJudge(fb, k=4, pessimistic=True, z=1.0).score("q", traces).step_scores
    assert mean == ((1.0,), (0.5,), (0.0,))
    sd = math.sqrt(4 * 0.25 / 3)
    assert low[0][0] == 1.0 and low[1][0] == pytest.approx(0.5 - sd / 2)
    wide = LLMJudge(fb, k=4, pessimistic=True, z=3.0).score("q", ["split"]).step_scores
    assert wide == ((0.0,),)  # 0.5 - 3 * 0.577 / 2 < 0: clamped to [0, 1]


def test_parsing() -> None:
    assert parse_verdict("... \\boxed{\\text{Yes}}") == 1.0
    assert parse_verdict("\\boxed{Yes} wait, no: \\boxed{No}") == 0.0  # the last one
    assert parse_verdict("Verdict: incorrect") == 0.0
    assert parse_verdict("No, step 2 divides by zero.") == 0.0
    assert parse_verdict("The final answer is 4.") is None
    assert parse_choice("\\boxed{b}") == "B" and parse_choice("A.") == "A"
    assert parse_choice("AB") is None


def test_bad_settings_and_solve_by_spec() -> None:
    fb = FakeBackend()
    with pytest.raises(ConfigError, match="k must be"):
        LLMJudge(fb, k=0)
    with pytest.raises(ConfigError, match="temperature 0"):
        LLMJudge(fb, k=4, temperature=0.0)
    with pytest.raises(ConfigError, match="top_logprobs must be between 0 and 20, got -1"):
        LLMJudge(fb, top_logprobs=-1)
    with pytest.raises(ConfigError, match="does not take colour"):
        build_verifier("llm_judge,colour=1", fb)
    judge = build_verifier("llm_judge,k=2,pessimistic=true", fb)
    assert isinstance(judge, LLMJudge) and judge.k == 2 and judge.pessimistic
    fb = FakeBackend(script=lambda p, i: "\\boxed{No}" if "Proposed solution" in prompt_text(p)
                     and "5" in prompt_text(p) else ("\\boxed{Yes}" if "Proposed" in
                                                     prompt_text(p) else f"\\boxed{{{4 + i}}}"))
    r = solve("q", backend=fb, strategy="best_of_n", n=2, verifier="llm_judge,k=2")
    assert r.answer == "4"
    assert [t.score for t in r.traces] == [1.0, 0.0]
