from __future__ import annotations

import pytest

from ttscale.answers import equivalent, extract_answer, group_answers, solve_prompt


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
