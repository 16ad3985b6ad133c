"""``ttscale plan``: fit a compute-optimal plan from stored runs, and explain one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ttscale.cli.common import reported

plan_app = typer.Typer(
    help="Compute-optimal plans for the auto strategy: fit one from stored runs, or explain "
         "one in plain words.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@plan_app.command("fit")
def fit_command(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Run directories of one model (ttscale eval runs, imported sample sets).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the plan (JSON).",
                                      show_default=False)],
    currency: Annotated[str, typer.Option(
        help="What the budget counts: flops (policy and verifier, each by the layers it "
             "runs), tokens or seconds.")] = "flops",
    verifier: Annotated[str | None, typer.Option(
        help="Whose stored scores to use (default: the run's first verifier).",
        show_default=False)] = None,
    verifier_fraction: Annotated[float | None, typer.Option(
        help="Price a verifier token at this fraction of a policy token (0.5: a head reading "
             "half the layers); default: as its stored scores say.", show_default=False)
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-fitting folds over questions.")] = 10,
    orders: Annotated[int, typer.Option(help="Random sample orders per question.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the orders and folds.")] = 0,
    races: Annotated[bool, typer.Option(
        "--races", help="Also weigh races: k samples started together, the first half to "
                        "finish vote and the rest are stopped (pays on long, varied traces; "
                        "needs many questions to be chosen reliably).")] = False,
) -> None:
    """Fit a plan and print the accuracy it expects at each budget (cross-fitted).

    Example: ttscale plan fit runs/gsm8k-test-0-39 --out plan.json --verifier-fraction 0.5
    """
    from ttscale.cli.evaluate import shown
    from ttscale.evaluation.replay.auto import fit_from_runs
    from ttscale.files import output_file

    with reported():
        output_file(out, "plan.json")  # a wrong --out fails now, not after the fit
        with shown() as progress:
            plan = fit_from_runs([str(d) for d in run_dirs], verifier=verifier, unit=currency,
                                 verifier_fraction=verifier_fraction, folds=folds,
                                 orders=orders, seed=seed, races=races, progress=progress)
        plan.save(out)
        console = Console()
        table = Table(title=f"auto for {plan.model}, cross-fitted over {folds} folds "
                            f"({plan.calibration['questions']} questions)")
        for col in ("budget (samples' worth)", "accuracy", "tokens", "FLOPs", "samples"):
            table.add_column(col, justify="right")
        for f in plan.calibration["frontier"]:
            table.add_row(f"{f['budget_samples']:g}", f"{f['accuracy']:.1%}",
                          f"{f['tokens']:,.0f}", f"{f['flops']:.3g}", f"{f['samples']:.2f}")
        console.print(table)
        console.print(f"wrote {out}")


@plan_app.command("show")
def show_command(
    plan_file: Annotated[Path, typer.Argument(help="A plan written by ttscale plan fit.")],
) -> None:
    """Explain a plan: what happens per predicted-difficulty bin, at each budget.

    Example: ttscale plan show plan.json
    """
    from ttscale.planner.explain import explain
    from ttscale.planner.plan import load_plan

    with reported():
        typer.echo(explain(load_plan(plan_file), str(plan_file)))
