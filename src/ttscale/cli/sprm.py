"""``ttscale sprm collect | train | eval``: the SPRM head's data, training and evaluation.

``collect`` samples and grades traces through the evaluation harness (the same run store,
resumable) and caches their step features; ``train`` fits a head on GSM8K train runs only;
``eval`` scores a run with a head, stores the scores as verifier ``sprm`` and compares
best-of-N by SPRM with majority voting at the same N.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ttscale.cli.common import say
from ttscale.errors import ConfigError

TRAIN_DATASET, TRAIN_SPLIT = "gsm8k", "train"


@contextmanager
def feature_progress(err: Console, what: str) -> Iterator[Any]:
    """A progress bar over questions; yields the ``on_question(done, total)`` callback."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("questions"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(what, total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tick


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


def collect(out: Path, *, dataset: str, split: str, ids: str | None, limit: int | None,
            n: int, model: str | None, max_tokens: int, temperature: float,
            concurrency: int, layer: Sequence[int] | None, threads: int | None,
            dtype: str = "float32") -> int:
    """Sample and grade through the eval harness into ``out``, then cache step features;
    returns the traces whose features were extracted now."""
    from ttscale.cli.evaluate import eval_run
    from ttscale.evaluation.harness import EvalConfig
    from ttscale.evaluation.sprm import collect_features
    from ttscale.verifiers.sprm.features import DTYPES, feature_dtype

    if dtype not in DTYPES:
        feature_dtype(dtype)  # one sentence naming the choices, before any sampling

    cfg = EvalConfig(strategies=("majority",), ns=(n,), max_tokens=max_tokens,
                     temperature=temperature, concurrency=concurrency)
    eval_run(out, cfg=cfg, dataset=dataset, split=split, limit=limit, ids=ids,
             question_field=None, answer_field=None, backend="llamacpp", model=model,
             base_url=None, threads=threads, as_json=False)
    err = Console(stderr=True)
    say("loading the model for step features (transformers)...", err)
    with feature_progress(err, "features") as tick:
        done = collect_features(out, layer, threads=threads, on_question=tick, dtype=dtype)
    say(f"step features of {done} traces extracted now (the others were cached)", err)
    return done


def check_train_run(run_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse a run that is not GSM8K train: a head must never see test questions.

    Example:
        >>> check_train_run(Path("runs/t"), {"dataset": "gsm8k", "split": "train"})
        >>> check_train_run(Path("runs/x"), {"dataset": "gsm8k", "split": "test"})
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: runs/x holds gsm8k test traces, and an SPRM head trains \
on gsm8k train only: collect with ttscale sprm collect --split train
    """
    dataset, split = settings.get("dataset"), settings.get("split")
    if dataset != TRAIN_DATASET or split != TRAIN_SPLIT:
        raise ConfigError(f"{run_dir} holds {dataset} {split} traces, and an SPRM head trains "
                          f"on {TRAIN_DATASET} {TRAIN_SPLIT} only: collect with "
                          f"ttscale sprm collect --split {TRAIN_SPLIT}")


def train(runs: Sequence[Path], out: Path, *, layer: int | None, width: int, epochs: int,
          lr: float, holdout: float, seed: int, threads: int | None = None,
          warmup: int = 25, folds: int = 5) -> Any:
    """Train a head on the cached features of ``runs`` and save it at ``out``."""
    from ttscale.evaluation.runs.records import load_records
    from ttscale.evaluation.sprm import features_meta, load_examples
    from ttscale.verifiers.sprm.head import HeadMeta, features_text
    from ttscale.verifiers.sprm.train import train_head

    if (width < 1 or epochs < 1 or lr <= 0 or warmup < 0 or not 0 <= holdout < 1
            or folds < 0 or folds == 1):
        raise ConfigError("--width, --epochs and --lr must be positive, --warmup at least 0, "
                          "--holdout in [0, 1) and --folds 0 or at least 2: e.g. --width 256 "
                          "--epochs 300 --warmup 25 --lr 0.001 --folds 5")
    examples: list[Any] = []
    meta: dict[str, Any] | None = None
    training: dict[str, Any] = {"dataset": TRAIN_DATASET, "split": TRAIN_SPLIT, "runs": []}
    for run in runs:
        settings, records = load_records(run)
        check_train_run(run, settings)
        found = features_meta(run, layer)
        if meta is not None and any(found[k] != meta[k] for k in
                                    ("model_sha256", "layer", "step_delimiter", "dtype")):
            raise ConfigError(f"{run} has features of another model, layer, delimiter or "
                              f"dtype than {runs[0]}: train on runs of one model and layer")
        meta = found
        got = load_examples(run, int(found["layer"]), records)
        examples.extend(got)
        training["runs"].append({
            "run": run.name, "question_ids": sorted({e.question_id for e in got}),
            "samples": len(got), "temperature": settings["sampling"]["temperature"],
            "max_tokens": settings["sampling"]["max_tokens"]})
    assert meta is not None  # runs is never empty (typer requires one)
    head_meta = HeadMeta(meta["model_sha256"], meta["model"], int(meta["layer"]),
                         int(meta["n_layers"]), int(meta["hidden_size"]), width,
                         meta["step_delimiter"], training,
                         features=features_text(str(meta["dtype"])))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("epochs"), TimeElapsedColumn())
    what = f"training ({folds} folds, then all)" if folds else "training"
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(what, total=None)
        head = train_head(examples, head_meta, lr=lr, epochs=epochs, warmup=warmup,
                          holdout=holdout, folds=folds, seed=seed, threads=threads,
                          on_epoch=lambda d, t: bar.update(task, completed=d, total=t))
    head.save(out)
    return head


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_train(head: Any, out: Path) -> None:
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
    Console().print(table)
    chosen = (f"epochs chosen by cross-validation: {m['best_epoch']}" if cv is not None else
              f"best epoch {m['best_epoch']} of {m['epochs_run']}; held-out cross-entropy "
              f"{_fmt(m['held_out_cross_entropy'])}")
    say(f"{chosen}; loss: {m['loss']}; saved {out}")


def evaluate(run_dir: Path, head_path: Path | None, *, n: int, resamples: int, seed: int,
             threads: int | None, as_json: bool,
             store_as: str = "sprm", dtype: str = "float32") -> Any:
    """Score a run with a head; print AUROC, best-of-n against majority, scoring time."""
    from ttscale.evaluation.runs.records import load_records
    from ttscale.evaluation.sprm import run_model, score_run
    from ttscale.verifiers.sprm.features import feature_dtype
    from ttscale.verifiers.sprm.head import SPRMHead, shipped_head

    if n < 1 or resamples < 1:
        raise ConfigError("-n and --resamples must be positive numbers")
    chosen = feature_dtype(dtype)
    if not store_as.strip() or any(c.isspace() or c in ",:" for c in store_as):
        raise ConfigError(f"--store-as {store_as!r} is not a verifier name: use letters, "
                          "digits, '-' or '_', e.g. --store-as sprm-l14")
    settings, _records = load_records(run_dir)
    name, _path, sha = run_model(settings)
    found = head_path or shipped_head(sha)
    if found is None:
        raise ConfigError(f"no SPRM head ships for {name}: pass --head PATH "
                          "(ttscale sprm train --out PATH makes one)")
    head = SPRMHead.load(found)
    err = Console(stderr=True)
    with feature_progress(err, "features") as tick:
        res = score_run(run_dir, head, n, resamples=resamples, seed=seed,
                        threads=threads, on_question=tick,
                        verifier_name=store_as, dtype=chosen)
    ratio = res.scoring_seconds / res.generation_seconds if res.generation_seconds else None
    summary = {"run": str(run_dir), "head": str(found), "stored_as": store_as,
               "dtype": chosen, "traces": res.traces,
               "correct": res.correct, "auroc": res.auroc, "n": n,
               "questions_replayed": res.questions_replayed,
               "points": {p.strategy: p.accuracy for p in res.points},
               "scoring_seconds": res.scoring_seconds,
               "generation_seconds": res.generation_seconds, "scoring_over_generation": ratio,
               "extracted_now": res.extracted_now,
               "date": datetime.now(UTC).isoformat(timespec="seconds")}
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return res
    table = Table(title=f"{res.questions_replayed} questions, N = {n}, SPRM head "
                        f"{Path(found).name}")
    for col in ("strategy", "accuracy", "95% CI", "tokens/question"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for p in res.points:
        table.add_row(p.strategy, f"{p.accuracy:.1%}",
                      f"{p.ci_low:.1%} .. {p.ci_high:.1%}", f"{p.mean_tokens:,.0f}")
    Console().print(table)
    Console().print(
        f"trace AUROC {_fmt(res.auroc)} over {res.traces} traces ({res.correct} correct); "
        f"scoring {res.scoring_seconds:.1f} s ({chosen}) against {res.generation_seconds:.1f} s of "
        f"stored generation time" + (f" (ratio {ratio:.3f})" if ratio is not None else "")
        + f"; scores stored as verifier {store_as} (ttscale eval replay RUN_DIR "
        f"--verifier {store_as})",
        markup=False, highlight=False)
    return res
