"""The curves plot: its legend covers no point and no two n= labels overlap, on the
figures of the README's GSM8K run (three strategies and pass@k, several at one spot)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ttscale.evaluation.replay.metrics import CurvePoint
from ttscale.evaluation.report.plots import _figure

# docs/measurements/gsm8k.md: n, accuracy, tokens per question (GSM8K test 0-39)
MEASURED = {
    "majority": [(1, .523, 418), (2, .519, 838), (4, .624, 1673), (8, .672, 3348),
                 (16, .700, 6702)],
    "weighted_best_of_n": [(1, .523, 835), (2, .534, 1672), (4, .636, 3340),
                           (8, .698, 6682), (16, .725, 13377)],
    "best_of_n": [(1, .523, 835), (2, .534, 1672), (4, .508, 3340), (8, .454, 6682),
                  (16, .400, 13377)],
    "pass@k": [(1, .525, 419), (2, .671, 838), (4, .780, 1676), (8, .868, 3351),
               (16, .925, 6702)],
}


@pytest.fixture(scope="module")
def drawn() -> tuple[Any, list[CurvePoint]]:
    points = [CurvePoint(s, n, a, a - 0.1, min(a + 0.1, 1.0), t, 40, ())
              for s, rows in MEASURED.items() for n, a, t in rows]
    return _figure(points, "accuracy against compute"), points


def test_no_two_n_labels_overlap(drawn: tuple[Any, list[CurvePoint]]) -> None:
    fig, _ = drawn
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert boxes
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)


def test_every_point_is_labelled_once_per_spot(drawn: tuple[Any, list[CurvePoint]]) -> None:
    fig, points = drawn
    ax = fig.axes[0]
    spots = {(round(p.mean_tokens), round(p.accuracy, 3), p.n) for p in points}
    labels = sorted(t.get_text() for t in ax.texts)
    assert len(labels) == len(spots)
    assert {f"n={n}" for *_, n in spots} == set(labels)


def test_the_legend_covers_no_point(drawn: tuple[Any, list[CurvePoint]]) -> None:
    fig, points = drawn
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for p in points:
        x, y = ax.transData.transform((p.mean_tokens, p.accuracy))
        assert not legend.contains(x, y)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(MEASURED)
