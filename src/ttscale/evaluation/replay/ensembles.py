"""Ensembles of stored runs: each run directory is one source (a model or a prompt), the
questions they share are the calibration and test set, scored by cross-validation over
questions (``ttscale.aggregation.ensemble``). Behind ``ttscale eval ensemble``.

A source's vote on a question is the answers of its first ``n`` stored samples (all of them
by default), or, with an adaptive stopping rule, of the samples the rule draws in a random
order (the table is then the mean over ``orders`` orders); its tokens are those samples'.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ttscale.aggregation.ensemble import METHODS, QuestionVotes, cross_validate, question_votes
from ttscale.aggregation.stopping import StoppingRule
from ttscale.answers import equivalent
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.adaptive import orders_for, replay_order
from ttscale.evaluation.replay.metrics import prepare
from ttscale.evaluation.runs.records import QuestionRecord, distinct_runs, load_records


@dataclass(frozen=True)
class EnsembleRow:
    """One method's cross-validated accuracy and mean tokens per question, and its mean
    weight per source."""

    method: str
    accuracy: float
    tokens: float
    weights: tuple[float, ...]


@dataclass(frozen=True)
class EnsembleReport:
    """Every method on the shared questions, with each source's own accuracy and tokens."""

    sources: tuple[str, ...]
    questions: int
    source_accuracy: tuple[float, ...]
    source_tokens: tuple[float, ...]
    rows: tuple[EnsembleRow, ...]


def shared_questions(runs: Sequence[Sequence[QuestionRecord]]) -> list[list[QuestionRecord]]:
    """Each run's records of the questions every run has (the first run's order); a
    ``ConfigError`` when none is shared or a gold answer differs.

    Example:
        >>> a = [QuestionRecord("1", "?", "7", ()), QuestionRecord("2", "?", "3", ())]
        >>> [[r.id for r in run] for run in shared_questions([a, a[1:]])]
        [['2'], ['2']]
    """
    common = set.intersection(*[{r.id for r in run} for run in runs])
    if not common:
        raise ConfigError("the runs share no question id: give runs of the same dataset "
                          "questions")
    out = []
    for run in runs:
        by_id = {r.id: r for r in run}
        out.append([by_id[r.id] for r in runs[0] if r.id in common])
    for k in range(len(out[0])):
        golds = {run[k].gold for run in out}
        if len(golds) > 1:
            raise ConfigError(f"question {out[0][k].id} has different gold answers in the runs "
                              f"({', '.join(sorted(golds))}): give runs of the same dataset")
    return out


def votes(runs: Sequence[Sequence[QuestionRecord]], n: int | None,
          rule: StoppingRule | None, rng: random.Random | None) -> list[QuestionVotes]:
    """Per shared question, every source's drawn answers and tokens as ``QuestionVotes``.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> a = [QuestionRecord("q", "2+2?", "4", (TraceRecord(0, 0, "", "4", 10, 20),
        ...                                        TraceRecord(0, 1, "", "5", 10, 30)))]
        >>> b = [QuestionRecord("q", "2+2?", "4", (TraceRecord(0, 0, "", "5", 10, 50),))]
        >>> v = votes([a, b], None, None, None)[0]
        >>> v.candidates, v.correct, v.shares, v.tokens
        (('4', '5'), (True, False), ((0.5, 0.5), (0.0, 1.0)), (70.0, 60.0))
    """
    out = []
    for k, first in enumerate(runs[0]):
        drawn, tokens = [], []
        for run in runs:
            traces = run[k].traces[:n] if n else run[k].traces
            if rule is None or rng is None:
                drawn.append([t.answer for t in traces])
                tokens.append(float(sum(t.tokens for t in traces)))
                continue
            p = prepare([(t.answer, t.tokens, None) for t in traces], first.gold)
            order = orders_for(len(traces), 1, rng)[0]
            o = replay_order(p, rule, order)
            drawn.append([traces[i].answer for i in order[: o.drawn]])
            tokens.append(float(o.tokens))
        out.append(question_votes(first.id, functools.partial(equivalent, first.gold), drawn,
                                  tokens))
    return out


def ensemble_report(run_dirs: Sequence[str | Path], *, n: int | None = None,
                    rule: StoppingRule | None = None, orders: int = 5, folds: int = 0,
                    seed: int = 0) -> EnsembleReport:
    """Every method of ``ttscale.aggregation.ensemble`` over the runs' shared questions.

    Example:
        >>> ensemble_report(["/nonexistent"])
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: an ensemble needs at least 2 run directories, got 1
    """
    if len(run_dirs) < 2:
        raise ConfigError(f"an ensemble needs at least 2 run directories, got {len(run_dirs)}")
    distinct_runs(run_dirs, "an ensemble combines different runs")
    if n is not None and n < 1:
        raise ConfigError(f"--n must be a positive number of samples, got {n}")
    if orders < 1:
        raise ConfigError(f"--orders must be a positive number, got {orders}")
    runs = shared_questions([load_records(d)[1] for d in run_dirs])
    if any(not r.traces for run in runs for r in run):
        raise ConfigError("some shared question has no stored sample in some run: finish "
                          "those runs first")
    rng = random.Random(seed)
    sets = [votes(runs, n, rule, rng) for _ in range(orders if rule is not None else 1)]
    rows = []
    for method in METHODS:
        results = [cross_validate(qs, method, folds) for qs in sets]
        weights = [0.0] * len(runs)
        for r in results:
            for w in r.weights:
                total = sum(w) or 1.0
                for i, x in enumerate(w):
                    weights[i] += x / total / len(r.weights) / len(results)
        rows.append(EnsembleRow(method, sum(r.accuracy for r in results) / len(results),
                                sum(r.mean_tokens for r in results) / len(results),
                                tuple(weights)))
    count = len(sets[0])
    accs = tuple(sum(sum(q.correct[t] for q in qs if (t := q.top(i)) is not None) / count
                     for qs in sets) / len(sets) for i in range(len(runs)))
    toks = tuple(sum(sum(q.tokens[i] for q in qs) / count for qs in sets) / len(sets)
                 for i in range(len(runs)))
    return EnsembleReport(tuple(str(d) for d in run_dirs), count, accs, toks, tuple(rows))
