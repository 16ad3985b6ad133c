"""A sampling temperature for multi-sample inference, chosen without labels: TURN (Du et al.
2025, "Optimizing Temperature for Language Models with Multi-Sample Inference").

For each temperature of a grid, a few samples are drawn on a few questions (no gold answers
needed) and their mean token-level entropy is measured. Entropy grows slowly with the
temperature until the samples start to fall apart, then fast; the temperature at that
*entropy turning point* is close to the best one for majority voting. As in the paper's code:

- token entropy at temperature T: ``H = -Σ p log p`` with ``p ∝ exp(log P / T)`` over the
  returned top-k candidates (renormalised over them); a sample's entropy is the mean over its
  tokens, a temperature's the mean over samples and questions. Our backends report the
  model's own log-probabilities, before temperature (llama.cpp, vLLM's default), so they are
  scaled by ``1 / T`` here: the distribution the sampler drew from. The paper's code read
  them from vLLM with 1000 candidates; we use up to 20, the most servers return.
- turning point: the first interior grid point where the second derivative of
  ``log(entropy)`` over the grid (``numpy.gradient`` twice) is positive; the last interior
  point when there is none.
- the answer: turning point + 0.0 for majority voting, + 0.1 for best-of-N (the paper's
  aggregation adjustment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from ttscale.answers import solve_prompt
from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.types import Generation, Usage

ADJUSTMENT = {"majority": 0.0, "best_of_n": 0.1}


@dataclass(frozen=True, kw_only=True)
class TemperatureSearch:
    """How to search: the grid, how many questions and samples per temperature, tokens per
    sample, candidates per token, the aggregation the temperature is for, the first seed.

    The defaults cost ``len(grid) · questions · samples · max_tokens`` = 7 · 4 · 4 · 128
    completion tokens at most (about 14k).

    Example:
        >>> TemperatureSearch().grid[:3]
        (0.1, 0.3, 0.5)
        >>> TemperatureSearch(grid=(0.5, 0.3, 0.9))
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: the temperature grid must have at least 3 positive, \
increasing values, got 0.5, 0.3, 0.9
    """

    grid: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3)
    questions: int = 4
    samples: int = 4
    max_tokens: int = 128
    top_k: int = 20
    aggregation: str = "majority"
    seed: int = 0

    def __post_init__(self) -> None:
        if (len(self.grid) < 3 or self.grid[0] <= 0
                or any(b <= a for a, b in pairwise(self.grid))):
            raise ConfigError(f"the temperature grid must have at least 3 positive, increasing "
                              f"values, got {', '.join(f'{t:g}' for t in self.grid)}")
        if self.questions < 1 or self.samples < 1 or self.max_tokens < 1:
            raise ConfigError("questions, samples and max_tokens of a temperature search must "
                              "be positive")
        if not 1 <= self.top_k <= 20:
            raise ConfigError(f"top_k must be between 1 and 20 candidates, got {self.top_k}")
        if self.aggregation not in ADJUSTMENT:
            raise ConfigError(f"unknown aggregation {self.aggregation!r}: choose one of "
                              f"{', '.join(ADJUSTMENT)}")


@dataclass(frozen=True)
class TemperatureChoice:
    """The chosen temperature, the turning point it came from, the mean entropy at every
    grid temperature and the compute the search spent."""

    temperature: float
    turning_point: float
    grid: tuple[float, ...]
    entropies: tuple[float, ...]
    usage: Usage


def token_entropy(top: Sequence[float], temperature: float) -> float:
    """Entropy (nats) of the candidates' distribution at ``temperature``, renormalised over
    the candidates whose log-probabilities ``top`` gives.

    Example:
        >>> import math
        >>> round(token_entropy([math.log(0.5), math.log(0.5)], 1.0), 4)
        0.6931
        >>> token_entropy([-0.01, -5.0], 0.5) < token_entropy([-0.01, -5.0], 1.0)
        True
    """
    z = np.asarray(top, dtype=float) / temperature
    z = z - z.max()
    p = np.exp(z) / np.exp(z).sum()
    return float(-(p * np.log(np.clip(p, 1e-300, None))).sum())


def mean_entropy(generations: Sequence[Generation], temperature: float) -> float:
    """The mean over samples of their mean token entropy at ``temperature`` (samples without
    tokens are left out).

    Example:
        >>> import math
        >>> from ttscale.types import TokenLogprob
        >>> t = TokenLogprob("a", math.log(0.5), (("a", math.log(0.5)), ("b", math.log(0.5))))
        >>> round(mean_entropy([Generation("a", 1, 1, "stop", (t,))], 1.0), 4)
        0.6931
    """
    per_sample = []
    for g in generations:
        tokens = g.logprobs or ()
        if tokens:
            per_sample.append(sum(token_entropy([lp for _, lp in t.top] or [t.logprob],
                                                temperature) for t in tokens) / len(tokens))
    return sum(per_sample) / len(per_sample) if per_sample else 0.0


def turning_point(grid: Sequence[float], entropies: Sequence[float]) -> float:
    """The grid temperature where ``log(entropy)`` turns convex: the first interior point
    with a positive second derivative (the last interior point if none).

    Example:
        >>> grid = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
        >>> turning_point(grid, [0.10, 0.15, 0.18, 0.20, 0.60, 2.0])
        0.6
        >>> turning_point(grid, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # concave throughout
        1.0
    """
    if len(grid) != len(entropies) or len(grid) < 3:
        raise ConfigError("a turning point needs at least 3 temperatures, each with an entropy")
    x = np.asarray(grid, dtype=float)
    log_h = np.log(np.clip(np.asarray(entropies, dtype=float), 1e-12, None))
    second = np.gradient(np.gradient(log_h, x), x)
    convex = np.flatnonzero(second[1:-1] > 0)
    index = int(convex[0]) + 1 if len(convex) else len(grid) - 2
    return float(x[index])


def choose_temperature(backend: Backend, questions: Sequence[str],
                       search: TemperatureSearch | None = None,
                       system: str | None = None) -> TemperatureChoice:
    """Sample ``search.samples`` answers to the first ``search.questions`` questions at every
    grid temperature (one batched call per temperature) and pick the temperature by TURN.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> def lps(_p, _seed, pos, s):  # sure tokens grow unsure above T = 0.7
        ...     gap = max(0.1, 4.0 - 8.0 * max(0.0, s.temperature - 0.7))
        ...     return [-0.6, -0.8, -3.0] if pos % 2 == 0 else [-0.05, -0.05 - gap, -1 - gap]
        >>> c = choose_temperature(FakeBackend(responses=["a b c d"], token_logprobs=lps),
        ...                        ["2+2?", "3+3?"], TemperatureSearch(questions=2, samples=2))
        >>> c.temperature, c.usage.completion_tokens  # 7 temperatures, 2 x 2 samples of 4
        (0.7, 112)
    """
    search = search or TemperatureSearch()
    asked = [q for q in questions if q and q.strip()][: search.questions]
    if not asked:
        raise ConfigError("the temperature search needs at least one question")
    prompts = [solve_prompt(q) if system is None else solve_prompt(q, system) for q in asked]
    usage = Usage()
    entropies = []
    for t in search.grid:
        params = SamplingParams(n=search.samples, temperature=t, max_tokens=search.max_tokens,
                                seed=search.seed, logprobs=True, top_logprobs=search.top_k)
        out = backend.generate(prompts, params)
        usage = usage + out.usage
        entropies.append(mean_entropy([g for gens in out.generations for g in gens], t))
    point = turning_point(search.grid, entropies)
    chosen = round(point + ADJUSTMENT[search.aggregation], 6)
    return TemperatureChoice(chosen, point, search.grid, tuple(entropies), usage)
