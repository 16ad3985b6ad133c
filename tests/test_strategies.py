"""Strategy logic on the scripted backend: voting, merging, ties, budget stops, usage."""

from __future__ import annotations

import math

import pytest

from ttscale import Budget, solve
from ttscale.backends.fake import FakeBackend
from ttscale.errors import BudgetExceeded, ConfigError
from ttscale.types import Chat


def test_majority_merges_equivalent_answers(fake: FakeBackend) -> None:
    r = solve("What is 2+2?", backend=fake, strategy="majority", n=6)
    assert r.answer == "4"
    assert [(c.answer, c.votes) for c in r.classes] == [("4", 4), ("5", 2)]
    assert r.classes[0].traces == (0, 2, 3, 5)
    assert len(r.traces) == 6 and not r.budget_limited


def test_majority_is_one_batched_call(fake: FakeBackend) -> None:
    solve("q", backend=fake, strategy="majority", n=8)
    assert len(fake.calls) == 1 and fake.calls[0][1].n == 8


def test_tie_goes_to_earliest_class() -> None:
    fb = FakeBackend(responses=["\\boxed{7}", "\\boxed{3}", "\\boxed{3}", "\\boxed{7}"])
    assert solve("q", backend=fb, n=4).answer == "7"
    fb2 = FakeBackend(responses=["\\boxed{3}", "\\boxed{7}"])
    assert solve("q", backend=fb2, n=2).answer == "3"


def test_no_answer_traces_do_not_vote() -> None:
    fb = FakeBackend(responses=["I give up", "\\boxed{9}"])
    r = solve("q", backend=fb, n=4)
    assert r.answer == "9" and r.classes[0].votes == 2
    # "I give up" has no number: its answer is None.
    assert [t.answer for t in r.traces] == [None, "9", None, "9"]


def test_usage_is_the_sum_of_every_sample(fake: FakeBackend) -> None:
    r = solve("one two three", backend=fake, n=3)
    prompt_words = len(fake.calls[0][0].messages[0].content.split()) + 3  # type: ignore[union-attr]
    completion = sum(t.completion_tokens for t in r.traces)
    assert r.usage.prompt_tokens == 3 * prompt_words
    assert r.usage.completion_tokens == completion == 4 + 2 + 2
    assert r.usage.calls == 1
    assert r.usage.flops == 2 * fake.params_count * r.usage.total_tokens


def test_greedy_uses_temperature_zero(fake: FakeBackend) -> None:
    r = solve("q", backend=fake, strategy="greedy", temperature=0.9)
    assert fake.calls[0][1].temperature == 0.0 and fake.calls[0][1].n == 1
    assert r.answer == "4" and len(r.traces) == 1


def test_budget_stops_early_and_flags() -> None:
    fb = FakeBackend(responses=["\\boxed{1}"])
    per_sample = fb.count_tokens(_prompt("q")) + 10
    r = solve("q", backend=fb, n=8, max_tokens=10, budget=Budget(max_tokens=3 * per_sample + 1))
    assert len(r.traces) == 3 and r.budget_limited and r.answer == "1"
    assert r.usage.total_tokens <= 3 * per_sample + 1


def test_budget_too_small_for_one_sample() -> None:
    with pytest.raises(BudgetExceeded, match="cannot pay for one sample"):
        solve("q", backend=FakeBackend(), n=2, max_tokens=100, budget=50)


def test_best_of_n_reserves_verification_in_budget() -> None:
    fb = FakeBackend(responses=["\\boxed{2}"], yes_logprob=math.log(0.9))
    per = fb.count_tokens(_prompt("q")) + 10
    # Enough for 4 bare samples, but each must also pay for its judgement.
    r = solve("q", backend=fb, strategy="best_of_n", verifier="self_judge", n=4, max_tokens=10,
              budget=Budget(max_tokens=4 * per))
    assert 0 < len(r.traces) < 4 and r.budget_limited
    assert r.usage.total_tokens <= 4 * per


def test_weighted_best_of_n_sums_scores() -> None:
    def script(prompt: object, i: int) -> str:
        text = str(prompt)
        if "Proposed solution" in text:  # the judge: Yes-probability encoded below
            return "Yes"
        return ["\\boxed{1}", "\\boxed{2}", "\\boxed{2}"][i % 3]

    fb = FakeBackend(script=script, yes_logprob=math.log(0.6))
    r = solve("q", backend=fb, strategy="weighted_best_of_n", verifier="self_judge", n=3)
    assert r.answer == "2"
    assert [round(c.score or 0, 2) for c in r.classes] == [0.6, 1.2]
    assert all(t.score == pytest.approx(0.6) for t in r.traces)
    assert r.usage.calls == 1 + 3  # one sampling call, three judge prompts


def test_best_of_n_picks_highest_trace() -> None:
    def script(prompt: object, i: int) -> str:
        return ["\\boxed{1}", "\\boxed{2}", "\\boxed{2}"][i % 3]

    fb = FakeBackend(script=script, yes_logprob=math.log(0.5))
    scores = iter([0.9, 0.2, 0.3])

    class Judge:
        name = "scripted"

        def score(self, question: str, traces: object) -> object:
            from ttscale.types import Usage
            from ttscale.verifiers.base import VerifierOutput

            return VerifierOutput(tuple((next(scores),) for _ in range(3)), Usage(calls=1))

        def reduce(self, steps: object) -> float:
            return float(steps[-1])  # type: ignore[index]

        def reserve_tokens(self, trace_max_tokens: int) -> int:
            return 0

    r = solve("q", backend=fb, strategy="best_of_n", verifier=Judge(), n=3)  # type: ignore[arg-type]
    assert r.answer == "1"


def test_verifier_strategy_needs_a_verifier() -> None:
    with pytest.raises(ConfigError, match="needs a verifier"):
        solve("q", backend=FakeBackend(), strategy="best_of_n")


def test_judge_without_verdict_is_neutral_and_noted() -> None:
    fb = FakeBackend(responses=["\\boxed{3}"])  # no yes/no among top log-probabilities
    r = solve("q", backend=fb, strategy="best_of_n", verifier="self_judge", n=2)
    assert all(t.score == 0.5 for t in r.traces)
    assert any("no verdict" in n for n in r.notes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"strategy": "nope"}, "unknown strategy 'nope': choose one of"),
     ({"n": 0}, "n must be a positive"), ({"temperature": -1.0}, "temperature must be >= 0"),
     ({"n": 2.5}, "n must be a whole number, got 2.5"),
     ({"budget": 4000.0}, "budget must be a whole number of tokens or a Budget, got 4000.0"),
     ({"strategy": "auto", "budget": float("nan")}, "budget must be a whole number of tokens"),
     ({"strategy": "best_of_n:class_weight=mean", "verifier": "self_judge"},
      "class_weight must be one of max, sum"),
     ({"strategy": "mcts:exploration_weight=-1", "verifier": "self_judge"},
      "exploration_weight must be at least 0"),
     ({"stop": ["", "###"]}, "stop strings must be non-empty text")],
)
def test_bad_input_is_one_sentence(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        solve("q", backend=FakeBackend(), **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_one_stop_string_is_one_stop_string() -> None:
    """Not its characters: stop="###" once stopped at every "#"."""
    fb = FakeBackend(responses=["\\boxed{4}"])
    solve("q", backend=fb, n=1, stop="###")
    assert fb.calls[0][1].stop == ("###",)


def test_empty_question() -> None:
    with pytest.raises(ConfigError, match="question is empty"):
        solve("   ", backend=FakeBackend())


def test_unknown_backend_lists_choices() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'vllmx': choose one of fake, "):
        solve("q", backend="vllmx")


def _prompt(q: str) -> Chat:
    from ttscale.answers import solve_prompt

    return solve_prompt(q)
