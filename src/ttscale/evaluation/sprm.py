"""SPRM data: step features of a run's stored traces (cached, resumable), training a head,
and scoring a run with one.

Features live beside the run store, one file per question:
``RUN_DIR/sprm-features/layer<L>/<question>.npz`` (float16 vectors of every step end, the
tokens read and the seconds spent per trace), with a ``meta.json`` naming the model, layer
and step delimiter. A question whose file holds all its stored samples is never read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ttscale import models
from ttscale.answers import equivalent, solve_prompt
from ttscale.errors import ConfigError
from ttscale.evaluation.metrics import auroc, curve
from ttscale.evaluation.records import (
    SEED_STRIDE,
    QuestionRecord,
    load_records,
    question_samples,
    sampling_of,
)
from ttscale.store import ScoreRow, Store
from ttscale.types import Usage
from ttscale.verifiers.sprm import HeadMeta, SPRMHead, geometric_mean, sprm_loss
from ttscale.verifiers.sprm_features import chat_text, import_torch
from ttscale.verifiers.steps import DEFAULT_DELIMITER

FEATURES_DIR = "sprm-features"


@dataclass(frozen=True)
class Example:
    """One stored trace with its step features and whether its answer is right."""

    question_id: str
    sample: int  # seed * SEED_STRIDE + index, as in the store
    vectors: np.ndarray
    label: int
    tokens: int
    seconds: float


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


def _check_meta(folder: Path, meta: dict[str, Any]) -> None:
    path = folder / "meta.json"
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored != meta:
            diff = [k for k in meta if stored.get(k) != meta[k]]
            raise ConfigError(f"{folder} holds features with a different {', '.join(diff)}: "
                              "move it away to extract them again")
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
                     delimiter: str = DEFAULT_DELIMITER, batch_size: int = 8,
                     threads: int | None = None, extractor: Any = None,
                     on_question: Callable[[int, int], None] | None = None) -> int:
    """Extract and cache the step features of every stored trace not cached yet; returns
    how many traces were extracted now. ``layer`` ``None``: the run's only cached layer, or
    ``default_layer`` of the model; several layers come from one forward pass through the
    deepest. The model is loaded only when a trace needs it."""
    settings, records = load_records(run_dir)
    name, path, sha = run_model(settings)
    if layer is None and extractor is None and any(
            (p / "meta.json").is_file() for p in (Path(run_dir) / FEATURES_DIR).glob("layer*")):
        layer = int(features_meta(run_dir, None)["layer"])
    loaded: list[Any] = [extractor] if extractor is not None else []
    layers = None if layer is None else sorted({layer} if isinstance(layer, int) else set(layer))

    def model() -> Any:
        if not loaded:
            from ttscale.verifiers.sprm_features import TorchFeatures

            loaded.append(TorchFeatures.load(str(path), layers[-1] if layers else None,
                                             batch_size=batch_size, threads=threads))
        return loaded[0]

    if not layers:
        layers = [model().layer]
    wanted = {w: {"model": name, "model_sha256": sha, "layer": w, "step_delimiter": delimiter}
              for w in layers}
    for w in layers:
        meta_path = features_dir(run_dir, w) / "meta.json"
        if meta_path.is_file():
            stored = json.loads(meta_path.read_text(encoding="utf-8"))
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
    """Every cached trace of a run with its correctness label (answer equivalent to gold)."""
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
    """The ``meta.json`` of a run's cached features at ``layer`` (the only layer if None)."""
    root = Path(run_dir) / FEATURES_DIR
    folders = ([features_dir(run_dir, layer)] if layer is not None
               else sorted(p for p in root.glob("layer*") if (p / "meta.json").is_file()))
    if len(folders) != 1 or not (folders[0] / "meta.json").is_file():
        raise ConfigError(f"{run_dir} has {'no' if not folders else 'several'} cached SPRM "
                          "feature sets: run ttscale sprm collect on it (with --layer)")
    meta: dict[str, Any] = json.loads((folders[0] / "meta.json").read_text(encoding="utf-8"))
    return meta


def trace_scores(head: SPRMHead, examples: Sequence[Example]) -> list[float]:
    """Each example's trace score under ``head``."""
    return [geometric_mean(head.step_scores(e.vectors)) for e in examples]


def _split(examples: Sequence[Example], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and held-out examples, split by question."""
    questions = sorted({e.question_id for e in examples})
    rng = np.random.default_rng(seed)
    rng.shuffle(questions)
    k = round(len(questions) * holdout) if len(questions) > 1 else 0
    held = set(questions[:max(k, 1 if len(questions) > 1 and holdout > 0 else 0)])
    train = [i for i, e in enumerate(examples) if e.question_id not in held]
    return train, [i for i, e in enumerate(examples) if e.question_id in held]


def train_head(examples: Sequence[Example], meta: HeadMeta, *, lr: float = 1e-3,
               weight_decay: float = 1e-2, epochs: int = 300, warmup: int = 25,
               patience: int = 50, holdout: float = 0.2, seed: int = 0,
               threads: int | None = None) -> SPRMHead:
    """Train a head on ``examples``: full-batch AdamW, ``warmup`` epochs of cross-entropy on
    every step, then the SPRM loss; the weights kept are those of the epoch with the best
    held-out trace AUROC (ties: lower trace cross-entropy). The metrics go into its meta.
    ``threads``: torch's CPU threads (on a busy machine, 1 is often fastest for a head).

    Why the warm-up: the SPRM loss only counts steps whose prediction already agrees with
    the trace's label, so from random weights it mostly reinforces chance agreement (held-out
    AUROC about 0.53 on 400 GSM8K train traces of the default model); a head that first
    learnt from every step gives the filter something to keep.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ex = [Example(f"q{i}", 0, rng.normal(size=(2, 4)).astype(np.float32) + i % 2,
        ...               i % 2, 50, 0.1) for i in range(10)]
        >>> head = train_head(ex, HeadMeta("ab" * 32, "m", 1, 2, 4, 8), epochs=20, threads=1)
        >>> head.meta.metrics["held_out"]["questions"], head.meta.metrics["train"]["traces"]
        (2, 8)
    """
    torch = import_torch()
    if threads:
        torch.set_num_threads(threads)
    if not examples:
        raise ConfigError("no traces with features to train on: run ttscale sprm collect "
                          "first")
    train, held = _split(examples, holdout, seed)
    x_train = np.concatenate([examples[i].vectors for i in train])
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # a floor on the scale: near-constant coordinates would otherwise be blown up
    scale = np.maximum(std, 0.1 * float(np.median(std)) + 1e-6).astype(np.float32)
    head = SPRMHead.new(meta, seed=seed, mean=mean, scale=scale)
    x = torch.from_numpy(x_train)
    y = torch.tensor([float(examples[i].label) for i in train
                      for _ in range(len(examples[i].vectors))])
    opt = torch.optim.AdamW(head.module.parameters(), lr=lr, weight_decay=weight_decay)
    # the held-out steps in one tensor, and where each trace's steps start in it
    x_held = torch.from_numpy(np.concatenate([examples[i].vectors for i in held])
                              if held else np.zeros((0, meta.hidden_size), np.float32))
    starts = np.cumsum([0] + [len(examples[i].vectors) for i in held])[:-1]
    t_held = np.array([examples[i].label for i in held], dtype=np.float64)

    def held_out() -> tuple[float, float]:
        """(-AUROC, cross-entropy) of the held-out traces' geometric-mean scores."""
        with torch.inference_mode():
            log_s = torch.nn.functional.logsigmoid(head.logits(x_held)).double().numpy()
        counts = np.diff(np.append(starts, len(log_s)))
        s = np.clip(np.exp(np.add.reduceat(log_s, starts) / counts), 1e-6, 1 - 1e-6)
        ce = float(-(t_held * np.log(s) + (1 - t_held) * np.log(1 - s)).mean())
        area = auroc(s.tolist(), t_held.astype(int).tolist())
        return (-(area if area is not None else 0.5), ce)

    best = ((float("inf"), float("inf")), 0,
            {k: v.clone() for k, v in head.module.state_dict().items()})
    epoch = 0
    for epoch in range(1, epochs + 1):
        head.module.train()
        opt.zero_grad()
        logits = head.logits(x)
        loss = (sprm_loss(logits, y) if epoch > warmup else
                torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
        loss.backward()
        opt.step()
        head.module.eval()
        now = held_out() if held else (0.0, float(loss.detach()))
        if now < best[0]:
            best = (now, epoch, {k: v.clone() for k, v in head.module.state_dict().items()})
        elif epoch - best[1] >= patience and epoch > warmup:
            break
    head.module.load_state_dict(best[2])
    head.module.eval()

    def part(idx: Sequence[int]) -> dict[str, Any]:
        chosen = [examples[i] for i in idx]
        scores = trace_scores(head, chosen)
        return {"questions": len({e.question_id for e in chosen}), "traces": len(chosen),
                "steps": int(sum(len(e.vectors) for e in chosen)),
                "correct": int(sum(e.label for e in chosen)),
                "auroc": auroc(scores, [e.label for e in chosen])}

    metrics = {"train": part(train), "held_out": part(held),
               "held_out_cross_entropy": best[0][1] if held else None,
               "best_epoch": best[1], "epochs_run": epoch, "warmup_epochs": warmup,
               "loss": "cross-entropy on every step, then the SPRM loss"}
    return SPRMHead(HeadMeta(**{**meta.__dict__, "metrics": metrics,
                                "created": datetime.now(UTC).isoformat(timespec="seconds")}),
                    head.module, mean, scale)


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
        >>> from ttscale.evaluation.records import TraceRecord
        >>> from ttscale.store import ResultRow
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
              seed: int = 0, batch_size: int = 8, threads: int | None = None,
              extractor: Any = None,
              on_question: Callable[[int, int], None] | None = None) -> RunScores:
    """Score every stored trace of a run with ``head`` (features extracted where missing),
    store the scores under the verifier name ``sprm``, and replay best-of-n against
    majority at ``n``."""
    settings, records = load_records(run_dir)
    name, _path, sha = run_model(settings)
    head.check_model(sha, name)
    extracted = collect_features(run_dir, head.meta.layer, delimiter=head.meta.step_delimiter,
                                 batch_size=batch_size, threads=threads, extractor=extractor,
                                 on_question=on_question)
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
                rows.append(ScoreRow(g.id, "sprm", tuple(s), geometric_mean(s),
                                     Usage(e.tokens, 0, 0, secs,
                                           2.0 * params * e.tokens * fraction)))
        store.put_scores(rows, replace=True)
    done = [r for r in load_records(run_dir, "sprm")[1]
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
