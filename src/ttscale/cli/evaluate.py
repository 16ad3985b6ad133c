"""The work behind ``ttscale eval``, ``ttscale eval import-samples`` and ``ttscale eval
replay``: generation runs, imports, and their curves, tables and files."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ttscale.aggregation.confidence import parse_confidence
from ttscale.aggregation.pruning import parse_prune
from ttscale.aggregation.stopping import DEFAULT_RULE, parse_rule
from ttscale.backends.base import load_backend
from ttscale.cli.common import say
from ttscale.cli.efficiency import (
    CONFIDENCE,
    DEFAULT_CONFIDENCE,
    PRUNE,
    auto_temperature,
    efficiency_points,
)
from ttscale.cli.render import format_flops
from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem, load_dataset
from ttscale.evaluation.harness import (
    REPLAYED,
    VERIFIED,
    EvalConfig,
    EvalOutcome,
    Harness,
    Tick,
    check_same_questions,
    run_settings,
)
from ttscale.evaluation.replay.adaptive import adaptive_curve
from ttscale.evaluation.replay.metrics import STRATEGY_AGGREGATES, CurvePoint, curve
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.importers import FORMATS, import_boinf
from ttscale.evaluation.runs.imports import max_n, store_imported
from ttscale.evaluation.runs.records import (
    QuestionRecord,
    load_records,
    question_samples,
    solved_curve,
    with_costs,
)
from ttscale.evaluation.runs.store import FILE_NAME, Store

STRATEGIES = ("majority", "best_of_n", "weighted_best_of_n", "pass@k", "adaptive_majority",
              "deepconf", "deepconf_online", "deepprune")
ADAPTIVE = "adaptive_majority"  # replayed per stopping rule (--rule), n = its n_max
RESULTS = "results.jsonl"


def import_samples(file: Path, out: Path, fmt: str) -> None:
    """Read FILE in format ``fmt`` and store it in the run directory ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown sample format {fmt!r}: choose one of {', '.join(FORMATS)}")
    questions = import_boinf(file)
    count, new = store_imported(out, questions, file, fmt)
    samples = sum(len(q.samples) for q in questions)
    say(f"imported {count} questions, {samples} samples ({new} new) into {out}")


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


def _table(points: list[CurvePoint], title: str) -> Table:
    table = Table(title=title)
    for name, justify in (("strategy", "left"), ("n", "right"), ("accuracy", "right"),
                          ("95% CI", "right"), ("tokens/question", "right"),
                          ("FLOPs/question", "right"), ("s/question", "right"),
                          ("easy/medium/hard", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for p in points:
        half = (p.ci_high - p.ci_low) / 2
        bins = " / ".join("-" if acc is None else f"{acc:.0%}" for _, _, acc in p.bins)
        table.add_row(p.strategy, str(p.n), f"{p.accuracy:.1%}", f"± {half:.1%}",
                      f"{p.mean_tokens:,.0f}",
                      "-" if p.mean_flops is None else format_flops(p.mean_flops),
                      "-" if p.mean_seconds is None else f"{p.mean_seconds:.1f}", bins)
    return table


def write_outputs(run_dir: Path, points: Sequence[CurvePoint], *, as_json: bool,
                  resamples: int, seed: int, title: str = "accuracy against compute",
                  extra: Sequence[CurvePoint] = ()) -> None:
    """The terminal table (or JSON lines) of ``points``; results.jsonl, curves.png and
    report.html of ``points`` and ``extra`` (earlier invocations' points)."""
    lines = [json.dumps({**asdict(p), "resamples": resamples, "seed": seed})
             for p in [*points, *extra]]
    (Path(run_dir) / RESULTS).write_text("".join(line + "\n" for line in lines),
                                         encoding="utf-8")
    if as_json:
        sys.stdout.write("".join(line + "\n" for line in lines[:len(points)]))
    else:
        Console().print(_table(list(points), title))
    render_files(run_dir, [*points, *extra])


def render_files(run_dir: Path, points: Sequence[CurvePoint]) -> None:
    """curves.png and report.html of a run (matplotlib is needed for the plot)."""
    from ttscale.evaluation.report import html as report

    report.write_report(run_dir, points)


def replay(run_dir: Path, strategies: str, n: str, *, resamples: int, seed: int,
           as_json: bool, rules: Sequence[str] = (DEFAULT_RULE,),
           confidence: Sequence[str] = DEFAULT_CONFIDENCE,
           prune: Sequence[str] = ("",), verifier: str | None = None) -> list[CurvePoint]:
    """Replay each strategy at each n over a stored run (generated or imported): print the
    table (or JSON lines), write results.jsonl, curves.png and report.html.

    ``adaptive_majority`` is replayed once per stopping rule spec in ``rules`` (e.g.
    ``budgeted``, ``bayes_factor,threshold=10``), with n as the rule's n_max and
    ``resamples`` random sample orders per question. ``deepconf`` and ``deepconf_online``
    are replayed once per spec in ``confidence`` (``eta=0.1``), ``deepprune`` once per spec
    in ``prune`` (``prefix=64``), from the stored tokens, over ``resamples`` orders.
    ``verifier`` names whose stored scores the scored strategies use (default: the run's
    first verifier by name)."""
    names, ns = parse_strategies(strategies), parse_ns(n)
    parsed = [parse_rule(spec) for spec in rules] if ADAPTIVE in names else []
    conf_params = [parse_confidence(s) for s in confidence] if set(CONFIDENCE) & set(
        names) else []
    prune_params = [parse_prune(s) for s in prune] if PRUNE in names else []
    if resamples <= 0:
        raise ConfigError(f"--resamples must be a positive number, got {resamples}")
    _settings, records = load_records(run_dir, verifier)
    scored = any(s in VERIFIED for s in names)
    if scored and all(t.score is None for r in records for t in r.traces):
        raise ConfigError(f"{run_dir} has no verifier scores, so {', '.join(VERIFIED)} cannot "
                          "be replayed: use --strategies majority")
    records, skipped = ready(records, ns[-1], scored)
    if not records:
        most = max((len(r.traces) for r in skipped), default=0)
        if most == 0:
            raise ConfigError(f"{run_dir} holds no samples yet: run ttscale eval into it first")
        raise ConfigError(f"--n {ns[-1]} is more than the samples stored per question (at most "
                          f"{most}{', scored' if scored else ''}): ask for fewer")
    if skipped:
        # a run still generating: the finished questions can be looked at already
        say(f"replaying the {len(records)} of {len(records) + len(skipped)} questions with "
            f"{ns[-1]} {'scored ' if scored else ''}samples; the other {len(skipped)} are not "
            "finished (resume their ttscale eval to complete them)")
    questions = question_samples(records)
    points = with_costs([p for name in names if name in STRATEGY_AGGREGATES
                         for p in curve(questions, ns, name, resamples=resamples, seed=seed)],
                        records)
    points += [adaptive_curve(questions, parse_rule(spec, n_max=k), orders=resamples,
                              seed=seed)
               for spec in rules[: len(parsed)] for k in ns]
    points += efficiency_points(records, names, ns, conf_params, prune_params,
                                orders=resamples, seed=seed)
    write_outputs(run_dir, points, as_json=as_json, resamples=resamples, seed=seed,
                  title="replay from stored samples")
    return points


def ready(records: Sequence[QuestionRecord], n: int,
          scored: bool) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """The questions with at least ``n`` samples (all scored, if ``scored``), and the rest.

    Example:
        >>> from ttscale.evaluation.runs.records import TraceRecord
        >>> t = TraceRecord(0, 0, "", "1", 0, 5)
        >>> done, rest = ready([QuestionRecord("a", "", "1", (t, t)),
        ...                     QuestionRecord("b", "", "1", (t,))], 2, False)
        >>> [r.id for r in done], [r.id for r in rest]
        (['a'], ['b'])
    """
    done: list[QuestionRecord] = []
    rest: list[QuestionRecord] = []
    for r in records:
        ok = len(r.traces) >= n and (not scored or all(t.score is not None for t in r.traces))
        (done if ok else rest).append(r)
    return done, rest


def parse_ids(text: str | None) -> tuple[list[str] | None, list[int] | None]:
    """``--ids``: problem ids, or positions in the split (``0-39``, ``3,5``), or both.

    Example:
        >>> parse_ids("0-2,7")
        (None, [0, 1, 2, 7])
        >>> parse_ids("gsm8k-test-3")
        (['gsm8k-test-3'], None)
    """
    if text is None:
        return None, None
    names: list[str] = []
    positions: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, dash, high = part.partition("-")
        if low.isdigit() and (not dash or high.isdigit()):
            first, last = int(low), int(high) if dash else int(low)
            if last < first:
                raise ConfigError(f"--ids range {part} runs backwards: write it as "
                                  f"{last}-{first}")
            positions.extend(range(first, last + 1))
        else:
            names.append(part)
    return names or None, positions or None


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs; a value that reads as JSON (a number, true) is that.

    Example:
        >>> parse_options(["seed=3", "name=chain", "exact=true"])
        {'seed': 3, 'name': 'chain', 'exact': True}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--option {item!r} is not KEY=VALUE: write e.g. --option seed=1")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def select_problems(dataset: str, split: str, limit: int | None, ids: str | None,
                    question_field: str | None, answer_field: str | None,
                    options: dict[str, Any] | None = None) -> list[Problem]:
    """The problems an eval asks for: by id or position, then the first ``limit``."""
    names, positions = parse_ids(ids)
    problems = load_dataset(dataset, split, ids=names, question_field=question_field,
                            answer_field=answer_field, **(options or {}))
    if positions is not None:
        if names is not None:
            raise ConfigError("--ids mixes problem ids and positions: give one kind")
        beyond = [i for i in positions if i >= len(problems)]
        if beyond:
            raise ConfigError(f"--ids {beyond[0]} is past the end of {dataset} {split} "
                              f"({len(problems)} problems, positions 0-{len(problems) - 1})")
        problems = [problems[i] for i in positions]
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"--limit must be a positive number of problems, got {limit}")
        problems = problems[:limit]
    return problems


def model_identity(backend: str, model: str | None, base_url: str | None) -> tuple[str, str]:
    """(model name, the key its samples are cached under): a GGUF's SHA-256 for llama.cpp."""
    from ttscale import models

    if backend == "llamacpp":
        name = model or models.DEFAULT_MODEL
        path, spec = models.resolve(name)
        return name, spec.sha256 if spec is not None else models.sha256_of(path)
    return model or "default", f"{backend}:{base_url or ''}:{model or ''}"


def eval_run(out: Path, *, cfg: EvalConfig, dataset: str, split: str, limit: int | None,
             ids: str | None, question_field: str | None, answer_field: str | None,
             backend: str, model: str | None, base_url: str | None, threads: int | None,
             as_json: bool, fake_delay: float = 0.0,
             options: dict[str, Any] | None = None,
             choose_temperature: bool = False) -> list[CurvePoint]:
    """``ttscale eval``: generate what is missing, then replay, report and plot the run.
    ``choose_temperature``: the temperature is chosen without labels first (``auto``)."""
    problems = select_problems(dataset, split, limit, ids, question_field, answer_field,
                               options)
    name, sha = model_identity(backend, model, base_url)
    err = Console(stderr=True)

    def load() -> Any:
        if backend == "llamacpp":
            # one slot per sample in flight; every slot holds a prompt, a trace and a verdict,
            # or the longest request of a strategy that shows earlier traces (RSA, revision)
            from ttscale.solve import context_tokens
            from ttscale.strategies.spec import make_strategy

            ctx = max([cfg.max_tokens + 1024] + [
                context_tokens(make_strategy(s, cfg.n_max), cfg.max_tokens) for s in cfg.solved])
            opts: dict[str, Any] = {"model": model, "threads": threads,
                                    "parallel": min(32, cfg.concurrency * cfg.n_max),
                                    "ctx_per_slot": ctx}
        elif backend == "openai":
            opts = {"model": model, "base_url": base_url}
        else:
            opts = {"delay": fake_delay or None}
        say(f"loading {name} ({backend})...", err)
        return load_backend(backend, **{k: v for k, v in opts.items() if v is not None})

    def settings_of(c: EvalConfig) -> dict[str, Any]:
        return run_settings(c, model=name, model_sha256=sha, dataset=dataset, split=split)

    be = None
    if choose_temperature:
        cfg, be = auto_temperature(out, cfg, problems, load, settings_of, err)
    with Store.open(out, settings_of(cfg)) as store:
        check_same_questions(store, problems)
        be = be or load()
        cached = CachedBackend(be, store, sha)
        try:
            outcome = _with_progress(err, cfg, cached, store, problems)
        finally:
            cached.close()
    say(f"{outcome.questions} questions: {outcome.new_samples} samples generated now, "
        f"{outcome.cached_samples} replayed from {out / FILE_NAME}; "
        f"{outcome.new_usage.total_tokens:,} new tokens in {outcome.seconds:.0f} s", err)
    return summarise(out, cfg, as_json=as_json, only=[p.id for p in problems])


def _with_progress(err: Console, cfg: EvalConfig, cached: CachedBackend, store: Store,
                   problems: Sequence[Problem]) -> EvalOutcome:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("questions"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn(), TextColumn("{task.fields[rate]}"))
    started = time.perf_counter()
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("eval", total=len(problems), rate="")

        def tick(t: Tick) -> None:
            rate = t.new_tokens / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=t.done, rate=f"{rate:,.1f} tok/s")

        try:
            return Harness(cfg, cached, store, tick).run(problems)
        except KeyboardInterrupt:
            say(f"interrupted: everything generated so far is stored in {store.path}; "
                "run the same command again to resume", err)
            raise


def summarise(run_dir: Path, cfg: EvalConfig, *, as_json: bool,
              only: Sequence[str] | None = None) -> list[CurvePoint]:
    """Curves of a stored eval run: replayed strategies from the samples, the others from
    their result rows. This invocation's are printed; results.jsonl, curves.png and
    report.html also keep what earlier invocations of the run stored."""
    _settings, every = load_records(run_dir)
    wanted = set(only) if only is not None else None
    records = every if wanted is None else [r for r in every if r.id in wanted]
    points: list[CurvePoint] = []
    samples = question_samples(records)
    for name in [*cfg.replayed, "pass@k"]:
        if name in VERIFIED and all(s[2] is None for q in samples for s in q.samples):
            continue
        points.extend(curve(samples, [n for n in cfg.ns if n <= max_n(samples)], name,
                            resamples=cfg.resamples, seed=cfg.replay_seed))
    for name in cfg.solved:
        points.extend(solved_curve(records, name, cfg.ns))
    points = with_costs(points, records)
    earlier = earlier_points(every, {(p.strategy, p.n) for p in points},
                             resamples=cfg.resamples, seed=cfg.replay_seed)
    write_outputs(run_dir, points, as_json=as_json, resamples=cfg.resamples,
                  seed=cfg.replay_seed, title=f"{len(records)} questions", extra=earlier)
    return points


def earlier_points(records: Sequence[QuestionRecord], shown: set[tuple[str, int]], *,
                   resamples: int, seed: int) -> list[CurvePoint]:
    """Points of every (strategy, n) with result rows in the run but not in ``shown``,
    over every question that has them: a run evaluated in several invocations (sampling,
    then each search) reports all of them, not only the last.

    Example:
        >>> from ttscale.evaluation.runs.store import ResultRow
        >>> from ttscale.types import Usage
        >>> rows = (ResultRow("eval", "q", "greedy", 1, 0, "4", True, Usage(10, 5)),)
        >>> [(p.strategy, p.n) for p in earlier_points(
        ...     [QuestionRecord("q", "2+2?", "4", (), rows)], set(), resamples=1, seed=0)]
        [('greedy', 1)]
    """
    stored: dict[str, set[int]] = {}
    for r in records:
        for row in r.results:
            if (row.strategy, row.n) not in shown:
                stored.setdefault(row.strategy, set()).add(row.n)
    samples = question_samples(records)
    scored = any(s[2] is not None for q in samples for s in q.samples)
    out: list[CurvePoint] = []
    for name, ns in sorted(stored.items()):
        if name in REPLAYED:
            if name in VERIFIED and not scored:
                continue
            out.extend(curve(samples, sorted(n for n in ns if n <= max_n(samples)), name,
                             resamples=resamples, seed=seed))
        else:
            out.extend(solved_curve(records, name, sorted(ns)))
    return with_costs(out, records)


def rebuild_report(run_dir: Path) -> Path:
    """report.html and curves.png again, from results.jsonl and every other (strategy, n)
    the run stored (without either, no curves)."""
    from ttscale.evaluation.report import html as report

    settings, records = load_records(run_dir)  # fails with one sentence when not a run
    path = Path(run_dir) / RESULTS
    points: list[CurvePoint] = []
    resamples, seed = 200, 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            resamples = row.pop("resamples", resamples)
            seed = row.pop("seed", seed)
            row["bins"] = tuple(tuple(b) for b in row["bins"])
            row["bin_tokens"] = tuple(row.get("bin_tokens", ()))
            points.append(CurvePoint(**row))
    if settings.get("kind") == "eval":
        points += earlier_points(records, {(p.strategy, p.n) for p in points},
                                 resamples=resamples, seed=seed)
    return report.write_report(Path(run_dir), points)
