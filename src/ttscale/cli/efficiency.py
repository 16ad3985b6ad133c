"""The parts of ``ttscale eval`` that spend less: DeepConf and DeepPrune replayed on stored
tokens (``eval replay``), and the label-free temperature choice (``eval --temperature auto``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from ttscale.aggregation.confidence import ConfidenceParams
from ttscale.aggregation.pruning import PruneParams
from ttscale.cli.common import say
from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig
from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.runs.records import QuestionRecord
from ttscale.evaluation.runs.store import FILE_NAME

CONFIDENCE = ("deepconf", "deepconf_online")  # replayed per --confidence spec
PRUNE = "deepprune"  # replayed per --prune spec
DEFAULT_CONFIDENCE = ("eta=0.1", "eta=0.9")  # DeepConf-low and -high, as in the paper


def efficiency_points(records: Sequence[QuestionRecord], names: Sequence[str],
                      ns: Sequence[int], conf_params: Sequence[ConfidenceParams],
                      prune_params: Sequence[PruneParams], *, orders: int,
                      seed: int) -> list[CurvePoint]:
    """Curve points of DeepConf (offline, online) and DeepPrune replayed on stored tokens."""
    from ttscale.evaluation.replay.confidence import prepare_confidence, replay_confidence
    from ttscale.evaluation.replay.prune import prepare_prune, replay_prune

    points: list[CurvePoint] = []
    prepared: dict[int, Any] = {}  # by top_k: token confidences are computed once
    for params in conf_params:
        if params.top_k not in prepared:
            prepared[params.top_k] = prepare_confidence(records, params.top_k)
        for name in (x for x in CONFIDENCE if x in names):
            mode = "offline" if name == "deepconf" else "online"
            points += [replay_confidence(prepared[params.top_k], params, k, mode=mode,
                                         orders=orders, seed=seed)[0] for k in ns]
    for p in prune_params:
        questions = prepare_prune(records, p)
        points += [replay_prune(questions, p, k, orders=orders, seed=seed)[0] for k in ns]
    return points


def parse_temperature(text: str) -> float | None:
    """``--temperature``: a number, or ``auto`` (None: chosen by TURN before the run).

    Example:
        >>> parse_temperature("0.6"), parse_temperature("auto")
        (0.6, None)
    """
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise ConfigError(f"--temperature must be a number or auto, got {text!r}") from exc


def auto_temperature(out: Path, cfg: EvalConfig, problems: Sequence[Problem],
                     load: Any, settings_of: Any, err: Console) -> tuple[EvalConfig, Any]:
    """The run's temperature chosen without labels (``ttscale.evaluation.temperature``) on its first
    questions; a run directory that already holds this run keeps the temperature it chose
    (so a resumed run is the same run). Returns the config and the backend, if it loaded one.
    """
    from ttscale.evaluation.runs.imports import stored_settings
    from ttscale.evaluation.temperature import TemperatureSearch, choose_temperature

    if (Path(out) / FILE_NAME).is_file():
        stored = stored_settings(out)
        same = settings_of(cfg)
        if all(stored.get(k) == same.get(k) for k in ("kind", "model_sha256", "dataset",
                                                      "split", "system_prompt")):
            t = float(stored["sampling"]["temperature"])
            say(f"temperature {t:g}, chosen when {out} began", err)
            return replace(cfg, temperature=t), None
    be = load()
    search = TemperatureSearch(max_tokens=min(128, cfg.max_tokens),
                               aggregation="best_of_n" if cfg.verifier else "majority")
    say(f"choosing the temperature on {min(search.questions, len(problems))} "
        f"questions ({len(search.grid)} temperatures x {search.samples} samples)...", err)
    choice = choose_temperature(be, [p.question for p in problems], search)
    curve_text = ", ".join(f"{t:g}: {h:.3f}" for t, h in zip(choice.grid, choice.entropies,
                                                               strict=True))
    say(f"mean token entropy by temperature: {curve_text}; turning point "
        f"{choice.turning_point:g}: temperature {choice.temperature:g} "
        f"({choice.usage.total_tokens:,} tokens)", err)
    return replace(cfg, temperature=choice.temperature), be
