"""The comparison's table, plot and verdict, from the results file (one JSON line per
(system, approach, question)). Only questions every approach has finished are counted, so
a partial run is still a like-for-like comparison."""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GOAL_POINTS = 5.0  # ttscale's best must beat the best peer by this many points at matched
GOAL_RATIO = 0.5  # tokens, or reach its accuracy at this fraction of its tokens


@dataclass
class Row:
    system: str
    approach: str
    questions: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    server_tokens: float  # mean per question, by the meter
    prompt_tokens: float
    completion_tokens: float
    offloaded_tokens: float  # mean per question, compute outside the server (SPRM)
    offloaded_gflops: float
    total_tokens: float  # server + offloaded: the x of the plot
    wall_seconds: float
    errors: int


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rows(records: list[dict[str, Any]],
         order: list[tuple[str, str, bool]]) -> tuple[list[Row], int]:
    """One row per (system, approach) with results, over the questions every non-optional
    one finished; an optional approach's row, over those of them it finished."""
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        by_key[(r["system"], r["approach"])][r["qid"]] = r
    present = [(s, a) for s, a, _ in order if (s, a) in by_key]
    core = [(s, a) for s, a, opt in order if (s, a) in by_key and not opt]
    common = set.intersection(*(set(by_key[k]) for k in core)) if core else set()
    out = []
    for k in present:
        rs = [by_key[k][q] for q in sorted(common) if q in by_key[k]]
        n = len(rs)
        if n == 0:
            continue
        correct = sum(bool(r["correct"]) for r in rs)
        lo, hi = wilson(correct, n)

        def mean(f: str, rs: list[dict[str, Any]] = rs) -> float:
            return sum(float(r[f]) for r in rs) / len(rs)

        out.append(Row(k[0], k[1], n, correct, correct / n, lo, hi, mean("tokens"),
                       mean("prompt_tokens"), mean("completion_tokens"),
                       mean("offloaded_tokens"), mean("offloaded_flops") / 1e9,
                       mean("tokens") + mean("offloaded_tokens"), mean("wall_seconds"),
                       sum(1 for r in rs if r.get("error"))))
    return out, len(common)


def table(rs: list[Row]) -> str:
    head = ("| system | approach | accuracy (95% CI) [correct/questions] | server tokens / q | "
            "offloaded tokens / q (GFLOPs) | wall s / q | errors |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rs:
        off = (f"{r.offloaded_tokens:,.0f} ({r.offloaded_gflops:,.0f})"
               if r.offloaded_tokens else "0")
        lines.append(f"| {r.system} | {r.approach} | {100 * r.accuracy:.1f}% "
                     f"({100 * r.ci_low:.0f}-{100 * r.ci_high:.0f}) [{r.correct}/{r.questions}] | "
                     f"{r.server_tokens:,.0f} | {off} | {r.wall_seconds:,.1f} | {r.errors} |")
    return "\n".join(lines)


def verdict(rs: list[Row], questions: int) -> dict[str, Any]:
    """The acceptance goal against the best peer approach (highest accuracy, then fewest
    tokens): ttscale's best at <= its tokens, and ttscale's cheapest point that matches it.
    Only rows over all the common questions take part."""
    rs = [r for r in rs if r.questions == questions and r.errors < r.questions]
    ours = [r for r in rs if r.system == "ttscale"]
    peers = [r for r in rs if r.system != "ttscale"]
    if not ours or not peers:
        return {"status": "incomplete"}
    best = max(peers, key=lambda r: (r.accuracy, -r.total_tokens))
    within = [r for r in ours if r.total_tokens <= best.total_tokens]
    ours_at = max(within, key=lambda r: r.accuracy) if within else None
    matching = [r for r in ours if r.accuracy >= best.accuracy]
    cheapest = min(matching, key=lambda r: r.total_tokens) if matching else None
    margin = 100 * (ours_at.accuracy - best.accuracy) if ours_at else None
    ratio = cheapest.total_tokens / best.total_tokens if cheapest else None
    holds = ((margin is not None and margin >= GOAL_POINTS)
             or (ratio is not None and ratio <= GOAL_RATIO))
    return {"status": "holds" if holds else "does not hold",
            "best_peer": f"{best.system} {best.approach}",
            "best_peer_accuracy": best.accuracy, "best_peer_tokens": best.total_tokens,
            "ttscale_best_within_its_tokens": ours_at.approach if ours_at else None,
            "margin_points": margin,
            "ttscale_cheapest_matching": cheapest.approach if cheapest else None,
            "token_ratio": ratio}


def plot(rs: list[Row], questions: int, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    rs = [r for r in rs if r.errors < r.questions]  # a row that never ran has no point
    ours = [r for r in rs if r.system == "ttscale"]
    families: dict[str, list[Row]] = defaultdict(list)
    for r in ours:
        families[r.approach.split("@")[0]].append(r)
    blues = ["tab:blue", "navy", "tab:purple", "tab:cyan", "slategray"]
    for (fam, pts), colour in zip(families.items(), blues, strict=False):
        pts.sort(key=lambda r: r.total_tokens)
        ax.plot([r.total_tokens for r in pts], [100 * r.accuracy for r in pts],
                "-o" if len(pts) > 1 else "o", color=colour, label=f"ttscale {fam}", lw=2)
    style = {"optillm": ("s", "tab:orange"), "its_hub": ("^", "tab:green")}
    placed: list[tuple[float, float]] = []
    for system, (marker, colour) in style.items():
        pts = [r for r in rs if r.system == system]
        if not pts:
            continue
        ax.errorbar([r.total_tokens for r in pts], [100 * r.accuracy for r in pts],
                    yerr=[[100 * (r.accuracy - r.ci_low) for r in pts],
                          [100 * (r.ci_high - r.accuracy) for r in pts]],
                    fmt=marker, color=colour, alpha=0.8, capsize=2, elinewidth=0.6,
                    label=f"{system} (95% CI)")
        for r in pts:
            # a label next to one already placed (about the same accuracy, a label's width
            # of tokens apart) goes below its point, so the two stay readable
            at = (math.log10(r.total_tokens), 100 * r.accuracy)
            near = any(abs(at[0] - x) < 0.15 and abs(at[1] - y) < 2.5 for x, y in placed)
            placed.append(at)
            ax.annotate(r.approach, (r.total_tokens, 100 * r.accuracy), fontsize=7,
                        color=colour, xytext=(4, -10 if near else 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("mean tokens per question (server meter + offloaded verifier tokens)")
    ax.set_ylabel(f"accuracy, % ({questions} questions)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def report(results: Path, order: list[tuple[str, str, bool]], title: str) -> dict[str, Any]:
    """Write RESULTS' summary (.json) and plot (.png) beside it, the plot also into docs/ for
    docs/peers.md; return the summary."""
    rs, questions = rows(load(results), order)
    summary = {"questions": questions, "rows": [asdict(r) for r in rs],
               "verdict": verdict(rs, questions), "table": table(rs)}
    base = results.with_suffix("")
    Path(f"{base}.summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if rs:
        plot(rs, questions, title, Path(f"{base}.png"))
        docs = Path(__file__).resolve().parents[2] / "docs"
        shutil.copyfile(f"{base}.png", docs / f"peers-{results.stem.removeprefix('peers-')}.png")
    return summary
