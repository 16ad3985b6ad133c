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

# "20 pencils left", "4 bolts of blue fiber", "\\$18 per day", "80 \\text{ miles each}": a
# number (a sign, a dollar sign, thousands commas, decimals or a fraction allowed) followed
# by words alone. The words must start after a space (or a LaTeX space or \\text{}), so "3x"
# stays algebra, and hold no digit or other LaTeX, so "1 hour and 20 minutes" stays whole.
_NUMBER_THEN_WORDS = re.compile(r"""
    (?P<sign>[-+]?)\s*(?:\\?\$\s*)?
    (?P<number>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)
    (?P<words>(?:\s|\\[,;:! ]|\\text\{[^{}\d\\]*\}|[A-Za-z'’.,!?-])*)
    \Z""", re.VERBOSE)
_CURRENCY = re.compile(r"[-+]?\s*\\\$")  # "\\$5": math-verify reads no LaTeX dollar sign
# Words that change the number's value or read as mathematics: never dropped.
_KEEP_WORDS = frozenset({"hundred", "thousand", "million", "billion", "trillion", "dozen",
                         "dozens", "percent", "pi", "e", "i", "k", "m", "b"})


def numeric_core(answer: str) -> str:
    """The number of an answer that is a number followed by words, else ``answer`` itself.

    Votes and grading compare this, so "20 pencils left" counts with "20"; results keep
    showing the text as written. Words that change the value ("4 million", "20 percent")
    and everything that is not a plain number with words (LaTeX, equations, several
    numbers) are left alone.

    Example:
        >>> numeric_core("20 pencils left"), numeric_core("4 bolts of blue fiber")
        ('20', '4')
        >>> numeric_core("\\\\$1,250.50 per week"), numeric_core("-\\\\$170.00")
        ('1250.50', '-170.00')
        >>> numeric_core("4 million"), numeric_core("x = 3"), numeric_core("3x")
        ('4 million', 'x = 3', '3x')
        >>> numeric_core("1 \\\\text{ hour and 20 minutes}"), numeric_core("$5$")
        ('1 \\\\text{ hour and 20 minutes}', '$5$')
    """
    text = answer.strip()
    found = _NUMBER_THEN_WORDS.fullmatch(text)
    if found is None:
        return answer
    words = found["words"]
    if not re.search(r"[A-Za-z]", words) and not _CURRENCY.match(text):
        return answer  # a bare number (or "$5", which math-verify reads): nothing to drop
    if words and not re.match(r"\s|\\", words):
        return answer  # "3x", "2pi": a product, not a unit
    spelled = re.findall(r"[A-Za-z]+", re.sub(r"\\text", " ", words))
    if any(w.lower() in _KEEP_WORDS for w in spelled):
        return answer
    return found["sign"] + found["number"].replace(",", "")


def equivalent(a: str, b: str) -> bool:
    """True when two answers are mathematically the same (math-verify), after each is cut
    to its number when it is a number followed by words (:func:`numeric_core`).

    Example:
        >>> equivalent("1/2", "0.5") and equivalent("\\\\frac{1}{2}", "0.5")
        True
        >>> equivalent("3", "4"), equivalent("007", "7"), equivalent("20 pencils left", "20")
        (False, True, True)
    """
    a, b = numeric_core(a), numeric_core(b)
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
