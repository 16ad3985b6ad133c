"""How ``ttscale sprm collect | train | eval`` show their work: the layers flag, the
trained head's table, the evaluation's table or JSON. The steps themselves are
:mod:`ttscale.evaluation.sprm_api`'s: ``collect`` samples and grades traces through the
evaluation harness and caches their step features; ``train`` fits a head on GSM8K train
runs only; ``eval`` scores a run with a head and compares best-of-N by SPRM with majority.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ttscale.cli.common import say
from ttscale.cli.render import name_column, print_output
from ttscale.errors import ConfigError


def parse_layers(text: str | None) -> list[int] | None:
    """The layers of ``--layer`` (one or a comma list), or a ``ConfigError`` with the fix.

    Example:
        >>> parse_layers("14"), parse_layers("8, 4,14"), parse_layers(None)
        ([14], [4, 8, 14], None)
        >>> parse_layers("4,x")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: --layer takes positive layer numbers such as 14 or \
4,8,14, got '4,x'
    """
    if text is None:
        return None
    try:
        layers = sorted({int(p) for p in text.split(",")})
    except ValueError:
        layers = []
    if not layers or layers[0] < 1:
        raise ConfigError(f"--layer takes positive layer numbers such as 14 or 4,8,14, "
                          f"got {text!r}")
    return layers


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_train(head: Any, out: Path) -> None:
    """What ``ttscale sprm train`` shows: the head's AUROC per part, its epochs, where saved.

    Example:
        >>> from ttscale.evaluation.sprm_api import sprm_train
        >>> head = sprm_train(["runs/sprm-train"], "heads/mine")  # doctest: +SKIP
        >>> print_train(head, Path("heads/mine.sprm.safetensors"))  # doctest: +SKIP
    """
    m = head.meta.metrics
    table = Table(title=f"SPRM head, {head.meta.model} layer {head.meta.layer}/"
                        f"{head.meta.n_layers}")
    for col in ("part", "questions", "traces", "correct", "steps", "trace AUROC"):
        table.add_column(col, justify="left" if col == "part" else "right")
    cv = m.get("cross_validation")
    for part in ("train", "held_out"):
        p = m[part]
        if p["traces"]:
            table.add_row(part.replace("_", "-"), str(p["questions"]), str(p["traces"]),
                          str(p["correct"]), str(p["steps"]), _fmt(p["auroc"]))
    if cv is not None:
        table.add_row(f"{cv['folds']}-fold CV", "", "", "", "", _fmt(cv["auroc"]))
    print_output(table)
    chosen = (f"epochs chosen by cross-validation: {m['best_epoch']}" if cv is not None else
              f"best epoch {m['best_epoch']} of {m['epochs_run']}; held-out cross-entropy "
              f"{_fmt(m['held_out_cross_entropy'])}")
    say(f"{chosen}; loss: {m['loss']}; saved {out}")


def print_evaluation(ev: Any, *, as_json: bool) -> None:
    """What ``ttscale sprm eval`` shows: the summary as JSON, or a table of best-of-n and
    weighted best-of-n against majority and one line on AUROC and time.

    Example:
        >>> from ttscale.evaluation.sprm_api import sprm_evaluate
        >>> ev = sprm_evaluate("runs/gsm8k-test-0-39", n=8)  # doctest: +SKIP
        >>> print_evaluation(ev, as_json=True)  # doctest: +SKIP
        {"run": "runs/gsm8k-test-0-39", "head": ..., "n": 8, ...}
    """
    res, summary = ev.scores, ev.summary
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    n, chosen, store_as = summary["n"], ev.dtype, summary["stored_as"]
    ratio = summary["scoring_over_generation"]
    table = Table(title=f"{res.questions_replayed} questions, N = {n}, SPRM head "
                        f"{Path(ev.head).name}")
    name_column(table, "strategy", [p.strategy for p in res.points])
    for col in ("accuracy", "95% CI", "tokens/question"):
        table.add_column(col, justify="right")
    for p in res.points:
        table.add_row(p.strategy, f"{p.accuracy:.1%}",
                      f"{p.ci_low:.1%} .. {p.ci_high:.1%}", f"{p.mean_tokens:,.0f}")
    print_output(table)
    Console().print(
        f"trace AUROC {_fmt(res.auroc)} over {res.traces} traces ({res.correct} correct); "
        f"scoring {res.scoring_seconds:.1f} s ({chosen}) against {res.generation_seconds:.1f} s of "
        f"stored generation time" + (f" (ratio {ratio:.3f})" if ratio is not None else "")
        + f"; scores stored as verifier {store_as} (ttscale eval replay RUN_DIR "
        f"--verifier {store_as})",
        markup=False, highlight=False)
