"""Rich output for the CLI: results, the model catalogue, and the progress spinner.

Everything here only formats values it is given; nothing decides or computes an answer.
User-supplied text (answers, notes, descriptions) is always passed as ``Text`` so that
square brackets in it are never read as rich markup.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ttscale.cli.progress import InstallBar as InstallBar
from ttscale.cli.progress import PhaseDisplay as PhaseDisplay
from ttscale.evaluation.datasets import DatasetInfo
from ttscale.strategies.spec import StrategyInfo
from ttscale.types import Result

if TYPE_CHECKING:  # the ensemble code is loaded only by its command
    from ttscale.evaluation.replay.ensembles import EnsembleReport
    from ttscale.evaluation.replay.metrics import CurvePoint
    from ttscale.evaluation.replay.verifiers import Comparison


def format_flops(flops: float) -> str:
    """FLOPs in short scientific notation, without the ``+`` of Python's ``e`` format.

    Example:
        >>> format_flops(1.234e12), format_flops(5.0e9), format_flops(0)
        ('1.2e12', '5.0e9', '0')
        >>> format_flops(512)
        '512'
    """
    if flops <= 0:
        return "0"
    if flops < 1000:
        return f"{flops:.0f}"
    exponent = math.floor(math.log10(flops))
    mantissa = flops / 10**exponent
    if round(mantissa, 1) >= 10:  # 9.96e9 rounds to "10.0e9": carry into the exponent
        mantissa /= 10
        exponent += 1
    return f"{mantissa:.1f}e{exponent}"


def format_params(count: int) -> str:
    """A parameter count with three significant digits and a K/M/B suffix.

    Example:
        >>> format_params(1_543_714_304), format_params(494_032_768), format_params(0)
        ('1.54B', '494M', '?')
    """
    if count <= 0:
        return "?"  # the catalogue or the backend did not know it
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= limit:
            return f"{count / limit:.3g}{suffix}"
    return str(count)


def format_size(size_bytes: int) -> str:
    """A file size in decimal units (as PyPI and download pages show them).

    Example:
        >>> format_size(1_117_320_768), format_size(98_362_432), format_size(512)
        ('1.1 GB', '98 MB', '512 B')
    """
    if size_bytes >= 1e9:
        return f"{size_bytes / 1e9:.1f} GB"
    if size_bytes >= 1e6:
        return f"{size_bytes / 1e6:.0f} MB"
    if size_bytes >= 1e3:
        return f"{size_bytes / 1e3:.0f} kB"
    return f"{size_bytes} B"


def result_renderable(result: Result, model: str | None = None) -> RenderableType:
    """The answer, the vote table, the compute spent, then warnings and notes.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> r = solve("6*7?", backend=FakeBackend(), n=2)
        >>> console = Console(width=80)
        >>> with console.capture() as captured:
        ...     console.print(result_renderable(r, model="fake"))
        >>> "42" in captured.get()
        True
    """
    parts: list[RenderableType] = []
    if result.answer is not None:
        answer = Text(result.answer, style="bold green")
    else:
        answer = Text("no answer: no trace ended with an answer", style="bold yellow")
    about = f"strategy {result.strategy}" + (f" · model {model}" if model else "")
    about += f" · {len(result.traces)} trace{'s' if len(result.traces) != 1 else ''}"
    parts.append(Text(about, style="dim"))
    parts.append(Panel(answer, title="answer", title_align="left", expand=False,
                       border_style="green" if result.answer is not None else "yellow"))

    if result.classes:
        parts.append(classes_table(result))
    unanswered = sum(1 for t in result.traces if t.answer is None)
    if unanswered:
        parts.append(Text(f"{unanswered} of {len(result.traces)} traces gave no answer",
                          style="yellow"))

    parts.append(usage_table(result))

    if result.budget_limited:
        parts.append(Text(
            f"warning: the budget ran out: the answer rests on {len(result.traces)} trace(s), "
            "fewer than asked; raise --budget for more", style="bold yellow"))
    for note in result.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    return Group(*parts)


def classes_table(result: Result) -> Table:
    """One row per answer class: answer, votes, score (when scored), share of the votes.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> table = classes_table(solve("6*7?", backend=FakeBackend(), n=2))
        >>> [c.header for c in table.columns], [str(c) for c in table.columns[0].cells]
        (['answer', 'votes', 'share'], ['42'])
    """
    scored = any(c.score is not None for c in result.classes)
    total_votes = sum(c.votes for c in result.classes) or 1
    table = Table(title="answer classes", title_justify="left")
    table.add_column("answer", overflow="fold")
    table.add_column("votes", justify="right")
    if scored:
        table.add_column("score", justify="right")
    table.add_column("share", justify="right")
    for c in result.classes:
        winner = c.answer == result.answer
        row: list[RenderableType] = [Text(c.answer, style="bold" if winner else ""),
                                     str(c.votes)]
        if scored:
            row.append("-" if c.score is None else f"{c.score:.3f}")
        row.append(f"{100 * c.votes / total_votes:.0f}%")
        table.add_row(*row)
    return table


def usage_table(result: Result) -> Table:
    """The compute a result cost: tokens, calls, estimated FLOPs and wall time.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> table = usage_table(solve("6*7?", backend=FakeBackend(), n=2))
        >>> list(table.columns[0].cells), list(table.columns[1].cells)[1]
        (['tokens', 'calls', 'FLOPs', 'time'], '1')
    """
    u = result.usage
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_row("tokens", f"{u.prompt_tokens:,} prompt / {u.completion_tokens:,} completion "
                            f"/ {u.total_tokens:,} total")
    table.add_row("calls", str(u.calls))
    table.add_row("FLOPs", f"{format_flops(u.flops)} (estimated)")
    table.add_row("time", f"{result.seconds:.2f} s")
    return table


def datasets_table(rows: Sequence[DatasetInfo]) -> Table:
    """The datasets ``ttscale datasets`` lists: splits with their sizes, and the source.

    Example:
        >>> row = DatasetInfo("mine", ("test",), (40,), "a local file", "my questions")
        >>> [str(c) for c in datasets_table([row]).columns[1].cells]
        ['test (40)']
    """
    table = Table(title="datasets")
    for name in ("name", "splits", "source", "description"):
        table.add_column(name)
    for d in rows:
        splits = ", ".join(f"{s} ({size:,})" for s, size in zip(d.splits, d.sizes, strict=False)
                           ) if d.sizes else (", ".join(d.splits) or "any")
        table.add_row(Text(d.name), Text(splits), Text(d.source), Text(d.description))
    return table


@dataclass(frozen=True)
class ModelRow:
    """What the ``models`` table shows for one catalogue entry."""

    name: str
    description: str
    params_count: int
    size_bytes: int
    installed: bool
    install_command: str


# Below this many columns the models table stacks each description under its name.
STACK_BELOW = 100


def models_table(rows: Sequence[ModelRow], width: int | None = None) -> Table:
    """The named models, whether each is installed, and how to install the missing ones.

    Names are copied into other commands, so they are never cut or wrapped: the description
    wraps instead, under the name when ``width`` is below ``STACK_BELOW`` columns, and the
    install commands go under the table, where they fit any width.

    Example:
        >>> row = ModelRow("m", "a model", 1_540_000_000, 1_100_000_000, False, "install m")
        >>> table = models_table([row], width=80)
        >>> table.row_count, len(table.columns), table.caption
        (1, 4, 'not installed: install m')
    """
    stacked = width is not None and width < STACK_BELOW
    narrow = width is not None and width < 64  # the parameter count goes first
    missing = [r.install_command for r in rows if not r.installed]
    table = Table(title="named models", title_justify="left", caption_justify="left",
                  caption="\n".join(f"not installed: {c}" for c in missing) or None)
    table.add_column("name" + (" and description" if stacked else ""), no_wrap=not stacked,
                     min_width=max((len(r.name) for r in rows), default=4),
                     ratio=1 if stacked else None, overflow="fold")
    if not stacked:
        table.add_column("description", ratio=1, min_width=12, overflow="fold")
    if not narrow:
        table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("installed", no_wrap=True)
    for r in rows:
        installed = Text("yes", style="green") if r.installed else Text("no", style="yellow")
        name = Text(r.name, style="bold")
        if stacked:
            name.append("\n" + r.description, style="dim")
            cells: list[RenderableType] = [name]
        else:
            cells = [name, Text(r.description)]
        if not narrow:
            cells.append(format_params(r.params_count))
        table.add_row(*cells, format_size(r.size_bytes), installed)
    return table


def strategies_table(infos: Sequence[StrategyInfo]) -> Table:
    """Every strategy: its name, then what it does, its options with their defaults, its
    default number of samples and whether it needs a verifier, stacked in one cell so that
    the table reads the same at 80 columns as at 200.

    Example:
        >>> from ttscale.strategies.spec import describe_strategy
        >>> strategies_table([describe_strategy("beam")]).row_count
        1
    """
    table = Table(title="strategies: --strategy NAME[:KEY=VALUE,...], samples with -n",
                  title_justify="left", show_lines=True)
    table.add_column("name", style="bold", no_wrap=True,
                     min_width=max((len(i.name) for i in infos), default=4))
    table.add_column("what it does", ratio=1, overflow="fold")
    for info in infos:
        cell = Text(info.summary)
        facts = []
        if info.default_n is not None:
            facts.append(f"-n {info.default_n} by default")
        if info.needs_verifier:
            facts.append("needs a verifier (--verifier, default self_judge)")
        if facts:
            cell.append("\n" + "; ".join(facts), style="dim")
        if info.options:
            cell.append("\noptions: ", style="cyan")
            cell.append(", ".join(f"{k}={v}" for k, v in info.options))
        table.add_row(Text(info.name), cell)
    return table


def print_output(renderable: RenderableType, console: Console | None = None) -> None:
    """Print a command's result on stdout at the width it needs.

    On a terminal rich fits the terminal; piped or redirected, rich would squeeze every
    table into 80 columns, so the output gets the width its content wants instead (or the
    width ``COLUMNS`` asks for, when set).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> wide = Table("name")
        >>> wide.add_row("x" * 120)
        >>> print_output(wide, Console(file=out))
        >>> max(len(line) for line in out.getvalue().splitlines())
        124
    """
    console = console or Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        wanted = Measurement.get(console, console.options.update(width=10_000),
                                 renderable).maximum
        console.width = max(80, min(wanted, 10_000))
    console.print(renderable)


def ensemble_table(report: EnsembleReport) -> Table:
    """The ensemble methods side by side: accuracy, tokens per question, tokens relative to
    the most accurate single source, and the mean weights.

    Example:
        >>> from ttscale.evaluation.replay.ensembles import EnsembleReport, EnsembleRow
        >>> report = EnsembleReport(("runs/a", "runs/b"), 10, (0.6, 0.7), (900.0, 1200.0),
        ...                         (EnsembleRow("equal", 0.8, 2100.0, (1.0, 1.0)),))
        >>> ensemble_table(report).title
        '10 shared questions, cross-validated; best single source b: 70.0% at 1,200 tokens'
    """
    best = max(range(len(report.sources)), key=lambda i: report.source_accuracy[i])
    base = report.source_tokens[best] or 1.0
    from pathlib import Path

    names = [Path(s).name for s in report.sources]
    table = Table(title=f"{report.questions} shared questions, cross-validated; best single "
                        f"source {names[best]}: {report.source_accuracy[best]:.1%} at "
                        f"{report.source_tokens[best]:,.0f} tokens",
                  caption=f"weights in source order: {', '.join(names)}")
    name_column(table, "method", [row.method for row in report.rows])
    for name in ("accuracy", "tokens/question", "x best source"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("mean weights", overflow="fold")
    for row in report.rows:
        weights = ", ".join(f"{w:.2f}" for w in row.weights)
        table.add_row(row.method, f"{row.accuracy:.1%}", f"{row.tokens:,.0f}",
                      f"{row.tokens / base:.2f}", weights)
    return table


def name_column(table: Table, header: str, names: Sequence[str], longest: int = 28) -> None:
    """Add a column of names that are never cut: it is as wide as its longest name (up to
    ``longest`` characters; a longer name folds onto the next line rather than losing its
    end), so rich shrinks the other columns first.

    Example:
        >>> t = Table()
        >>> name_column(t, "strategy", ["majority", "weighted_best_of_n"])
        >>> t.columns[0].min_width, t.columns[0].overflow
        (18, 'fold')
    """
    widest = max([len(header), *(len(n) for n in names)])
    table.add_column(header, min_width=min(widest, longest), overflow="fold")


# Below this many columns the eval table leaves out FLOPs and seconds per question.
CURVE_FULL_WIDTH = 110


def curve_table(points: Sequence[CurvePoint], title: str, width: int | None = None) -> Table:
    """The table of ``ttscale eval`` and ``eval replay``: accuracy against compute per
    strategy and n. Strategy names are never cut (:func:`name_column`); below
    ``CURVE_FULL_WIDTH`` columns (``width``) FLOPs and seconds per question are left out,
    and the difficulty bins wrap.

    Example:
        >>> from ttscale.evaluation.replay.metrics import CurvePoint
        >>> p = CurvePoint("weighted_best_of_n", 4, 0.7, 0.6, 0.8, 1234.0, 40,
        ...                (("easy", 20, 0.9), ("medium", 10, 0.5), ("hard", 10, None)))
        >>> console = Console(width=80)
        >>> with console.capture() as out:
        ...     console.print(curve_table([p], "accuracy against compute", width=80))
        >>> "weighted_best_of_n" in out.get(), "FLOPs" in out.get()
        (True, False)
    """
    full = width is None or width >= CURVE_FULL_WIDTH
    table = Table(title=title)
    name_column(table, "strategy", [p.strategy for p in points], longest=18)
    for name in ("n", "accuracy", "95% CI", "tokens/question" if full else "tokens/q"):
        table.add_column(name, justify="right", no_wrap=True)
    if full:
        table.add_column("FLOPs/question", justify="right", no_wrap=True)
        table.add_column("s/question", justify="right", no_wrap=True)
    table.add_column("easy / medium / hard", justify="right")  # wraps at its spaces
    for p in points:
        half = (p.ci_high - p.ci_low) / 2
        bins = " / ".join("-" if acc is None else f"{acc:.0%}" for _, _, acc in p.bins)
        cells: list[RenderableType] = [Text(p.strategy), str(p.n), f"{p.accuracy:.1%}",
                                       f"± {half:.1%}", f"{p.mean_tokens:,.0f}"]
        if full:
            cells += ["-" if p.mean_flops is None else format_flops(p.mean_flops),
                      "-" if p.mean_seconds is None else f"{p.mean_seconds:.1f}"]
        table.add_row(*cells, bins)
    return table


def _points(share: float) -> str:
    """A share as signed points to one decimal, with no sign on zero (``-0.0`` reads as a
    loss); whole points would round an interval's -0.3 to 0 and hide that it crosses zero.

    Example:
        >>> _points(-0.0028), _points(0.0142), _points(-0.0004)
        ('-0.3', '+1.4', '0.0')
    """
    text = f"{100 * share:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def verifiers_table(res: Comparison) -> Table:
    """Majority and each verifier's best-of-n and weighted best-of-n at every n, with the
    paired difference against majority; each verifier's trace AUROC and its mean AUROC
    within a question in the caption. All on the same samples.

    Example:
        >>> from ttscale.evaluation.replay.metrics import CurvePoint
        >>> from ttscale.evaluation.replay.verifiers import Comparison
        >>> p = CurvePoint("majority", 4, 0.5, 0.2, 0.8, 120.0, 10, ())
        >>> table = verifiers_table(Comparison(10, 0, (p,), ()))
        >>> table.row_count, table.title
        (1, '10 questions, the same samples for every row')
    """
    notes = []
    for v in res.verifiers:
        auc = "-" if v.auroc is None else f"{v.auroc:.3f}"
        inner = ("" if v.within_auroc is None else
                 f", {v.within_auroc:.3f} within a question ({v.within_questions} questions)")
        # which head an sprm name scored with: a name alone may mean another head elsewhere
        source = f", {v.source}" if v.source and v.source != v.verifier else ""
        notes.append(f"{v.verifier}: AUROC {auc} over {v.traces} traces{inner}{source}")
    table = Table(title=f"{res.questions} questions, the same samples for every row",
                  caption="\n".join(["tokens per question include the verifier's; vs majority: "
                                      "paired over questions, 95% interval", *notes]))
    short = {"best_of_n": "best-of-n", "weighted_best_of_n": "weighted"}
    strategies = ["majority", *(short.get(p.strategy.split(" [")[0], p.strategy)
                                for v in res.verifiers for p in v.points)]
    name_column(table, "strategy", strategies)
    name_column(table, "verifier", [v.verifier for v in res.verifiers])
    for name in ("n", "accuracy", "95% CI"):
        table.add_column(name, justify="right", no_wrap=True)
    # the one column that may wrap, at its space: "+0.6" over "(-0.3..+1.4)"
    table.add_column("vs majority", justify="right")
    table.add_column("tokens/q", justify="right", no_wrap=True)
    for p in res.majority:
        table.add_row("majority", "", str(p.n), f"{p.accuracy:.1%}",
                      f"{p.ci_low:.0%}..{p.ci_high:.0%}", "", f"{p.mean_tokens:,.0f}")
    for v in res.verifiers:
        diffs = {(d.strategy, d.n): d for d in v.differences}
        for p in v.points:
            strategy = p.strategy.split(" [")[0]
            d = diffs.get((strategy, p.n))
            vs = "" if d is None else (f"{100 * d.mean:+.1f} ({_points(d.low)}.."
                                       f"{_points(d.high)})")
            table.add_row(short.get(strategy, p.strategy), v.verifier, str(p.n),
                          f"{p.accuracy:.1%}", f"{p.ci_low:.0%}..{p.ci_high:.0%}", vs,
                          f"{p.mean_tokens:,.0f}")
    return table
