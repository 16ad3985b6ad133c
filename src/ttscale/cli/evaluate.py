"""The work behind ``ttscale eval import-samples`` and ``ttscale eval replay``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ttscale.errors import ConfigError
from ttscale.evaluation.importers import FORMATS, import_boinf
from ttscale.evaluation.metrics import CurvePoint, curve
from ttscale.evaluation.runs import load_run, max_n, store_imported

STRATEGIES = ("majority", "weighted_best_of_n")
RESULTS = "results.jsonl"


def import_samples(file: Path, out: Path, fmt: str) -> None:
    """Read FILE in format ``fmt`` and store it in the run directory ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown sample format {fmt!r}: choose one of {', '.join(FORMATS)}")
    questions = import_boinf(file)
    count, new = store_imported(out, questions, file, fmt)
    samples = sum(len(q.samples) for q in questions)
    Console(stderr=True).print(
        f"imported {count} questions, {samples} samples ({new} new) into {out}",
        markup=False, highlight=False)


def parse_ns(text: str) -> list[int]:
    """``--n``: positive, strictly increasing integers.

    Example:
        >>> parse_ns("1, 2,8")
        [1, 2, 8]
        >>> parse_ns("4,2")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: --n must be strictly increasing, got 4,2: list them \
from smallest to largest, e.g. 1,2,4,8
    """
    try:
        ns = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"--n must be comma-separated integers, got {text!r}: write e.g. "
                          "1,2,4,8") from exc
    if not ns or any(k <= 0 for k in ns):
        raise ConfigError(f"--n must list positive sample counts, got {text!r}: write e.g. "
                          "1,2,4,8")
    if any(b <= a for a, b in pairwise(ns)):
        raise ConfigError(f"--n must be strictly increasing, got {text}: list them from "
                          "smallest to largest, e.g. 1,2,4,8")
    return ns


def parse_strategies(text: str) -> list[str]:
    """``--strategies``: known names, comma-separated."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if not names or bad:
        raise ConfigError(f"unknown strategy {', '.join(bad) or repr(text)}: choose from "
                          f"{', '.join(STRATEGIES)}")
    return names


def _table(points: list[CurvePoint]) -> Table:
    table = Table(title="replay from stored samples")
    for name, justify in (("strategy", "left"), ("n", "right"), ("accuracy", "right"),
                          ("95% CI", "right"), ("tokens/question", "right"),
                          ("easy/medium/hard", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for p in points:
        half = (p.ci_high - p.ci_low) / 2
        bins = " / ".join("-" if acc is None else f"{acc:.0%}" for _, _, acc in p.bins)
        table.add_row(p.strategy, str(p.n), f"{p.accuracy:.1%}", f"± {half:.1%}",
                      f"{p.mean_tokens:,.0f}", bins)
    return table


def replay(run_dir: Path, strategies: str, n: str, *, resamples: int, seed: int,
           as_json: bool) -> list[CurvePoint]:
    """Replay each strategy at each n, print the table (or JSON lines), write results.jsonl."""
    names, ns = parse_strategies(strategies), parse_ns(n)
    if resamples <= 0:
        raise ConfigError(f"--resamples must be a positive number, got {resamples}")
    questions = load_run(run_dir)
    most = max_n(questions)
    if ns[-1] > most:
        raise ConfigError(f"--n {ns[-1]} is more than the {most} samples stored per question: "
                          f"ask for at most {most}")
    if "weighted_best_of_n" in names and all(s[2] is None for q in questions
                                              for s in q.samples):
        raise ConfigError(f"{run_dir} has no verifier scores, so weighted_best_of_n cannot be "
                          "replayed: use --strategies majority")
    points = [p for name in names
              for p in curve(questions, ns, name, resamples=resamples, seed=seed)]
    lines = [json.dumps({**asdict(p), "resamples": resamples, "seed": seed}) for p in points]
    (Path(run_dir) / RESULTS).write_text("".join(line + "\n" for line in lines),
                                         encoding="utf-8")
    if as_json:
        sys.stdout.write("".join(line + "\n" for line in lines))
    else:
        Console().print(_table(points))
    return points
