"""Training an SPRM head on cached step features: backbone frozen, PyTorch on CPU.

Full-batch AdamW: ``warmup`` epochs of binary cross-entropy on every step, then the SPRM loss
(cross-entropy only on the steps whose prediction agrees with the trace's label). How many
epochs the head keeps is chosen on questions it did not train on, in one of two ways:

- ``folds`` >= 2 (what ``ttscale sprm train`` does by default): k-fold cross-validation by
  question; every fold runs the same schedule, the epoch count with the best mean held-out
  trace AUROC wins, and a head is then trained on all questions for that many epochs;
- ``folds`` 0: one held-out share of the questions; the weights of its best epoch are kept.

Why cross-validation: with 100 GSM8K train questions, a 20-question hold-out picks epochs
noisily (held-out AUROC 0.65 to 0.70 for three seeds of one split), and it leaves a fifth of
the scarce labelled traces out of the head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.stats import auroc
from ttscale.verifiers.sprm.features import import_torch
from ttscale.verifiers.sprm.head import HeadMeta, SPRMHead, geometric_mean, sprm_loss

Progress = Callable[[int, int], None]  # (epochs done, epochs in all)


@dataclass(frozen=True)
class Example:
    """One stored trace with its step features and whether its answer is right."""

    question_id: str
    sample: int  # seed * SEED_STRIDE + index, as in the store
    vectors: np.ndarray
    label: int
    tokens: int
    seconds: float


def trace_scores(head: SPRMHead, examples: Sequence[Example]) -> list[float]:
    """Each example's trace score under ``head``.

    Example:
        >>> head = SPRMHead.new(HeadMeta("ab" * 32, "m", 4, 8, 3, 5), seed=0)
        >>> steps = Example("q", 0, np.ones((2, 3), dtype=np.float32), 1, 40, 0.1)
        >>> scores = trace_scores(head, [steps, steps])
        >>> len(scores), scores[0] == scores[1], 0.0 < scores[0] < 1.0
        (2, True, True)
    """
    return [geometric_mean(head.step_scores(e.vectors)) for e in examples]


@dataclass(frozen=True)
class Schedule:
    """The optimiser settings and the loss schedule shared by every fit."""

    lr: float = 1e-3
    weight_decay: float = 1e-2
    epochs: int = 300
    warmup: int = 25

    def loss_name(self, epochs: int) -> str:
        """What the kept weights were trained with, for the head's metadata.

        Example:
            >>> Schedule(warmup=25).loss_name(20)
            'cross-entropy on every step (20 epochs)'
            >>> Schedule(warmup=25).loss_name(90)
            'cross-entropy on every step (25 epochs), then the SPRM loss (65 epochs)'
        """
        if epochs <= self.warmup:
            return f"cross-entropy on every step ({epochs} epochs)"
        warm = f"cross-entropy on every step ({self.warmup} epochs), then " if self.warmup else ""
        return f"{warm}the SPRM loss ({epochs - self.warmup} epochs)"


@dataclass(frozen=True)
class CrossValidation:
    """Mean held-out trace AUROC over the folds after each epoch, and the best epoch."""

    folds: int
    by_epoch: tuple[float, ...]
    best_epoch: int

    @property
    def auroc(self) -> float:
        return self.by_epoch[self.best_epoch - 1]


def _standardiser(examples: Sequence[Example], idx: Sequence[int]) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    x = np.concatenate([examples[i].vectors for i in idx])
    std = x.std(axis=0)
    # a floor on the scale: near-constant coordinates would otherwise be blown up
    return x.mean(axis=0), np.maximum(std, 0.1 * float(np.median(std)) + 1e-6).astype(
        np.float32)


class _HeldOut:
    """Trace-level AUROC and cross-entropy of a head's geometric-mean scores on some traces."""

    def __init__(self, examples: Sequence[Example], idx: Sequence[int], hidden: int):
        torch = import_torch()
        self.x = torch.from_numpy(np.concatenate([examples[i].vectors for i in idx])
                                  if idx else np.zeros((0, hidden), np.float32))
        self.starts = np.cumsum([0] + [len(examples[i].vectors) for i in idx])[:-1]
        self.labels = np.array([examples[i].label for i in idx], dtype=np.float64)

    def __call__(self, head: SPRMHead) -> tuple[float | None, float]:
        torch = import_torch()
        with torch.inference_mode():
            log_s = torch.nn.functional.logsigmoid(head.logits(self.x)).double().numpy()
        counts = np.diff(np.append(self.starts, len(log_s)))
        s = np.clip(np.exp(np.add.reduceat(log_s, self.starts) / counts), 1e-6, 1 - 1e-6)
        t = self.labels
        ce = float(-(t * np.log(s) + (1 - t) * np.log(1 - s)).mean())
        return auroc(s.tolist(), t.astype(int).tolist()), ce


def _fit(head: SPRMHead, examples: Sequence[Example], idx: Sequence[int], schedule: Schedule,
         epochs: int, after_epoch: Callable[[int], bool]) -> int:
    """Train ``head`` in place on the traces ``idx`` for at most ``epochs`` epochs; after
    each, ``after_epoch(epoch)`` (head in eval mode) may stop it by returning True. Returns
    the epochs run."""
    torch = import_torch()
    x = torch.from_numpy(np.concatenate([examples[i].vectors for i in idx]))
    y = torch.tensor([float(examples[i].label) for i in idx
                      for _ in range(len(examples[i].vectors))])
    opt = torch.optim.AdamW(head.module.parameters(), lr=schedule.lr,
                            weight_decay=schedule.weight_decay)
    epoch = 0
    for epoch in range(1, epochs + 1):
        head.module.train()
        opt.zero_grad()
        logits = head.logits(x)
        loss = (sprm_loss(logits, y) if epoch > schedule.warmup else
                torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
        loss.backward()
        opt.step()
        head.module.eval()
        if after_epoch(epoch):
            break
    head.module.eval()
    return epoch


def _question_folds(examples: Sequence[Example], folds: int, seed: int) -> list[list[int]]:
    questions = sorted({e.question_id for e in examples})
    np.random.default_rng(seed).shuffle(questions)
    fold_of = {q: i % folds for i, q in enumerate(questions)}
    return [[i for i, e in enumerate(examples) if fold_of[e.question_id] == f]
            for f in range(folds)]


def cross_validate(examples: Sequence[Example], meta: HeadMeta, schedule: Schedule, *,
                   folds: int = 5, seed: int = 0,
                   on_epoch: Progress | None = None) -> CrossValidation:
    """k-fold cross-validation by question of the training schedule: the mean held-out trace
    AUROC after every epoch (folds whose held-out traces all share one label are left out),
    and the epoch where it peaks (the earliest of equal ones).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ex = [Example(f"q{i}", 0, rng.normal(size=(2, 4)).astype(np.float32) + i % 2,
        ...               i % 2, 50, 0.1) for i in range(12)]
        >>> cv = cross_validate(ex, HeadMeta("ab" * 32, "m", 1, 2, 4, 8), Schedule(epochs=5),
        ...                     folds=3)
        >>> cv.folds, len(cv.by_epoch), 1 <= cv.best_epoch <= 5
        (3, 5, True)
    """
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, not {folds}: use "
                          "--folds 5, or --folds 0 for one held-out share")
    parts = _question_folds(examples, folds, seed)
    if any(not p for p in parts):
        have = len({e.question_id for e in examples})
        raise ConfigError(f"{folds} folds need at least {folds} training questions, and "
                          f"there are {have}: lower --folds or collect more questions")
    sums, counts = np.zeros(schedule.epochs), np.zeros(schedule.epochs)
    for f, held in enumerate(parts):
        train = [i for p in parts if p is not held for i in p]
        mean, scale = _standardiser(examples, train)
        head = SPRMHead.new(meta, seed=seed + f, mean=mean, scale=scale)
        judge = _HeldOut(examples, held, meta.hidden_size)

        def after(epoch: int, fold: int = f, head: SPRMHead = head,
                  judge: _HeldOut = judge) -> bool:
            area = judge(head)[0]
            if area is not None:
                sums[epoch - 1] += area
                counts[epoch - 1] += 1
            if on_epoch is not None:
                on_epoch(fold * schedule.epochs + epoch, (folds + 1) * schedule.epochs)
            return False

        _fit(head, examples, train, schedule, schedule.epochs, after)
    by_epoch = tuple(float(s / c) if c else 0.5 for s, c in zip(sums, counts, strict=True))
    return CrossValidation(folds, by_epoch, int(np.argmax(by_epoch)) + 1)


def out_of_fold_scores(examples: Sequence[Example], meta: HeadMeta, schedule: Schedule, *,
                       folds: int = 5, seed: int = 0) -> list[float]:
    """Each example's trace score from a head trained for ``schedule.epochs`` epochs (as
    ``train_head`` trains) on the other folds' questions: scores no head saw the labels of, for
    judging on a training collection how a head would select and weight answers.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ex = [Example(f"q{i}", 0, rng.normal(size=(2, 4)).astype(np.float32) + i % 2,
        ...               i % 2, 50, 0.1) for i in range(12)]
        >>> s = out_of_fold_scores(ex, HeadMeta("ab" * 32, "m", 1, 2, 4, 8), Schedule(epochs=5),
        ...                        folds=3)
        >>> len(s), all(0 < x < 1 for x in s)
        (12, True)
    """
    if folds < 2:
        raise ConfigError(f"out-of-fold scores need at least 2 folds, not {folds}")
    scores = [0.0] * len(examples)
    for f, held in enumerate(_question_folds(examples, folds, seed)):
        if not held:
            continue
        kept = set(held)
        train = [i for i in range(len(examples)) if i not in kept]
        mean, scale = _standardiser(examples, train)
        head = SPRMHead.new(meta, seed=seed + f, mean=mean, scale=scale)
        _fit(head, examples, train, schedule, schedule.epochs, lambda _epoch: False)
        for i, s in zip(held, trace_scores(head, [examples[i] for i in held]), strict=True):
            scores[i] = s
    return scores


def _split(examples: Sequence[Example], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and held-out examples, split by question."""
    questions = sorted({e.question_id for e in examples})
    rng = np.random.default_rng(seed)
    rng.shuffle(questions)
    k = round(len(questions) * holdout) if len(questions) > 1 else 0
    held = set(questions[:max(k, 1 if len(questions) > 1 and holdout > 0 else 0)])
    train = [i for i, e in enumerate(examples) if e.question_id not in held]
    return train, [i for i, e in enumerate(examples) if e.question_id in held]


def _part(head: SPRMHead, examples: Sequence[Example], idx: Sequence[int]) -> dict[str, Any]:
    chosen = [examples[i] for i in idx]
    return {"questions": len({e.question_id for e in chosen}), "traces": len(chosen),
            "steps": int(sum(len(e.vectors) for e in chosen)),
            "correct": int(sum(e.label for e in chosen)),
            "auroc": auroc(trace_scores(head, chosen), [e.label for e in chosen])}


def train_head(examples: Sequence[Example], meta: HeadMeta, *, lr: float = 1e-3,
               weight_decay: float = 1e-2, epochs: int = 300, warmup: int = 25,
               patience: int = 50, holdout: float = 0.2, folds: int = 0, seed: int = 0,
               threads: int | None = None, on_epoch: Progress | None = None) -> SPRMHead:
    """Train a head on ``examples``; the epochs it keeps are chosen by ``folds``-fold
    cross-validation (``folds`` >= 2, then trained on every example) or on a ``holdout``
    share of the questions (the best epoch's weights; stops ``patience`` epochs after it).
    The metrics go into its meta. ``threads``: torch's CPU threads (on a busy machine, 1 is
    often fastest for a head).

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
    schedule = Schedule(lr, weight_decay, epochs, warmup)
    cv = None
    if folds >= 2:
        cv = cross_validate(examples, meta, schedule, folds=folds, seed=seed,
                            on_epoch=on_epoch)
        train, held = list(range(len(examples))), list[int]()
    else:
        train, held = _split(examples, holdout, seed)
    mean, scale = _standardiser(examples, train)
    head = SPRMHead.new(meta, seed=seed, mean=mean, scale=scale)
    judge = _HeldOut(examples, held, meta.hidden_size)
    best: list[Any] = [(float("inf"), float("inf")), 0, None]

    def after(epoch: int) -> bool:
        if on_epoch is not None:
            before = folds * epochs if cv else 0
            on_epoch(before + epoch, before + (cv.best_epoch if cv else epochs))
        if cv is not None or not held:
            return False
        area, ce = judge(head)
        now = (-(area if area is not None else 0.5), ce)
        if now < best[0]:
            best[:] = [now, epoch, {k: v.clone() for k, v in head.module.state_dict().items()}]
        return epoch - best[1] >= patience and epoch > warmup

    run = _fit(head, examples, train, schedule, cv.best_epoch if cv else epochs, after)
    if best[2] is not None:
        head.module.load_state_dict(best[2])
        head.module.eval()
    kept = cv.best_epoch if cv else best[1] if held else run
    metrics: dict[str, Any] = {
        "train": _part(head, examples, train), "held_out": _part(head, examples, held),
        "held_out_cross_entropy": best[0][1] if held else None,
        "best_epoch": kept, "epochs_run": run, "warmup_epochs": warmup,
        "loss": schedule.loss_name(kept)}
    if cv is not None:
        metrics["cross_validation"] = {
            "folds": cv.folds, "auroc": cv.auroc, "best_epoch": cv.best_epoch,
            "auroc_by_epoch": {str(e): round(cv.by_epoch[e - 1], 4)
                               for e in sorted({1, 10, 25, 50, 100, 200, epochs, cv.best_epoch})
                               if e <= epochs}}
    return SPRMHead(HeadMeta(**{**meta.__dict__, "metrics": metrics,
                                "created": datetime.now(UTC).isoformat(timespec="seconds")}),
                    head.module, mean, scale)
