"""Accuracy-against-compute curves as a PNG (matplotlib, Agg backend, imported lazily).

One line per strategy: accuracy (as a percentage) against mean tokens per question on a log
axis, a shaded 95% confidence band, and each point labelled with its sample count ``n``.
Compute is on the x axis, not ``n``, so strategies that spend tokens differently compare fairly.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ttscale.errors import ConfigError, MissingExtra
from ttscale.evaluation.replay.metrics import CurvePoint

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_TITLE = "accuracy against compute"


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


def _figure(points: Sequence[CurvePoint], title: str) -> Figure:
    if not points:
        raise ConfigError("no curve points to plot: replay the run with ttscale eval first")
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtra("matplotlib is not installed: run pip install matplotlib") from exc
    # Agg renders without a display; set before pyplot would pick an interactive backend.
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for strategy, line in _by_strategy(points).items():
        xs = [max(p.mean_tokens, 1e-9) for p in line]  # log axis: no zero
        (drawn,) = ax.plot(xs, [p.accuracy for p in line], marker="o", label=strategy)
        ax.fill_between(xs, [max(p.ci_low, 0.0) for p in line],
                        [min(p.ci_high, 1.0) for p in line], color=drawn.get_color(),
                        alpha=0.15, linewidth=0)
        for x, p in zip(xs, line, strict=True):
            ax.annotate(f"n={p.n}", (x, p.accuracy), textcoords="offset points",
                        xytext=(4, 5), fontsize=7, color=drawn.get_color())
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
    ax.legend(loc="lower right")
    return fig


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
