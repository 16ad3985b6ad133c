"""What an eval run is: its validated settings (``EvalConfig``) and the settings a run
directory stores and compares on resume (``run_settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from ttscale.answers import SYSTEM_PROMPT
from ttscale.errors import ConfigError
from ttscale.evaluation.runs.records import SEED_STRIDE
from ttscale.evaluation.runs.store import params_json
from ttscale.params import SamplingParams
from ttscale.strategies.spec import make_strategy, takes_samples
from ttscale.verifiers.spec import check_verifier

KIND = "eval"
RUN_LABEL = "eval"
# strategy -> how a subset of stored samples is aggregated when replayed
REPLAYED = {"majority": "majority", "best_of_n": "best", "weighted_best_of_n": "weighted"}
VERIFIED = ("best_of_n", "weighted_best_of_n")
SAMPLES_PER_REQUEST = 4


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate; validated on construction.

    Example:
        >>> EvalConfig(strategies=("majority",), ns=(1, 4, 16)).n_max
        16
        >>> EvalConfig(strategies=("weighted_best_of_n",)).verifier
        'self_judge'
        >>> EvalConfig(ns=(4, 2))
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: --n must be strictly increasing, got 4,2: list them from \
smallest to largest, e.g. 1,2,4,8
    """

    strategies: tuple[str, ...] = ("majority",)
    ns: tuple[int, ...] = (1, 2, 4, 8)
    seeds: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    verifier: str | None = None
    concurrency: int = 2
    resamples: int = 200
    replay_seed: int = 0
    # alternatives kept per token; 0 keeps the sampled token's log-probability only (a
    # fifth of the bytes to parse and store, for runs at thousands of samples a second)
    top_logprobs: int = 5

    def __post_init__(self) -> None:
        if not self.ns or any(k <= 0 for k in self.ns):
            raise ConfigError(f"--n must list positive sample counts, got "
                              f"{','.join(map(str, self.ns)) or 'nothing'}: write e.g. 1,2,4,8")
        if any(b <= a for a, b in pairwise(self.ns)):
            raise ConfigError(f"--n must be strictly increasing, got "
                              f"{','.join(map(str, self.ns))}: list them from smallest to "
                              "largest, e.g. 1,2,4,8")
        if not self.strategies:
            raise ConfigError("no strategy given: pass e.g. --strategies majority")
        needs_verifier = False
        for name in self.strategies:
            if name not in REPLAYED:
                # unknown names and options fail here; so does an n the strategy cannot use
                for n in self.ns:
                    needs_verifier |= bool(make_strategy(name, n).needs_verifier)
        if self.seeds <= 0 or self.concurrency <= 0 or self.resamples <= 0:
            raise ConfigError("--seeds, --concurrency and --resamples must be positive numbers")
        if self.n_max >= SEED_STRIDE:
            raise ConfigError(f"--n {self.n_max} is too large: ask for fewer than "
                              f"{SEED_STRIDE} samples")
        if self.verifier is None and (needs_verifier
                                      or any(s in VERIFIED for s in self.strategies)):
            object.__setattr__(self, "verifier", "self_judge")
        if self.verifier is not None:
            check_verifier(self.verifier)
        self.sampling  # validates temperature, top_p and max_tokens  # noqa: B018

    @property
    def n_max(self) -> int:
        return self.ns[-1]

    @property
    def sampling(self) -> SamplingParams:
        """The parameters of every sample (``n`` and ``seed`` set per call). The top-5
        log-probabilities of every token are kept for confidence-based methods (unless
        ``top_logprobs`` says otherwise)."""
        return SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, logprobs=True,
                              top_logprobs=self.top_logprobs)

    @property
    def replayed(self) -> tuple[str, ...]:
        return tuple(s for s in self.strategies if s in REPLAYED)

    @property
    def solved(self) -> tuple[str, ...]:
        return tuple(s for s in self.strategies if s not in REPLAYED)

    def ns_of(self, strategy: str) -> tuple[int, ...]:
        """The sample counts ``strategy`` runs at: every ``n``, or the first alone for one
        that draws its own number of samples (greedy, auto), whose rows would repeat.

        Example:
            >>> cfg = EvalConfig(strategies=("majority", "greedy"), ns=(2, 4))
            >>> cfg.ns_of("majority"), cfg.ns_of("greedy")
            ((2, 4), (2,))
        """
        return self.ns if strategy in REPLAYED or takes_samples(strategy) else self.ns[:1]


def run_settings(cfg: EvalConfig, *, model: str, model_sha256: str, dataset: str,
                 split: str) -> dict[str, Any]:
    """The settings that define a run's samples; a run directory refuses any other.

    Example:
        >>> s = run_settings(EvalConfig(), model="m", model_sha256="ab", dataset="gsm8k",
        ...                  split="test")
        >>> s["kind"], s["model_sha256"], s["sampling"]["temperature"]
        ('eval', 'ab', 0.7)
    """
    import json

    return {"kind": KIND, "model": model, "model_sha256": model_sha256, "dataset": dataset,
            "split": split, "system_prompt": SYSTEM_PROMPT,
            "sampling": json.loads(params_json(cfg.sampling))}
