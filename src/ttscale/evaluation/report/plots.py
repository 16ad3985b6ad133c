"""Accuracy-against-compute curves as a PNG (matplotlib, Agg backend, imported lazily).

One line per strategy: accuracy (as a percentage) against mean tokens per question on a log
axis, a shaded 95% confidence band, and each point labelled with its sample count ``n``.
Compute is on the x axis, not ``n``, so strategies that spend tokens differently compare fairly.
The legend sits below the axes, where it covers no point, and each ``n=`` label takes the
first place around its point that covers no other label and no other point. ``auto`` (the
planner) is drawn thicker, with stars, and :func:`allocation_png_bytes` draws where its tokens
went by the difficulty it predicted after the probe.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttscale.errors import ConfigError, MissingExtra
from ttscale.evaluation.replay.metrics import CurvePoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Where an n= label may go around its point, in points (dx, dy, alignment), tried in order.
LABEL_PLACES = ((4, 5, "left"), (4, -12, "left"), (-4, 5, "right"), (-4, -12, "right"),
                (4, 15, "left"), (-4, 15, "right"), (4, -22, "left"), (-4, -22, "right"),
                (12, -4, "left"), (-12, -4, "right"))
MARKER_PX = 5  # half the side of the square a marker is taken to cover, in pixels

DEFAULT_TITLE = "accuracy against compute"
AUTO = "auto"


def _by_strategy(points: Sequence[CurvePoint]) -> dict[str, list[CurvePoint]]:
    """Points per strategy in first-seen order, each line sorted by tokens (then n)."""
    out: dict[str, list[CurvePoint]] = {}
    for p in points:
        out.setdefault(p.strategy, []).append(p)
    return {s: sorted(ps, key=lambda p: (p.mean_tokens, p.n)) for s, ps in out.items() if ps}


def _tokens(x: float) -> str:
    return f"{x:,.0f}" if x >= 1 else f"{x:g}"


def _mantissa(x: float) -> int:
    return round(x / 10 ** math.floor(math.log10(x))) if x > 0 else 0


def _style(strategy: str) -> dict[str, Any]:
    """``auto`` stands out (a thick line of stars drawn on top): it is the line the others
    are read against."""
    if strategy == AUTO:
        return {"marker": "*", "markersize": 10, "linewidth": 2.4, "zorder": 4}
    return {"marker": "o"}


def _matplotlib() -> None:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtra("matplotlib is not installed: run pip install matplotlib") from exc
    # Agg renders without a display; set before pyplot would pick an interactive backend.
    matplotlib.use("Agg", force=False)


def _figure(points: Sequence[CurvePoint], title: str) -> Figure:
    if not points:
        raise ConfigError("no curve points to plot: replay the run with ttscale eval first")
    _matplotlib()
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    labels: list[tuple[float, float, str, str]] = []
    for strategy, line in _by_strategy(points).items():
        xs = [max(p.mean_tokens, 1e-9) for p in line]  # log axis: no zero
        (drawn,) = ax.plot(xs, [p.accuracy for p in line], label=strategy,
                           **_style(strategy))
        ax.fill_between(xs, [max(p.ci_low, 0.0) for p in line],
                        [min(p.ci_high, 1.0) for p in line], color=drawn.get_color(),
                        alpha=0.15, linewidth=0)
        labels += [(x, p.accuracy, f"n={p.n}", to_hex(drawn.get_color()))
                   for x, p in zip(xs, line, strict=True)]
    ax.set_xscale("log")
    # plain token counts (40, 200, 1,000) read faster than 4x10^1; within a narrow range the
    # minor ticks at 2, 3 and 5 per decade are labelled too, so the axis has enough numbers
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _tokens(x)))
    xs_all = [max(p.mean_tokens, 1e-9) for p in points]
    narrow = max(xs_all) / min(xs_all) < 300  # under 2.5 decades
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda x, _pos: _tokens(x) if narrow and _mantissa(x) in (2, 3, 5) else ""))
    ax.set_ylim(0.0, 1.04)  # room for the label of a point at 100%
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("mean tokens per question (log scale)")
    ax.set_ylabel("accuracy")
    low, high = min(p.questions for p in points), max(p.questions for p in points)
    # strategies of one run may cover different questions (a search run on fewer)
    count = str(high) if low == high else f"{low}-{high}"
    ax.set_title(f"{title} ({count} question{'s' if high != 1 else ''}, 95% CI)")
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    lines = len(_by_strategy(points))
    fig.legend(loc="outside lower center", ncols=min(lines, 4), frameon=False)
    _place_labels(fig, ax, labels)
    return fig


def _place_labels(fig: Figure, ax: Axes, labels: Sequence[tuple[float, float, str, str]]
                  ) -> None:
    """Annotate each point with its label at the first of ``LABEL_PLACES`` inside the axes
    that overlaps no label already placed and no other point; several strategies' points at
    one spot share one label. A label with no free place is left out rather than drawn over
    another."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    canvas = FigureCanvasAgg(fig)  # the figure now saves through it too
    canvas.draw()  # type: ignore[no-untyped-call]  # lays the axes out: coordinates final
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    inside = ax.get_window_extent(renderer)
    at = [tuple(ax.transData.transform((x, y))) for x, y, _, _ in labels]
    markers = [Bbox.from_bounds(px - MARKER_PX, py - MARKER_PX, 2 * MARKER_PX, 2 * MARKER_PX)
               for px, py in at]
    placed: list[Bbox] = []
    done: set[tuple[int, int, str]] = set()
    for (x, y, text, colour), (px, py) in zip(labels, at, strict=True):
        spot = (round(px), round(py), text)
        if spot in done:  # another strategy's label already names this point
            continue
        others = [m for m, (qx, qy) in zip(markers, at, strict=True)
                  if abs(qx - px) > 0.5 or abs(qy - py) > 0.5]
        for dx, dy, align in LABEL_PLACES:
            note = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                               fontsize=7, color=colour, ha=align)
            note.set_in_layout(False)  # placed after the layout: it must not move the axes
            box = note.get_window_extent(renderer)
            within = (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0
                      and box.y1 <= inside.y1)
            if within and not any(box.overlaps(b) for b in (*placed, *others)):
                placed.append(box)
                done.add(spot)
                break
            note.remove()


def plot_png_bytes(points: Sequence[CurvePoint], title: str = DEFAULT_TITLE) -> bytes:
    """The curves as PNG bytes (for embedding in a page without writing a file).

    Example:
        >>> p = CurvePoint("majority", 1, 0.5, 0.3, 0.7, 120.0, 10, ())
        >>> plot_png_bytes([p])[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
        >>> plot_png_bytes([])
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: no curve points to plot: replay the run with ttscale eval first
    """
    fig = _figure(points, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no URL in the page
    return buf.getvalue()


def plot_curves(points: Sequence[CurvePoint], path: Path | str,
                title: str = DEFAULT_TITLE) -> Path:
    """Write the curves of ``points`` to the PNG file ``path``; returns the path.

    Example:
        >>> import tempfile
        >>> pts = [CurvePoint("majority", n, a, a - 0.1, a + 0.1, 100.0 * n, 20, ())
        ...        for n, a in ((1, 0.4), (4, 0.6))]
        >>> out = plot_curves(pts, Path(tempfile.mkdtemp()) / "curves.png")
        >>> out.read_bytes()[:4]
        b'\\x89PNG'
    """
    out = Path(path)
    out.write_bytes(plot_png_bytes(points, title))
    return out


def difficulty_names(bins: int) -> tuple[str, ...]:
    """Names of ``bins`` predicted-difficulty bins, hardest first.

    Example:
        >>> difficulty_names(3), difficulty_names(4)
        (('hard', 'medium', 'easy'), ('1 (hardest)', '2', '3', '4 (easiest)'))
    """
    if bins == 3:
        return ("hard", "medium", "easy")
    if bins == 1:
        return ("all",)
    return tuple(f"{i + 1}" + (" (hardest)" if i == 0 else " (easiest)" if i == bins - 1
                               else "") for i in range(bins))


def allocation_points(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """The ``auto`` points that record where their tokens went, at most three: the
    cheapest, the middle one and the dearest.

    Example:
        >>> p = [CurvePoint("auto", n, 0.5, 0.4, 0.6, 100.0 * n, 9, (), predicted_tokens=(
        ...      50.0 * n, 10.0), predicted_share=(0.5, 0.5)) for n in (1, 2, 4, 8)]
        >>> [x.n for x in allocation_points(p)]
        [1, 4, 8]
    """
    shown = sorted((p for p in points if p.strategy == AUTO and p.predicted_tokens),
                   key=lambda p: (p.mean_tokens, p.n))
    if len(shown) <= 3:
        return shown
    return [shown[0], shown[len(shown) // 2], shown[-1]]


def allocation_png_bytes(points: Sequence[CurvePoint]) -> bytes | None:
    """A small bar chart of where ``auto`` spent its tokens: mean tokens per question in each
    predicted-difficulty bin after the probe (with the share of questions there), one bar
    per budget; ``None`` when no point is ``auto``'s.

    Example:
        >>> from dataclasses import replace
        >>> p = CurvePoint("auto", 4, 0.6, 0.5, 0.7, 300.0, 9, (),
        ...                predicted_tokens=(500.0, 300.0, 100.0),
        ...                predicted_share=(0.3, 0.3, 0.4))
        >>> allocation_png_bytes([p])[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
        >>> allocation_png_bytes([replace(p, strategy="majority")]) is None
        True
    """
    shown = allocation_points(points)
    if not shown:
        return None
    _matplotlib()
    from matplotlib.figure import Figure

    bins = len(shown[0].predicted_tokens)
    share = shown[0].predicted_share or (0.0,) * bins
    fig = Figure(figsize=(6.0, 2.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(shown)
    top = max((t or 0.0) for p in shown for t in p.predicted_tokens) or 1.0
    for i, p in enumerate(shown):
        xs = [b + (i - (len(shown) - 1) / 2) * width for b in range(bins)]
        tokens = [t or 0.0 for t in p.predicted_tokens[:bins]]
        label = f"at majority@{p.n}'s budget: {p.mean_tokens:,.0f} tokens a question"
        bars = ax.bar(xs, tokens, width * 0.95, label=label)
        ax.bar_label(bars, labels=[f"{t:,.0f}" for t in tokens], fontsize=7, padding=1)
    names = difficulty_names(bins)
    ax.set_xticks(range(bins), [f"{names[b]}\n{share[b]:.0%} of questions"
                                for b in range(bins)], fontsize=8)
    ax.set_ylim(0, top * 1.18)  # room for the bar labels
    ax.set_ylabel("tokens a question", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("auto: where the tokens went, by difficulty predicted after the probe",
                 fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
