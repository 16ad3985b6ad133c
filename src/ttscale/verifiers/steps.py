"""Text every verifier shares: splitting a trace into reasoning steps (the one way every
step-level verifier does it) and filling prompt templates."""

from __future__ import annotations

import re

from ttscale.errors import ConfigError

DEFAULT_DELIMITER = "\n\n"  # what Qwen2.5-Math-Instruct and most PRM training data use


def check_delimiter(delimiter: str) -> str:
    """``delimiter`` if it can split a trace, else a ``ConfigError`` naming the fix.

    Example:
        >>> check_delimiter("\\n")
        '\\n'
    """
    if not isinstance(delimiter, str) or not delimiter:
        raise ConfigError(f"the step delimiter must be a non-empty string, got {delimiter!r}: "
                          'pass e.g. step_delimiter="\\n\\n"')
    return delimiter


def split_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """The reasoning steps of a trace, stripped, empty ones dropped; never fewer than one,
    so every trace gets at least one step score (an empty trace is one empty step).

    Example:
        >>> split_steps("a\\n\\nb\\n\\n\\n\\nc")
        ['a', 'b', 'c']
        >>> split_steps("x = 1; y = 2", "; ")
        ['x = 1', 'y = 2']
        >>> split_steps("  \\n\\n ")
        ['']
    """
    check_delimiter(delimiter)
    return [s.strip() for s in text.split(delimiter) if s.strip()] or [""]


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value, in one pass: braces in a
    value (LaTeX) or in the template (``\\boxed{}``) are never read as placeholders.

    Example:
        >>> fill("Q: {question} -> \\\\boxed{}", question="{x}^2")
        'Q: {x}^2 -> \\\\boxed{}'
    """
    names = "|".join(map(re.escape, values))
    return re.sub(r"\{(" + names + r")\}", lambda m: values[m.group(1)], template)
