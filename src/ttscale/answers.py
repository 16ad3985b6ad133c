"""Prompts that ask for a final answer, answer extraction, and equivalence classes.

Equivalence is decided by math-verify, never by string matching, so ``1/2``, ``0.5`` and
``\\frac{1}{2}`` fall into one class.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ttscale.types import Chat

SYSTEM_PROMPT = (
    "You are a careful math solver. Reason step by step, separating steps with a blank line, "
    "and keep it concise. End with the final answer on its own line as: "
    "The answer is \\boxed{ANSWER}."
)


def solve_prompt(question: str, system: str = SYSTEM_PROMPT) -> Chat:
    """The chat prompt that asks a model to solve ``question`` and box its answer.

    Example:
        >>> solve_prompt("What is 2+2?").messages[1].content
        'What is 2+2?'
    """
    return Chat.user(question.strip(), system=system)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}``, with nested braces.

    Example:
        >>> last_boxed("so \\\\boxed{\\\\frac{1}{2}} or \\\\boxed{3}")
        '3'
        >>> last_boxed("x = \\\\boxed{\\\\frac{1}{2}}")
        '\\\\frac{1}{2}'
        >>> last_boxed("so $\\\\boxed 9$ and {x}"), last_boxed("\\\\boxed{}") is None
        ('9', True)
    """
    boxed = text.rfind("\\boxed")
    start = max(boxed, text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (len("\\boxed") if start == boxed else len("\\fbox"))
    while text.startswith(" ", i):
        i += 1
    if not text.startswith("{", i):
        # "\\boxed 5$" (braces left out, as in a few MATH solutions): the token after it.
        token = re.match(r"[^\s$]*", text[i:])
        return token.group(0) if token and token.group(0) else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip() or None
    return None


_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.|\n|$)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: ``\\boxed{}``, else "The answer is ...", else the last
    number; ``None`` when there is none.

    Example:
        >>> extract_answer("so 3+4 = 7. The answer is \\\\boxed{7}.")
        '7'
        >>> extract_answer("The answer is 12 apples.")
        '12 apples'
        >>> extract_answer("We get 3, then 1,250 in total")
        '1250'
        >>> extract_answer("no idea") is None
        True
    """
    boxed = last_boxed(text)
    if boxed:
        return boxed
    matches = _ANSWER_IS.findall(text)
    if matches:
        return str(matches[-1]).strip().rstrip(".")
    numbers = _NUMBER.findall(text)
    if numbers:
        return str(numbers[-1]).replace(",", "")
    return None


# math-verify warns on every call made without a timeout (which worker threads must do).
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _timeout() -> int | None:
    # math-verify's timeouts use signals, which only the main thread may install.
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=8192)
def _parsed(answer: str) -> tuple[Any, ...]:
    from math_verify import parse

    # Wrapping in $...$ lets math-verify's LaTeX path read \frac and friends.
    latex = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    parsed = parse(latex, parsing_timeout=_timeout())
    if not parsed:
        parsed = parse(answer, parsing_timeout=_timeout())
    return tuple(parsed)


_INTEGER = re.compile(r"-?[0-9]{1,100}")


def equivalent(a: str, b: str) -> bool:
    """True when two answers are mathematically the same (math-verify).

    Example:
        >>> equivalent("1/2", "0.5") and equivalent("\\\\frac{1}{2}", "0.5")
        True
        >>> equivalent("3", "4"), equivalent("007", "7")
        (False, True)
    """
    sa, sb = a.strip(), b.strip()
    if sa == sb:
        return True
    if _INTEGER.fullmatch(sa) and _INTEGER.fullmatch(sb):
        # Two integer literals: equal values, no parsing needed (replays compare thousands).
        return int(sa) == int(sb)
    pa, pb = _parsed(a), _parsed(b)
    if not pa or not pb:
        return False
    from math_verify import verify

    return bool(verify(list(pa), list(pb), timeout_seconds=_timeout()))


def group_answers(answers: Sequence[str | None]) -> list[list[int]]:
    """Indices of equivalent answers grouped, in order of first appearance; ``None`` is left
    out. Ties later resolve to the earliest class, so this order matters.

    Example:
        >>> group_answers(["0.5", "3", "1/2", None, "3"])
        [[0, 2], [1, 4]]
    """
    classes: list[list[int]] = []
    reps: list[str] = []
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        for cls, rep in zip(classes, reps, strict=True):
            if equivalent(rep, ans):
                cls.append(i)
                break
        else:
            classes.append([i])
            reps.append(ans)
    return classes
