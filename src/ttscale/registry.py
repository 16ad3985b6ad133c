"""Named plug-in points. Built-ins register exactly like third-party entry points."""

from __future__ import annotations

import importlib
import math
import typing
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from ttscale.errors import ConfigError, MissingExtra

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to lazily imported factories (``"module:attr"``), extended by entry points.

    Example:
        >>> r: Registry[object] = Registry("thing", "ttscale.things", {"dict": "builtins:dict"})
        >>> r.get("dict")() == {}
        True
        >>> r.names()
        ['dict']
    """

    def __init__(self, kind: str, group: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self.group = group
        self._targets = dict(builtins)
        self._loaded_plugins = False

    def _plugins(self) -> None:
        if not self._loaded_plugins:
            for ep in entry_points(group=self.group):
                self._targets.setdefault(ep.name, ep.value)
            self._loaded_plugins = True

    def names(self) -> list[str]:
        self._plugins()
        return sorted(self._targets)

    def register(self, name: str, target: str) -> None:
        self._targets[name] = target

    def get(self, name: str) -> Callable[..., Any]:
        self._plugins()
        target = self._targets.get(name)
        if target is None:
            raise ConfigError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
            )
        module, _, attr = target.partition(":")
        try:
            obj: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise MissingExtra(f"{self.kind} {name!r} could not be loaded from {target} "
                               f"({exc}): reinstall the package that provides it") from exc
        return obj


backends: Registry[Any] = Registry(
    "backend",
    "ttscale.backends",
    {
        "llamacpp": "ttscale.backends.llamacpp:LlamaCppBackend",
        "openai": "ttscale.backends.openai:OpenAIBackend",
        "fake": "ttscale.backends.fake:FakeBackend",
        "vllm": "ttscale.backends.vllm:VLLMBackend",
    },
)


_KINDS: dict[Any, tuple[tuple[type, ...], str]] = {
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    str: ((str,), "text"),
    bool: ((bool,), "true or false"),
}


def check_option(what: str, key: str, value: Any, hint: Any,
                 show: Callable[[Any], str] = repr) -> None:
    """Refuse a spec's option value whose type its annotation ``hint`` rules out (``X |
    None`` takes None or an X; NaN and infinity are no numbers here); other hints (unions,
    literals) are left for the factory to check.

    Example:
        >>> check_option("strategy beam", "width", 4, int)
        >>> check_option("strategy beam", "width", "two", int)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: strategy beam option width must be a whole number, got 'two'
    """
    arms = typing.get_args(hint)
    if type(None) in arms and len(arms) == 2:
        if value is None:
            return
        hint = next(a for a in arms if a is not type(None))
    allowed = _KINDS.get(hint)
    if allowed is None:
        return
    types, words = allowed
    if (isinstance(value, bool) and hint is not bool) or not isinstance(value, types):
        raise ConfigError(f"{what} option {key} must be {words}, got {show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{what} option {key} must be a finite number, got {show(value)}")

strategies: Registry[Any] = Registry(
    "strategy",
    "ttscale.strategies",
    {
        "greedy": "ttscale.strategies.greedy:Greedy",
        "majority": "ttscale.strategies.majority:Majority",
        "adaptive_majority": "ttscale.strategies.adaptive_majority:AdaptiveMajority",
        "short": "ttscale.strategies.short:Short",
        "deepconf": "ttscale.strategies.deepconf:DeepConf",
        "deepconf_online": "ttscale.strategies.deepconf:DeepConfOnline",
        "deepprune": "ttscale.strategies.deepprune:DeepPrune",
        "best_of_n": "ttscale.strategies.best_of_n:BestOfN",
        "weighted_best_of_n": "ttscale.strategies.best_of_n:WeightedBestOfN",
        "budget_forcing": "ttscale.strategies.budget_forcing:BudgetForcing",
        "revision": "ttscale.strategies.revision:Revision",
        "rsa": "ttscale.strategies.rsa:RSA",
        "abstraction": "ttscale.strategies.abstraction:AbstractionFirst",
        "beam": "ttscale.strategies.beam:BeamSearch",
        "dvts": "ttscale.strategies.dvts:DVTS",
        "mcts": "ttscale.strategies.mcts:MCTS",
        "ab_mcts": "ttscale.strategies.mcts:ABMCTS",
        "auto": "ttscale.planner.auto:Auto",
    },
)

verifiers: Registry[Any] = Registry(
    "verifier",
    "ttscale.verifiers",
    {
        "self_judge": "ttscale.verifiers.self_judge:SelfJudge",
        "llm_judge": "ttscale.verifiers.llm_judge:LLMJudge",
        "hf_prm": "ttscale.verifiers.hf_prm:HFProcessRewardModel",
        "sprm": "ttscale.verifiers.sprm.head:SPRMVerifier",
    },
)
