from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttscale.answers import (
    equivalent,
    extract_answer,
    group_answers,
    numeric_core,
    solve_prompt,
)
from ttscale.backends.fake import FakeBackend
from ttscale.solve import solve


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("We add: 3+4=7.\n\nThe answer is \\boxed{7}.", "7"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("first \\boxed{3} then \\boxed{5}", "5"),
        ("The answer is: 12.", "12"),
        ("The answer is $18$.", "18"),
        ("she has 3 apples, then 1,250 pears", "1250"),
        ("total -4.5", "-4.5"),
        ("nothing numeric here", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("a", "b"), [("1/2", "0.5"), ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "1/2"),
                 ("18", "18.00"), ("1,000", "1000"), ("$18", "18")]
)
def test_equivalent_forms(a: str, b: str) -> None:
    assert equivalent(a, b)
    assert equivalent(b, a)


def test_not_equivalent() -> None:
    assert not equivalent("3", "4")
    assert not equivalent("gibberish", "4")


def test_group_merges_equivalents_in_first_seen_order() -> None:
    assert group_answers(["\\frac{1}{2}", "7", "0.5", None, "1/2", "7.0"]) == [[0, 2, 4], [1, 5]]


def test_prompt_asks_for_boxed_answer() -> None:
    chat = solve_prompt("  What is 2+2? ")
    assert chat.messages[0].role == "system" and "\\boxed" in chat.messages[0].content
    assert chat.messages[1].content == "What is 2+2?"


# Answers a number followed by words: the first two pairs were counted apart by
# `ttscale solve` on GSM8K questions ("20 pencils left" against "20", the robe question's
# "4 bolts of blue fiber" against "4").
@pytest.mark.parametrize(
    ("a", "b"),
    [("20 pencils left", "20"), ("4 bolts of blue fiber", "4"), ("\\$18 per day", "18"),
     ("-\\$170.00", "-170"), ("1,250 apples", "1250"), ("3/4 cup", "0.75"),
     ("80 \\text{ miles each}", "80"), ("10 \\, \\text{cm}", "10"), ("12 dollars.", "12")],
)
def test_number_followed_by_words_votes_with_the_number(a: str, b: str) -> None:
    assert equivalent(a, b) and equivalent(b, a)


@pytest.mark.parametrize(
    "answer", ["4 million", "20 percent", "1 \\text{ hour and 20 minutes}", "3x", "2 pi",
               "160 miles and 300 miles"])
def test_words_that_change_the_value_are_kept(answer: str) -> None:
    assert numeric_core(answer) == answer


def test_kept_words_still_tell_answers_apart() -> None:
    assert not equivalent("4 million", "4") and not equivalent("3x", "3")
    assert not equivalent("2 pi", "2") and not equivalent("-20 pencils", "20")


@pytest.mark.parametrize(
    "answer", ["\\frac{1}{2}", "x = 3", "-3", "1,000", "$5", "$5$", "60\\%", "L - 8", "3.5"])
def test_numeric_core_leaves_other_answers_alone(answer: str) -> None:
    assert numeric_core(answer) == answer


RUNS = Path(__file__).parent.parent / "bench" / "runs"
# GSM8K test question 33 (Charlie's candles) as the default model's stored samples hold it
CANDLES = "a9bf938e6076b2921ea5b8e109c636dfe71546c739133ba0691185ab1916d24a"


def _stored_generations(run: str, prompt_hash: str) -> dict[int, str]:
    """The texts of one question's stored samples in an exported run, by sample index."""
    texts: dict[int, str] = {}
    with (RUNS / run).open(encoding="utf-8") as f:
        for line in f:
            if prompt_hash in line:
                row = json.loads(line)
                if row.get("table") == "generations" and row["prompt_hash"] == prompt_hash:
                    texts[row["sample_index"]] = row["text"]
    return texts


def test_real_traces_with_units_vote_with_the_bare_number() -> None:
    # sample 7 of the stored run ends in \boxed{-\$170.00}, which math-verify cannot read
    text = _stored_generations("gsm8k-test-0-39.jsonl", CANDLES)[7]
    assert extract_answer(text) == "-\\$170.00"
    fb = FakeBackend(responses=[text, "So he loses \\$170.\n\nThe answer is \\boxed{-170}.",
                                "The answer is 20 pencils left.", "\\boxed{20}",
                                "The answer is \\boxed{20}."])
    r = solve("?", backend=fb, strategy="majority", n=5)
    # each class shows its first answer as written, and merged the bare number into it
    assert {c.answer: c.votes for c in r.classes} == {"-\\$170.00": 2, "20 pencils left": 3}
    assert r.answer == "20 pencils left"
