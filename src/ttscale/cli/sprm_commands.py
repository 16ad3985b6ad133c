"""``ttscale sprm``: collect traces and step features, train a head, evaluate it on a run.
The work is in :mod:`ttscale.cli.sprm`; this module declares the options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttscale import models
from ttscale.cli.common import reported

sprm_app = typer.Typer(
    help="The SPRM verifier's head: collect traces and step features, train a head, "
         "evaluate it on a run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    dtype: Annotated[str, typer.Option(
        help="The dtype the model runs in for step features: float32, bfloat16, or auto "
             "(bfloat16 where the CPU computes it natively, AMX or AVX512-BF16: about twice "
             "as fast; float32 elsewhere). A run's cached features keep theirs.")
    ] = "float32",
) -> None:
    """Sample and grade traces (the eval harness: same store, resumable), then cache the
    step features of every trace.

    Example: ttscale sprm collect --split train --ids 0-199 -n 4 --out runs/sprm-train
    """
    from ttscale.cli.common import say
    from ttscale.cli.evaluate import interrupted, print_run, shown
    from ttscale.cli.sprm import parse_layers
    from ttscale.evaluation.sprm_api import sprm_collect

    with reported():
        try:
            with shown() as progress:
                got = sprm_collect(out, dataset=dataset, split=split, ids=ids, limit=limit,
                                   n=n, model=model, max_tokens=max_tokens,
                                   temperature=temperature, concurrency=concurrency,
                                   layer=parse_layers(layer), threads=threads, dtype=dtype,
                                   progress=progress)
        except KeyboardInterrupt:
            interrupted(out)
            raise
        print_run(got.run, as_json=False)
        say(f"step features of {got.extracted} traces extracted now (the others were cached)")


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
    from ttscale.cli.evaluate import shown
    from ttscale.cli.sprm import print_train
    from ttscale.evaluation.sprm_api import sprm_train

    with reported():
        with shown() as progress:
            head = sprm_train(runs, out, layer=layer, width=width, epochs=epochs,
                              warmup=warmup, lr=lr, holdout=holdout, folds=folds, seed=seed,
                              threads=threads, progress=progress)
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
    dtype: Annotated[str, typer.Option(
        help="The dtype the model runs in for step features: float32, bfloat16, or auto "
             "(bfloat16 where the CPU computes it natively, AMX or AVX512-BF16: about twice "
             "as fast; float32 elsewhere). A run's cached features keep theirs.")
    ] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a run's traces with an SPRM head: trace AUROC, best-of-N and weighted
    best-of-N against majority at N, scoring against generation time; stores the scores
    as verifier sprm (or --store-as NAME).

    Example: ttscale sprm eval runs/gsm8k --head heads/qwen2.5-coder-1.5b -n 8
    """
    from ttscale.cli.evaluate import shown
    from ttscale.cli.sprm import print_evaluation
    from ttscale.evaluation.sprm_api import sprm_evaluate

    with reported():
        with shown() as progress:
            ev = sprm_evaluate(run_dir, head, n=n, resamples=resamples, seed=seed,
                               store_as=store_as, threads=threads, dtype=dtype,
                               progress=progress)
        print_evaluation(ev, as_json=as_json)
