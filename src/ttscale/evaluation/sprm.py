"""SPRM data: step features of a run's stored traces (cached, resumable), and scoring a run
with a head (training: :mod:`ttscale.verifiers.sprm.train`).

Features live beside the run store, one file per question:
``RUN_DIR/sprm-features/layer<L>/<question>.npz`` (float16 vectors of every step end, the
tokens read and the seconds spent per trace), with a ``meta.json`` naming the model, layer,
step delimiter and the dtype the model ran in. A question whose file holds all its stored
samples is never read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttscale import models
from ttscale.answers import equivalent, solve_prompt
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.metrics import curve
from ttscale.evaluation.runs.records import (
    SEED_STRIDE,
    QuestionRecord,
    load_records,
    question_samples,
    sampling_of,
)
from ttscale.evaluation.runs.store import ScoreRow, Store
from ttscale.stats import auroc
from ttscale.types import Usage
from ttscale.verifiers.sprm.features import chat_text, feature_dtype
from ttscale.verifiers.sprm.head import SPRMHead, geometric_mean
from ttscale.verifiers.sprm.train import Example
from ttscale.verifiers.steps import DEFAULT_DELIMITER

FEATURES_DIR = "sprm-features"
# caches written before the dtype was recorded all ran in float32
LEGACY_DTYPE = "float32"


def _file_name(question_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in question_id)
    return f"{safe}-{hashlib.sha256(question_id.encode()).hexdigest()[:8]}.npz"


def features_dir(run_dir: str | Path, layer: int) -> Path:
    """Where a run's step features of one layer are cached.

    Example:
        >>> features_dir("runs/a", 14).as_posix()
        'runs/a/sprm-features/layer14'
    """
    return Path(run_dir) / FEATURES_DIR / f"layer{layer}"


def _stored_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    meta.setdefault("dtype", LEGACY_DTYPE)
    return meta


def _check_meta(folder: Path, meta: dict[str, Any]) -> None:
    path = folder / "meta.json"
    if path.is_file():
        stored = _stored_meta(path)
        if stored != meta:
            diff = [k for k in meta if stored.get(k) != meta[k]]
            told = ", ".join(f"{k} (cached {stored.get(k)!r}, asked {meta[k]!r})"
                             for k in diff)
            fix = "move the folder away to extract them again"
            if diff == ["dtype"]:
                fix = f"pass --dtype {stored['dtype']} to use them, or {fix}"
            raise ConfigError(f"{folder} holds features with a different {told}: {fix}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _read(path: Path) -> dict[int, tuple[np.ndarray, int, float]]:
    if not path.is_file():
        return {}
    with np.load(path) as z:
        cuts = np.concatenate([[0], np.cumsum(z["steps"])])
        return {int(s): (z["vectors"][cuts[i]:cuts[i + 1]], int(z["tokens"][i]),
                         float(z["seconds"][i])) for i, s in enumerate(z["sample"])}


def _write(path: Path, rows: dict[int, tuple[np.ndarray, int, float]]) -> None:
    order = sorted(rows)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, sample=np.array(order, dtype=np.int64),
             steps=np.array([len(rows[s][0]) for s in order], dtype=np.int64),
             vectors=np.concatenate([rows[s][0] for s in order]).astype(np.float16),
             tokens=np.array([rows[s][1] for s in order], dtype=np.int64),
             seconds=np.array([rows[s][2] for s in order], dtype=np.float64))
    os.replace(tmp, path)  # atomic: a killed run never leaves half a file under the name


def _sample(seed: int, index: int) -> int:
    return seed * SEED_STRIDE + index


def run_model(settings: dict[str, Any]) -> tuple[str, Path, str]:
    """(model name, GGUF path, SHA-256) of an eval run made with the llamacpp backend.

    Example:
        >>> run_model({"kind": "import"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: SPRM features need a run made by ttscale eval or ...
    """
    if settings.get("kind") != "eval":
        raise ConfigError("SPRM features need a run made by ttscale eval or ttscale sprm "
                          "collect (an imported run has no trace texts)")
    name = str(settings["model"])
    try:
        path, spec = models.resolve(name)
    except ConfigError as exc:
        raise ConfigError(f"the run's model {name!r} is not a local GGUF, so its hidden "
                          "states cannot be read: SPRM needs a run of the llamacpp backend"
                          ) from exc
    sha = spec.sha256 if spec is not None else models.sha256_of(path)
    if sha != settings["model_sha256"]:
        raise ConfigError(f"the model file {path} is not the one the run was made with "
                          "(SHA-256 differs): restore that model file")
    return name, path, sha


def collect_features(run_dir: str | Path, layer: int | Sequence[int] | None, *,
                     delimiter: str = DEFAULT_DELIMITER,
                     threads: int | None = None, extractor: Any = None,
                     on_question: Callable[[int, int], None] | None = None,
                     dtype: str = "float32") -> int:
    """Extract and cache the step features of every stored trace not cached yet; returns
    how many traces were extracted now. ``layer`` ``None``: the run's only cached layer, or
    ``default_layer`` of the model; several layers come from one forward pass through the
    deepest. The model is loaded only when a trace needs it, in ``dtype`` (see
    ``feature_dtype``); a cache made in another dtype is refused, never mixed.

    Example:
        >>> collect_features("runs/sprm-train", layer=[8, 14])  # doctest: +SKIP
        3120
    """
    chosen = feature_dtype(dtype)
    settings, records = load_records(run_dir)
    name, path, sha = run_model(settings)
    if layer is None and extractor is None and any(
            (p / "meta.json").is_file() for p in (Path(run_dir) / FEATURES_DIR).glob("layer*")):
        layer = int(features_meta(run_dir, None)["layer"])
    loaded: list[Any] = [extractor] if extractor is not None else []
    layers = None if layer is None else sorted({layer} if isinstance(layer, int) else set(layer))

    def model() -> Any:
        if not loaded:
            from ttscale.verifiers.sprm.features import TorchFeatures

            loaded.append(TorchFeatures.load(str(path), layers[-1] if layers else None,
                                             threads=threads, dtype=chosen))
        return loaded[0]

    if not layers:
        layers = [model().layer]
    wanted = {w: {"model": name, "model_sha256": sha, "layer": w, "step_delimiter": delimiter,
                  "dtype": chosen} for w in layers}
    for w in layers:
        meta_path = features_dir(run_dir, w) / "meta.json"
        if meta_path.is_file():
            stored = _stored_meta(meta_path)
            _check_meta(features_dir(run_dir, w), {**stored, **wanted[w]})
    done = 0
    for i, record in enumerate(records):
        targets = {w: features_dir(run_dir, w) / _file_name(record.id) for w in layers}
        have = {w: _read(targets[w]) for w in layers}
        todo = [t for t in record.traces
                if any(_sample(t.seed, t.index) not in have[w] for w in layers)]
        if todo:
            ext = model()
            for w in layers:
                _check_meta(features_dir(run_dir, w), {**wanted[w], "n_layers": ext.n_layers,
                                                       "hidden_size": ext.hidden_size})
            start = time.perf_counter()
            out = ext.extract_layers(chat_text(ext.tokenizer, record.question),
                                     [t.text for t in todo], delimiter, layers)
            # the seconds of the pass through the deepest layer, shared out by tokens read
            share = (time.perf_counter() - start) / max(sum(o.tokens for o in out[layers[-1]]),
                                                        1)
            for w in layers:
                for t, o in zip(todo, out[w], strict=True):
                    have[w][_sample(t.seed, t.index)] = (o.vectors, o.tokens, share * o.tokens)
                _write(targets[w], have[w])
            done += len(todo)
        if on_question is not None:
            on_question(i + 1, len(records))
    return done


def load_examples(run_dir: str | Path, layer: int,
                  records: Sequence[QuestionRecord] | None = None) -> list[Example]:
    """Every cached trace of a run with its correctness label (answer equivalent to gold).

    Example:
        >>> examples = load_examples("runs/sprm-train", 14)  # doctest: +SKIP
        >>> len(examples), examples[0].vectors.shape, examples[0].label  # doctest: +SKIP
        (3120, (6, 1536), 1)
    """
    if records is None:
        records = load_records(run_dir)[1]
    folder = features_dir(run_dir, layer)
    out = []
    for r in records:
        have = _read(folder / _file_name(r.id))
        for t in r.traces:
            row = have.get(_sample(t.seed, t.index))
            if row is None:
                continue
            label = int(t.answer is not None and equivalent(r.gold, t.answer))
            out.append(Example(r.id, _sample(t.seed, t.index), row[0].astype(np.float32),
                               label, row[1], row[2]))
    return out


def features_meta(run_dir: str | Path, layer: int | None) -> dict[str, Any]:
    """The ``meta.json`` of a run's cached features at ``layer`` (the only layer if None).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> features_dir(d, 14).mkdir(parents=True)
        >>> _ = (features_dir(d, 14) / "meta.json").write_text('{"layer": 14, "model": "m"}')
        >>> features_meta(d, None)  # a cache written before dtypes were recorded: float32
        {'layer': 14, 'model': 'm', 'dtype': 'float32'}
    """
    root = Path(run_dir) / FEATURES_DIR
    folders = ([features_dir(run_dir, layer)] if layer is not None
               else sorted(p for p in root.glob("layer*") if (p / "meta.json").is_file()))
    if len(folders) != 1 or not (folders[0] / "meta.json").is_file():
        raise ConfigError(f"{run_dir} has {'no' if not folders else 'several'} cached SPRM "
                          "feature sets: run ttscale sprm collect on it (with --layer)")
    return _stored_meta(folders[0] / "meta.json")


@dataclass(frozen=True)
class RunScores:
    """What scoring a run with a head found: trace-level AUROC, the replayed curve points at
    ``n`` (majority, best_of_n and weighted_best_of_n by SPRM), scoring against generation
    seconds, and how many traces needed features extracted now."""

    traces: int
    correct: int
    auroc: float | None
    points: tuple[Any, ...]
    scoring_seconds: float
    generation_seconds: float
    extracted_now: int
    questions_replayed: int


def generation_seconds(record: QuestionRecord) -> float:
    """The wall seconds the question's stored traces took, from its result rows (each row
    holds its n/N share of the question's time; with a verifier in the run, its time too).

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> from ttscale.evaluation.runs.store import ResultRow
        >>> t = TraceRecord(0, 0, "so 4", "4", 10, 20)
        >>> row = ResultRow("eval", "q", "majority", 2, 0, "4", True, Usage(seconds=3.0))
        >>> generation_seconds(QuestionRecord("q", "2+2?", "4", (t,) * 4, (row,)))
        6.0
    """
    rows = [r for r in record.results if r.strategy in ("majority", "best_of_n",
                                                          "weighted_best_of_n")]
    if not rows or not record.traces:
        return 0.0
    row = max(rows, key=lambda r: r.n)
    return row.usage.seconds * len(record.traces) / row.n


def score_run(run_dir: str | Path, head: SPRMHead, n: int, *, resamples: int = 200,
              seed: int = 0, threads: int | None = None,
              extractor: Any = None,
              on_question: Callable[[int, int], None] | None = None,
              verifier_name: str = "sprm", dtype: str = "float32") -> RunScores:
    """Score every stored trace of a run with ``head`` (features extracted where missing, the
    model in ``dtype``), store the scores under ``verifier_name``, and replay best-of-n
    against majority at ``n``.

    Example:
        >>> head = SPRMHead.load("heads/qwen2.5-coder-1.5b.sprm.safetensors")  # doctest: +SKIP
        >>> scores = score_run("runs/gsm8k-test-0-39", head, n=8)  # doctest: +SKIP
        >>> scores.traces, [p.strategy for p in scores.points]  # doctest: +SKIP
        (320, ['majority', 'best_of_n', 'weighted_best_of_n'])
    """
    settings, records = load_records(run_dir)
    name, _path, sha = run_model(settings)
    head.check_model(sha, name)
    extracted = collect_features(run_dir, head.meta.layer, delimiter=head.meta.step_delimiter,
                                 threads=threads, extractor=extractor,
                                 on_question=on_question, dtype=dtype)
    examples = load_examples(run_dir, head.meta.layer, records)
    start = time.perf_counter()
    steps = [head.step_scores(e.vectors) for e in examples]
    head_seconds = time.perf_counter() - start
    spec = models.CATALOG.get(name)
    params = spec.params_count if spec is not None else 0
    fraction = head.meta.layer / max(head.meta.n_layers, 1)
    by_sample = {(e.question_id, e.sample): (e, s) for e, s in zip(examples, steps, strict=True)}
    with Store.open(run_dir, settings) as store:
        rows = []
        for r in records:
            prompt = solve_prompt(r.question, settings["system_prompt"])
            stored = store.get_generations(sha, prompt, sampling_of(settings), 0, 2**62)
            for index, g in stored.items():
                found = by_sample.get((r.id, index))
                if found is None:
                    continue
                e, s = found
                secs = e.seconds + head_seconds / max(len(examples), 1)
                rows.append(ScoreRow(g.id, verifier_name, tuple(s), geometric_mean(s),
                                     Usage(e.tokens, 0, 0, secs,
                                           2.0 * params * e.tokens * fraction)))
        store.put_scores(rows, replace=True)
        # the name now stands for this head: an eval resuming with another is refused
        store.bind(f"verifier:{verifier_name}", head.identity, replace=True)
    done = [r for r in load_records(run_dir, verifier_name)[1]
            if len(r.traces) >= n and all(t.score is not None for t in r.traces)]
    samples = question_samples(done)
    points: list[Any] = []
    if samples:
        for strategy in ("majority", "best_of_n", "weighted_best_of_n"):
            points.extend(curve(samples, [n], strategy, resamples=resamples, seed=seed))
    return RunScores(
        len(examples), sum(e.label for e in examples),
        auroc([geometric_mean(s) for s in steps], [e.label for e in examples]), tuple(points),
        sum(e.seconds for e in examples) + head_seconds,
        sum(generation_seconds(r) for r in records), extracted, len(done))
