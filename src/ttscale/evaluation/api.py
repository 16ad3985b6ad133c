"""The evaluation harness as a library: the jobs ``ttscale eval`` runs, as plain calls.

Each takes plain values and an optional ``progress`` callback (:class:`Progress` events),
returns small records, raises a :class:`~ttscale.errors.TtscaleError` with one sentence on
bad input, and prints nothing. The run directory keeps everything (``run.sqlite``,
``results.jsonl``, ``curves.png``, ``report.html``), so every job resumes or replays.

Example (a scripted backend, so it runs anywhere; ``model="smollm2-135m"`` with the
default ``backend="llamacpp"`` runs a real one):
    >>> import tempfile, ttscale
    >>> with tempfile.TemporaryDirectory() as d:
    ...     run = ttscale.evaluate("gsm8k", d, limit=2, ns=[1, 2], backend="fake")
    ...     [(p.strategy, p.n) for p in run.points][:2], run.outcome.questions
    ...     [p.n for p in ttscale.replay(d, ["majority"], [1, 2])]
    ([('majority', 1), ('majority', 2)], 2)
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import (
    SAMPLES_PER_REQUEST,
    VERIFIED,
    EvalConfig,
    EvalOutcome,
    Tick,
)
from ttscale.evaluation.options import (
    ADAPTIVE,
    parse_ns,
    parse_strategies,
    ready,
    run_identity,
    select_problems,
)
from ttscale.evaluation.progress import ProgressFn, report
from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.runs.store import FILE_NAME

if TYPE_CHECKING:
    from ttscale.evaluation.replay.ensembles import EnsembleReport
    from ttscale.evaluation.replay.verifiers import Comparison

DEFAULT_RULES = ("budgeted",)
# Requests in flight to one server, at most: a server batches about 256 sequences, and
# requests past that only wait in its queue, each holding a connection and its buffers.
MAX_REQUESTS = 256
DEFAULT_CONFIDENCE = ("eta=0.1", "eta=0.9")  # DeepConf-low and -high, as in the paper


@dataclass(frozen=True)
class EvalRun:
    """What :func:`evaluate` did: this invocation's curve points, the points of what
    earlier invocations stored in the same run, what was generated now, the temperature
    used, and the questions the points cover."""

    run_dir: Path
    points: tuple[CurvePoint, ...]
    earlier: tuple[CurvePoint, ...]
    outcome: EvalOutcome
    temperature: float
    questions: int
    resamples: int  # random subsets per question and n behind the replayed points
    seed: int


def evaluate(dataset: str, out: str | Path, *, strategies: str | Sequence[str] = "majority",
             ns: str | Sequence[int] = (1, 2, 4, 8), seeds: int = 1, split: str = "test",
             limit: int | None = None, ids: str | Sequence[int | str] | None = None,
             question_field: str | None = None, answer_field: str | None = None,
             dataset_options: dict[str, Any] | None = None, model: str | None = None,
             backend: str = "llamacpp", base_url: str | Sequence[str] | None = None,
             threads: int | None = None, verifier: str | None = None,
             temperature: float | str = 0.7, top_p: float = 1.0, max_tokens: int = 1024,
             concurrency: int = 4, resamples: int = 200, report_files: bool = True,
             backend_options: dict[str, Any] | None = None, top_logprobs: int = 5,
             ray: str | bool | None = None, ray_workers: int | None = None,
             ray_verifiers: int = 0, ray_verifier_gpus: float = 0,
             progress: ProgressFn | None = None) -> EvalRun:
    """Evaluate strategies on a dataset into the run directory ``out``: generate what is
    missing (every sample stored as it arrives, so a stopped run resumes and a larger n
    reuses a smaller one), then replay the curves. ``strategies`` are specs
    (``majority,beam:width=4``), ``ns`` increasing sample counts, ``ids`` problems by
    position (``0-39``) or id, as text or a list, ``temperature`` a number or ``"auto"``
    (chosen without labels by TURN before the run). ``report_files`` writes results.jsonl,
    curves.png and report.html. ``backend_options`` go to the backend (e.g. ``delay`` of ``fake``).
    ``top_logprobs`` alternatives are kept per token (0: the sampled token's only).
    ``ray`` runs the questions on a Ray cluster (``True``: a local one; an address such as
    ``ray://head:10001`` or ``auto``: that cluster), ``ray_workers`` actors each owning a
    backend (default: one per CPU); the run store stays here (:mod:`ttscale.evaluation.
    distributed`). ``ray_verifiers`` actors (``ray_verifier_gpus`` GPUs each) run the
    verifier for all of them instead of one copy per question actor. Several ``base_url``
    (a list, or comma-separated) take the requests in turn, up to ``MAX_REQUESTS`` in
    flight to each.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     run = evaluate("svamp", d, ids="0-1", ns="1", backend="fake")
        ...     run.questions, run.outcome.new_samples
        (2, 2)
    """
    from ttscale.evaluation.harness import check_same_questions, run_settings
    from ttscale.evaluation.options import parse_temperature
    from ttscale.evaluation.runs.cache import CachedBackend
    from ttscale.evaluation.runs.store import Store
    from ttscale.evaluation.verifier_pool import check_pool
    from ttscale.registry import backends
    from ttscale.strategies.spec import split_specs

    out = Path(out)
    backends.get(backend)
    fixed = parse_temperature(str(temperature)) if isinstance(temperature, str) else temperature
    specs = split_specs(strategies) if isinstance(strategies, str) else list(strategies)
    cfg = EvalConfig(strategies=tuple(specs), ns=tuple(parse_ns(ns)), seeds=seeds,
                     temperature=0.7 if fixed is None else fixed, top_p=top_p,
                     max_tokens=max_tokens, verifier=verifier, concurrency=concurrency,
                     resamples=resamples, top_logprobs=top_logprobs)
    check_pool(cfg.verifier, ray, ray_verifiers, ray_verifier_gpus)
    problems = select_problems(dataset, split, limit, ids, question_field, answer_field,
                               dataset_options)
    if base_url is not None and not isinstance(base_url, str):
        base_url = ",".join(base_url)  # one string: the cache key and every worker's backend
    name, sha = run_identity(out, backend, model, base_url)

    def load() -> Any:
        opts = _backend_options(cfg, backend, model, base_url, threads,
                                backend_options or {})
        report(progress, "loading", f"loading {name} ({backend})...")
        from ttscale.backends.base import load_backend

        return load_backend(backend, **opts)

    def settings_of(c: EvalConfig) -> dict[str, Any]:
        return run_settings(c, model=name, model_sha256=sha, dataset=dataset, split=split)

    be = None
    if fixed is None:
        cfg, be = _run_temperature(out, cfg, problems, load, settings_of, progress)
    with Store.open(out, settings_of(cfg)) as store:
        check_same_questions(store, problems)
        if ray:
            if be is not None:
                be.close()  # the workers build their own
            outcome = _generate_on_ray(ray, cfg, store, problems, backend, sha, progress,
                                       _backend_options(cfg, backend, model, base_url,
                                                        threads or 1, backend_options or {},
                                                        per_worker=True), ray_workers,
                                       ray_verifiers, ray_verifier_gpus)
            return _summary(out, cfg, outcome, [p.id for p in problems], report_files)
        be = be or load()
        cached = CachedBackend(be, store, sha)
        try:
            outcome = _generate(cfg, cached, store, problems, progress)
        finally:
            cached.close()
    return _summary(out, cfg, outcome, [p.id for p in problems], report_files)


def _generate_on_ray(address: str | bool, cfg: EvalConfig, store: Any,
                     problems: Sequence[Problem], backend: str, sha: str,
                     progress: ProgressFn | None, options: dict[str, Any],
                     workers: int | None, verifier_workers: int = 0,
                     verifier_gpus: float = 0) -> EvalOutcome:
    from ttscale.evaluation.distributed import run_on_ray

    report(progress, "loading", "starting the Ray workers (each loads its own backend)...")

    def tick(t: Tick) -> None:
        report(progress, "eval", done=t.done, total=t.total, new_tokens=t.new_tokens,
               unit="questions")

    return run_on_ray(address, cfg, store, problems, backend=backend, options=options,
                      sha=sha, workers=workers, verifier_workers=verifier_workers,
                      verifier_gpus=verifier_gpus, on_tick=tick)


def _backend_options(cfg: EvalConfig, backend: str, model: str | None, base_url: str | None,
                     threads: int | None, extra: dict[str, Any], *,
                     per_worker: bool = False) -> dict[str, Any]:
    if backend == "llamacpp":
        # one slot per sample in flight; every slot holds a prompt, a trace and a verdict,
        # or the longest request of a strategy that shows earlier traces (RSA, revision)
        from ttscale.solve import context_tokens
        from ttscale.strategies.spec import make_strategy

        ctx = max([cfg.max_tokens + 1024] + [
            context_tokens(make_strategy(s, cfg.n_max), cfg.max_tokens) for s in cfg.solved])
        # a Ray worker evaluates one question at a time
        in_flight = 1 if per_worker else cfg.concurrency
        opts: dict[str, Any] = {"model": model, "threads": threads,
                                "parallel": min(32, in_flight * cfg.n_max),
                                "ctx_per_slot": ctx}
    elif backend == "openai":
        # every question's requests in flight at once (a server batches them; the
        # backend's default of 16 would keep a fleet idle)
        per_question = -(-cfg.n_max // SAMPLES_PER_REQUEST) * cfg.seeds
        servers = len([u for u in (base_url or "").split(",") if u.strip()]) or 1
        opts = {"model": model, "base_url": base_url,
                "concurrency": min(MAX_REQUESTS * servers,
                                   max(16, cfg.concurrency * per_question))}
    elif backend == "vllm":
        opts = {"model": model}
    else:
        opts = {}
    opts.update(extra)
    return {k: v for k, v in opts.items() if v is not None}


def _generate(cfg: EvalConfig, cached: Any, store: Any, problems: Sequence[Problem],
              progress: ProgressFn | None) -> EvalOutcome:
    from ttscale.evaluation.harness import Harness

    report(progress, "eval", done=0, total=len(problems), unit="questions")

    def tick(t: Tick) -> None:
        report(progress, "eval", done=t.done, total=t.total, new_tokens=t.new_tokens,
               unit="questions")

    return Harness(cfg, cached, store, tick).run(problems)


def _summary(out: Path, cfg: EvalConfig, outcome: EvalOutcome, only: Sequence[str],
             report_files: bool) -> EvalRun:
    from ttscale.evaluation.replay.summary import run_points
    from ttscale.evaluation.report.outputs import write_outputs
    from ttscale.evaluation.runs.records import load_records

    loaded = load_records(out, logprobs=False)  # read once for the points and the page
    points, earlier, questions = run_points(out, cfg, only, loaded=loaded)
    write_outputs(out, points, resamples=cfg.resamples, seed=cfg.replay_seed, extra=earlier,
                  report=report_files, loaded=loaded)
    return EvalRun(out, tuple(points), tuple(earlier), outcome, cfg.temperature, questions,
                   cfg.resamples, cfg.replay_seed)


def _run_temperature(out: Path, cfg: EvalConfig, problems: Sequence[Problem],
                     load: Callable[[], Any], settings_of: Callable[[EvalConfig], Any],
                     progress: ProgressFn | None) -> tuple[EvalConfig, Any]:
    """The run's temperature chosen without labels (TURN, :mod:`ttscale.evaluation.
    temperature`) on its first questions; a run directory that already holds this run keeps
    the temperature it chose (so a resumed run is the same run). Returns the config and the
    backend, if it loaded one."""
    from ttscale.evaluation.runs.imports import stored_settings
    from ttscale.evaluation.temperature import TemperatureSearch, choose_temperature

    if (out / FILE_NAME).is_file():
        stored = stored_settings(out)
        same = settings_of(cfg)
        if all(stored.get(k) == same.get(k) for k in ("kind", "model_sha256", "dataset",
                                                      "split", "system_prompt")):
            t = float(stored["sampling"]["temperature"])
            report(progress, "temperature", f"temperature {t:g}, chosen when {out} began")
            return replace(cfg, temperature=t), None
    be = load()
    search = TemperatureSearch(max_tokens=min(128, cfg.max_tokens),
                               aggregation="best_of_n" if cfg.verifier else "majority")
    report(progress, "temperature",
           f"choosing the temperature on {min(search.questions, len(problems))} "
           f"questions ({len(search.grid)} temperatures x {search.samples} samples)...")
    choice = choose_temperature(be, [p.question for p in problems], search)
    curve_text = ", ".join(f"{t:g}: {h:.3f}" for t, h in zip(choice.grid, choice.entropies,
                                                               strict=True))
    report(progress, "temperature",
           f"mean token entropy by temperature: {curve_text}; turning point "
           f"{choice.turning_point:g}: temperature {choice.temperature:g} "
           f"({choice.usage.total_tokens:,} tokens)")
    return replace(cfg, temperature=choice.temperature), be


def replay(run_dir: str | Path, strategies: str | Sequence[str] = "majority",
           ns: str | Sequence[int] = (1, 2, 4, 8), *, resamples: int = 200, seed: int = 0,
           rules: Sequence[str] = DEFAULT_RULES,
           confidence: Sequence[str] = DEFAULT_CONFIDENCE, prune: Sequence[str] = ("",),
           verifier: str | None = None, report_files: bool = True,
           progress: ProgressFn | None = None) -> list[CurvePoint]:
    """Replay each strategy at each n over a stored run (generated or imported), without a
    model: accuracy with its 95% interval and costs per n; writes results.jsonl, curves.png
    and report.html into the run (``report_files``).

    ``adaptive_majority`` is replayed once per stopping rule spec in ``rules`` (e.g.
    ``budgeted``, ``bayes_factor,threshold=10``), with n as the rule's n_max and
    ``resamples`` random sample orders per question. ``deepconf`` and ``deepconf_online``
    are replayed once per spec in ``confidence`` (``eta=0.1``), ``deepprune`` once per spec
    in ``prune`` (``prefix=64``), from the stored tokens, over ``resamples`` orders.
    ``verifier`` names whose stored scores the scored strategies use (default: the run's
    first verifier by name). ``auto`` is the planner replayed at the mean budget of
    majority@n for each n, at most max(n) samples a question, cross-fitted over 10 folds of
    questions (no question's label shapes its own plan) over ``min(resamples, 32)`` orders;
    it verifies only where every sample has a score, else it allocates samples only.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = evaluate("svamp", d, ids="0-2", ns=[4], backend="fake")
        ...     [(p.strategy, p.n) for p in replay(d, "majority,pass@k", [1, 4])]
        [('majority', 1), ('majority', 4), ('pass@k', 1), ('pass@k', 4)]
    """
    from ttscale.aggregation.confidence import parse_confidence
    from ttscale.aggregation.pruning import parse_prune
    from ttscale.aggregation.stopping import parse_rule
    from ttscale.evaluation.replay.adaptive import adaptive_curve
    from ttscale.evaluation.replay.efficiency import CONFIDENCE, PRUNE, efficiency_points
    from ttscale.evaluation.replay.metrics import STRATEGY_AGGREGATES, curve
    from ttscale.evaluation.report.outputs import write_outputs
    from ttscale.evaluation.runs.records import load_records, question_samples, with_costs

    names, wanted = parse_strategies(strategies), parse_ns(ns)
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
    records, skipped = ready(records, wanted[-1], scored)
    if not records:
        most = max((len(r.traces) for r in skipped), default=0)
        if most == 0:
            raise ConfigError(f"{run_dir} holds no samples yet: run ttscale eval into it first")
        raise ConfigError(f"--n {wanted[-1]} is more than the samples stored per question (at "
                          f"most {most}{', scored' if scored else ''}): ask for fewer")
    if skipped:
        # a run still generating: the finished questions can be looked at already
        report(progress, "replay",
               f"replaying the {len(records)} of {len(records) + len(skipped)} questions with "
               f"{wanted[-1]} {'scored ' if scored else ''}samples; the other {len(skipped)} "
               "are not finished (resume their ttscale eval to complete them)")
    questions = question_samples(records)
    points = with_costs([p for name in names if name in STRATEGY_AGGREGATES
                         for p in curve(questions, wanted, name, resamples=resamples,
                                        seed=seed)], records)
    points += [adaptive_curve(questions, parse_rule(spec, n_max=k), orders=resamples,
                              seed=seed)
               for spec in rules[: len(parsed)] for k in wanted]
    points += efficiency_points(records, names, wanted, conf_params, prune_params,
                                orders=resamples, seed=seed)
    if "auto" in names:
        from ttscale.evaluation.replay.auto import auto_curve

        points += auto_curve(records, wanted, resamples=min(resamples, 32), seed=seed,
                             progress=progress)
    write_outputs(Path(run_dir), points, resamples=resamples, seed=seed, report=report_files)
    return points


@dataclass(frozen=True)
class Imported:
    """What :func:`import_samples` stored: questions and samples read, samples new."""

    run_dir: Path
    questions: int
    samples: int
    new: int


def import_samples(file: str | Path, out: str | Path, fmt: str = "boinf") -> Imported:
    """Store a sample set with its gold answers (format ``boinf``: one JSON object per
    question, its gold answer and every sample's answer with its token count) in the run
    directory ``out``, for :func:`replay`; a rerun adds only what is new.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> with tempfile.TemporaryDirectory() as d:
        ...     f = Path(d) / "a.jsonl"
        ...     _ = f.write_text(json.dumps({"problem_num": 0, "gold_answer": "4",
        ...         "all_answers": [["4", 90], ["5", 70], ["4", 80]]}) + "\\n")
        ...     import_samples(f, Path(d) / "run").samples
        3
    """
    from ttscale.evaluation.runs.importers import FORMATS, import_boinf
    from ttscale.evaluation.runs.imports import store_imported

    if fmt not in FORMATS:
        raise ConfigError(f"unknown sample format {fmt!r}: choose one of {', '.join(FORMATS)}")
    questions = import_boinf(Path(file))
    count, new = store_imported(Path(out), questions, Path(file), fmt)
    return Imported(Path(out), count, sum(len(q.samples) for q in questions), new)


def compare_verifiers(run_dir: str | Path, ns: str | Sequence[int] = (1, 2, 4, 8), *,
                      verifiers: str | Sequence[str] | None = None, resamples: int = 200,
                      seed: int = 0, samples: int | None = None, plot: str | Path | None = None,
                      ) -> Comparison:
    """Every verifier that scored a run, side by side on the same stored samples: trace and
    within-question AUROC, best-of-n and weighted best-of-n against majority at the same n
    (paired differences). ``plot`` also writes the curves to that PNG.

    Example (the self-judge's scores, stored by an eval with a scored strategy):
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = evaluate("svamp", d, ids="0-3", ns=[2], backend="fake",
        ...                  strategies="majority,weighted_best_of_n",
        ...                  backend_options={"yes_logprob": -0.3}, report_files=False)
        ...     res = compare_verifiers(d, [1, 2], resamples=5)
        ...     [v.verifier for v in res.verifiers], res.questions
        (['self_judge'], 4)
    """
    from ttscale.evaluation.replay.verifiers import compare_verifiers as compare
    from ttscale.evaluation.report.plots import plot_curves
    from ttscale.strategies.spec import split_specs

    if resamples < 1:
        raise ConfigError(f"--resamples must be a positive number, got {resamples}")
    # a stored name may hold options of its spec (sprm,layer=4)
    names = (split_specs(verifiers, "verifier") if isinstance(verifiers, str)
             else list(verifiers) if verifiers else None)
    res = compare(run_dir, parse_ns(ns), verifiers=names, resamples=resamples, seed=seed,
                  samples=samples)
    if plot is not None:
        plot_curves(res.points, Path(plot), "verifiers against majority")
    return res


def export_run(run_dir: str | Path, file: str | Path, *, logprobs: bool = True,
               ) -> dict[str, int]:
    """Write a run's store to one JSON-lines file (settings, samples, scores, results,
    trees), to move it to another machine or keep it in version control; returns the rows
    written per table. ``logprobs=False`` leaves out the token log-probabilities.

    Example:
        >>> export_run("runs/none", "/tmp/x.jsonl")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ...
    """
    from ttscale.evaluation.runs.archive import export_run as export

    return dict(export(run_dir, file, logprobs=logprobs))


def restore_run(file: str | Path, out: str | Path, *,
                settings_from: str | Path | None = None) -> dict[str, int]:
    """Rebuild a run in ``out`` from a file written by :func:`export_run` (everything) or
    from a run's report.html (its samples; ``settings_from``: a run made with the same
    options, for a report older than embedded settings). Rows already in ``out`` stay;
    returns the rows that were new, per table.

    Example:
        >>> restore_run("none.jsonl", "runs/none")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ...
    """
    from ttscale.evaluation.runs.archive import restore_run as restore
    from ttscale.evaluation.runs.imports import stored_settings
    from ttscale.evaluation.runs.report_restore import restore_report

    if Path(file).suffix.lower() in (".html", ".htm"):
        settings = stored_settings(settings_from) if settings_from else None
        return dict(restore_report(file, out, settings))
    return dict(restore(file, out))


def ensemble(run_dirs: Sequence[str | Path], *, n: int | None = None, rule: str | None = None,
             orders: int = 5, folds: int = 0, seed: int = 0) -> EnsembleReport:
    """Several runs answering the same questions combined: equal, first-order, MILP and
    second-order weights and the best single source, cross-validated over questions
    (``folds``; 0: leave-one-out). ``rule`` draws each source's samples with an adaptive
    stopping rule (e.g. ``budgeted``) over ``orders`` random orders.

    Example:
        >>> ensemble(["runs/a"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ...
    """
    from ttscale.aggregation.stopping import parse_rule
    from ttscale.evaluation.replay.ensembles import ensemble_report

    return ensemble_report(run_dirs, n=n, rule=parse_rule(rule) if rule else None,
                           orders=orders, folds=folds, seed=seed)


def rebuild_report(run_dir: str | Path) -> Path:
    """report.html and curves.png of a run again, from its store and results.jsonl alone;
    returns the report's path.

    Example:
        >>> rebuild_report("runs/none")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ...
    """
    from ttscale.evaluation.report.outputs import rebuild_report as rebuild

    return rebuild(Path(run_dir))
