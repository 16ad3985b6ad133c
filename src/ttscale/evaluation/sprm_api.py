"""The SPRM head's three steps as library calls: collect traces and their step features,
train a head, evaluate a head on a run. Like :mod:`ttscale.evaluation.api`, each takes plain
values and an optional ``progress`` callback, returns a small record and prints nothing.

Example (a head trains on GSM8K train only; a test run is refused before anything loads):
    >>> check_train_run(Path("runs/x"), {"dataset": "gsm8k", "split": "test"})
    Traceback (most recent call last):
    ...
    ttscale.errors.ConfigError: runs/x holds gsm8k test traces, and an SPRM head trains on \
gsm8k train only: collect with ttscale sprm collect --split train
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttscale.errors import ConfigError
from ttscale.evaluation.progress import ProgressFn, report

if TYPE_CHECKING:
    from ttscale.evaluation.api import EvalRun
    from ttscale.evaluation.sprm import RunScores
    from ttscale.verifiers.sprm.head import SPRMHead

TRAIN_DATASET, TRAIN_SPLIT = "gsm8k", "train"


@dataclass(frozen=True)
class Collected:
    """What :func:`sprm_collect` did: the eval run that sampled the traces, and how many
    traces had their step features extracted now."""

    run: EvalRun
    extracted: int


def sprm_collect(out: str | Path, *, dataset: str = TRAIN_DATASET, split: str = TRAIN_SPLIT,
                 ids: str | None = None, limit: int | None = None, n: int = 4,
                 model: str | None = None, max_tokens: int = 1024, temperature: float = 0.7,
                 concurrency: int = 4, layer: Sequence[int] | None = None,
                 threads: int | None = None, dtype: str = "float32",
                 progress: ProgressFn | None = None) -> Collected:
    """Sample and grade traces through the eval harness into ``out`` (same store,
    resumable), then cache the step features of every trace at ``layer`` (one or several
    layers, read in one pass through the deepest; default: half the model's depth). Returns
    the eval run and the traces whose features were extracted now (the others were cached).

    Example (the default model: hours on a CPU; ``ttscale sprm collect`` is the same call):
        >>> got = sprm_collect("runs/sprm-train", ids="0-199", n=4,
        ...                    layer=[14])  # doctest: +SKIP
        >>> got.run.outcome.new_samples, got.extracted  # doctest: +SKIP
        (800, 800)
        >>> sprm_collect("runs/x", dtype="float16")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ...float16...
    """
    from ttscale.evaluation.api import evaluate
    from ttscale.evaluation.sprm import collect_features
    from ttscale.verifiers.sprm.features import DTYPES, feature_dtype

    if dtype not in DTYPES:
        feature_dtype(dtype)  # one sentence naming the choices, before any sampling
    run = evaluate(dataset, out, strategies="majority", ns=[n], split=split, limit=limit, ids=ids,
             model=model, max_tokens=max_tokens, temperature=temperature,
             concurrency=concurrency, threads=threads, progress=progress)
    report(progress, "features", "loading the model for step features (transformers)...")

    def tick(done: int, total: int) -> None:
        report(progress, "features", done=done, total=total, unit="questions")

    report(progress, "features", done=0, total=None, unit="questions")
    return Collected(run, collect_features(out, layer, threads=threads, on_question=tick,
                                           dtype=dtype))


def check_train_run(run_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse a run that is not GSM8K train: a head must never see test questions.

    Example:
        >>> check_train_run(Path("runs/a"), {"dataset": "gsm8k", "split": "train"})  # accepted
        >>> check_train_run(Path("runs/a"), {"dataset": "gsm8k", "split": "test"})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: runs/a holds gsm8k test traces, and an SPRM head trains on ...
    """
    dataset, split = settings.get("dataset"), settings.get("split")
    if dataset != TRAIN_DATASET or split != TRAIN_SPLIT:
        raise ConfigError(f"{run_dir} holds {dataset} {split} traces, and an SPRM head trains "
                          f"on {TRAIN_DATASET} {TRAIN_SPLIT} only: collect with "
                          f"ttscale sprm collect --split {TRAIN_SPLIT}")


def sprm_train(runs: Sequence[str | Path], out: str | Path, *, layer: int | None = None,
               width: int = 256, epochs: int = 300, lr: float = 1e-3, holdout: float = 0.2,
               seed: int = 0, threads: int | None = None, warmup: int = 25, folds: int = 5,
               progress: ProgressFn | None = None) -> SPRMHead:
    """Train a head on the cached step features of GSM8K train ``runs`` (made by
    :func:`sprm_collect`; the backbone stays frozen) and save it at ``out``
    (``out.sprm.safetensors`` and ``out.sprm.json``). The epoch count is chosen by
    ``folds``-fold cross-validation by question, then a head trains on every question;
    ``folds=0`` holds out ``holdout`` of the questions instead. Returns the head, its
    metrics in ``head.meta.metrics``.

    Example (``ttscale sprm train`` is the same call):
        >>> head = sprm_train(["runs/sprm-train"], "heads/mine")  # doctest: +SKIP
        >>> head.meta.metrics["cross_validation"]["auroc"]  # doctest: +SKIP
        0.79
        >>> sprm_train([], "heads/x")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: sprm_train needs at least one run made by sprm collect
    """
    from ttscale.evaluation.runs.records import load_records
    from ttscale.evaluation.sprm import features_meta, load_examples
    from ttscale.files import output_file
    from ttscale.verifiers.sprm.head import HeadMeta, features_text, head_paths
    from ttscale.verifiers.sprm.train import train_head

    if not runs:
        raise ConfigError("sprm_train needs at least one run made by sprm collect")
    output_file(head_paths(out)[0], "head")  # a wrong --out fails now, not after the training
    if (width < 1 or epochs < 1 or not 0 < lr < math.inf or warmup < 0 or not 0 <= holdout < 1
            or folds < 0 or folds == 1):
        raise ConfigError("--width, --epochs and --lr must be positive, --warmup at least 0, "
                          "--holdout in [0, 1) and --folds 0 or at least 2: e.g. --width 256 "
                          "--epochs 300 --warmup 25 --lr 0.001 --folds 5")
    examples: list[Any] = []
    meta: dict[str, Any] | None = None
    training: dict[str, Any] = {"dataset": TRAIN_DATASET, "split": TRAIN_SPLIT, "runs": []}
    for run in map(Path, runs):
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
    assert meta is not None  # runs is not empty
    head_meta = HeadMeta(meta["model_sha256"], meta["model"], int(meta["layer"]),
                         int(meta["n_layers"]), int(meta["hidden_size"]), width,
                         meta["step_delimiter"], training,
                         features=features_text(str(meta["dtype"])))
    what = f"training ({folds} folds, then all)" if folds else "training"
    report(progress, "training", what, done=0, total=None, unit="epochs")
    head = train_head(examples, head_meta, lr=lr, epochs=epochs, warmup=warmup,
                      holdout=holdout, folds=folds, seed=seed, threads=threads,
                      on_epoch=lambda d, t: report(progress, "training", what, done=d,
                                                    total=t, unit="epochs"))
    head.save(Path(out))
    return head


@dataclass(frozen=True)
class SPRMEvaluation:
    """What :func:`sprm_evaluate` measured: the run's scores (``scores``: AUROC, best-of-n
    and weighted best-of-n against majority, seconds) and the head and settings behind them
    (``summary``: JSON-ready)."""

    scores: RunScores
    head: Path
    dtype: str
    summary: dict[str, Any] = field(default_factory=dict)


def sprm_evaluate(run_dir: str | Path, head: str | Path | None = None, *, n: int = 8,
                  resamples: int = 200, seed: int = 0, threads: int | None = None,
                  store_as: str = "sprm", dtype: str = "float32",
                  progress: ProgressFn | None = None) -> SPRMEvaluation:
    """Score a run's traces with an SPRM head (default: the one shipped for the run's
    model): trace AUROC, best-of-n and weighted best-of-n against majority at ``n``, scoring
    against generation time. The scores are stored in the run as verifier ``store_as``, so
    :func:`ttscale.replay` and :func:`ttscale.compare_verifiers` read them.

    Example (``ttscale sprm eval`` is the same call):
        >>> ev = sprm_evaluate("runs/gsm8k-test-0-39", n=8)  # doctest: +SKIP
        >>> ev.scores.auroc, [p.strategy for p in ev.scores.points]  # doctest: +SKIP
        (0.8, ['majority', 'best_of_n [sprm]', 'weighted_best_of_n [sprm]'])
        >>> sprm_evaluate("runs/x", store_as="a b")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: --store-as 'a b' is not a verifier name: use letters, \
digits, '-' or '_', e.g. --store-as sprm-l14
    """
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
    found = Path(head) if head is not None else shipped_head(sha)
    if found is None:
        raise ConfigError(f"no SPRM head ships for {name}: pass --head PATH "
                          "(ttscale sprm train --out PATH makes one)")

    def tick(done: int, total: int) -> None:
        report(progress, "features", done=done, total=total, unit="questions")

    report(progress, "features", done=0, total=None, unit="questions")
    res = score_run(run_dir, SPRMHead.load(found), n, resamples=resamples, seed=seed,
                    threads=threads, on_question=tick, verifier_name=store_as, dtype=chosen)
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
    return SPRMEvaluation(res, found, chosen, summary)
