"""``ttscale eval``: run an evaluation, import sample sets, replay strategies over stored
samples, ensembles of runs, and verifiers side by side. The work is in
:mod:`ttscale.cli.evaluate`; this module declares the options."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ttscale import models
from ttscale.cli.common import reported, say
from ttscale.errors import ConfigError

eval_app = typer.Typer(
    help="Evaluate strategies on a dataset: accuracy against compute, every sample stored; "
         "or import sample sets and replay strategies over them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    base_url: Annotated[list[str] | None, typer.Option(
        help="An OpenAI-compatible server, with --backend openai; several (repeated, or "
             "comma-separated) take the requests in turn.", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for llamacpp (default: all cores).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the curve points as JSON lines, nothing else.")] = False,
    top_logprobs: Annotated[int, typer.Option(
        help="Alternatives kept per token (DeepConf reads them); 0 keeps the sampled "
             "token's log-probability only, a fifth of the bytes at scale.")] = 5,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run the questions on a Ray cluster (pip install 'ttscale[ray]'): a "
                      "local one, or the one at --ray-address.")] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="The Ray cluster to use (auto, or ray://HEAD:10001); implies --ray.",
        show_default=False)] = None,
    ray_workers: Annotated[int | None, typer.Option(
        help="Ray actors, each with its own backend (default: one per CPU of the cluster).",
        show_default=False)] = None,
    ray_verifiers: Annotated[int, typer.Option(
        help="Ray actors that run the verifier for all the question actors, which then hold "
             "no copy of it (default: each question actor builds its own).",
        show_default=False)] = 0,
    ray_verifier_gpus: Annotated[float, typer.Option(
        help="GPUs for each --ray-verifiers actor (a fraction shares one).",
        show_default=False)] = 0,
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
    from ttscale.cli.evaluate import interrupted, print_run, shown
    from ttscale.evaluation.api import evaluate
    from ttscale.evaluation.options import parse_ns, parse_options

    with reported():
        if dataset is None or out is None:
            raise ConfigError("ttscale eval needs --dataset and --out: e.g. ttscale eval "
                              "--dataset gsm8k --limit 10 --out runs/gsm8k")
        err = Console(stderr=True)
        try:
            with shown(err) as progress:
                run = evaluate(dataset, out, strategies=strategies, ns=parse_ns(n),
                               seeds=seeds, split=split, limit=limit, ids=ids,
                               question_field=question_field, answer_field=answer_field,
                               dataset_options=parse_options(option or []), model=model,
                               backend=backend, base_url=base_url, threads=threads,
                               verifier=verifier, temperature=temperature, top_p=top_p,
                               max_tokens=max_tokens, concurrency=concurrency,
                               resamples=resamples, progress=progress,
                               backend_options={"delay": fake_delay} if fake_delay else None,
                               top_logprobs=top_logprobs, ray=ray_address or ray or None,
                               ray_workers=ray_workers, ray_verifiers=ray_verifiers,
                               ray_verifier_gpus=ray_verifier_gpus)
        except KeyboardInterrupt:
            interrupted(out, err)
            raise
        print_run(run, as_json=as_json, err=err)


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
    from ttscale.cli.evaluate import print_imported
    from ttscale.evaluation.api import import_samples

    with reported():
        print_imported(import_samples(file, out, fmt))


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in sorted(counts.items())) or "nothing"


@eval_app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="The run directory.", show_default=False)],
    file: Annotated[Path, typer.Argument(help="The JSON-lines file to write.",
                                         show_default=False)],
    logprobs: Annotated[bool, typer.Option(
        "--logprobs/--no-logprobs",
        help="Keep each token's log-probabilities (most of a sample run's size; only "
             "deepconf and deepprune read them).")] = True,
) -> None:
    """Write a run's store to one text file (settings, samples, scores, results, trees), to
    move it to another machine or keep it in version control.

    Example: ttscale eval export runs/gsm8k runs-gsm8k.jsonl
    """
    from ttscale.evaluation.api import export_run

    with reported():
        counts = export_run(run_dir, file, logprobs=logprobs)
        say(f"wrote {file}: {_counted(counts)}")


@eval_app.command("restore")
def restore_command(
    file: Annotated[Path, typer.Argument(
        help="A file written by ttscale eval export, or a run's report.html (its samples).",
        show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The run directory: created, or merged "
                                                    "into when its settings match.",
                                      show_default=False)],
    settings_from: Annotated[Path | None, typer.Option(
        "--settings-from", help="For a report.html older than embedded settings: a run made "
                                "with the same ttscale eval options.",
        show_default=False)] = None,
) -> None:
    """Rebuild a run from a file written by ttscale eval export (everything) or from a
    report.html (its samples); rows already in OUT stay.

    Example: ttscale eval restore runs-gsm8k.jsonl --out runs/gsm8k
    """
    from ttscale.evaluation.api import restore_run

    with reported():
        counts = restore_run(file, out, settings_from=settings_from)
        say(f"restored into {out}: {_counted(counts)} new")


@eval_app.command("replay")
def replay_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by import-samples.",
                                            show_default=False)],
    strategies: Annotated[str, typer.Option(
        help="Comma-separated: majority, weighted_best_of_n, best_of_n, pass@k, "
             "adaptive_majority, deepconf, deepconf_online, deepprune, auto (cross-fitted "
             "over questions, at majority's cost at each --n).")] = "majority",
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
    from ttscale.cli.evaluate import print_points, shown
    from ttscale.evaluation.api import DEFAULT_CONFIDENCE, replay
    from ttscale.evaluation.options import parse_ns, parse_strategies

    with reported(), shown() as progress:
        points = replay(run_dir, parse_strategies(strategies), parse_ns(n),
                        resamples=resamples, seed=seed, rules=rule or ["budgeted"],
                        confidence=confidence or DEFAULT_CONFIDENCE, prune=prune or [""],
                        verifier=verifier, progress=progress)
        print_points(points, as_json=as_json, title="replay from stored samples",
                     resamples=resamples, seed=seed)


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
    from ttscale.cli.render import ensemble_table, print_output
    from ttscale.evaluation.api import ensemble

    with reported():
        report = ensemble(run_dirs, n=n, rule=rule, orders=orders, folds=folds, seed=seed)
        if as_json:
            sys.stdout.write(json.dumps(asdict(report)) + "\n")
        else:
            print_output(ensemble_table(report))


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
    samples: Annotated[int | None, typer.Option(
        help="Use each question's first SAMPLES stored samples only (default: all).",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the comparison as one JSON object, nothing else.")] = False,
) -> None:
    """Verifiers side by side on the same stored samples: trace AUROC, and best-of-n and
    weighted best-of-n by each verifier's scores against majority at the same n.

    Example: ttscale eval verifiers runs/gsm8k -n 1,2,4,8 --plot verifiers.png
    """
    from ttscale.cli.render import print_output, verifiers_table
    from ttscale.evaluation.api import compare_verifiers
    from ttscale.evaluation.options import parse_ns

    with reported():
        res = compare_verifiers(run_dir, parse_ns(n), verifiers=verifier, resamples=resamples,
                                seed=seed, samples=samples, plot=plot)
        if as_json:
            sys.stdout.write(json.dumps(asdict(res)) + "\n")
        else:
            print_output(verifiers_table(res))
            if res.skipped:
                say(f"{res.skipped} questions left out: fewer than {parse_ns(n)[-1]} samples "
                    "scored by every verifier")
