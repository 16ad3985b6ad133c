"""The plan applied to a live probe: from the traces drawn so far, the next action.

The same signals as at fit time (:mod:`ttscale.planner.signals`) are computed from the
solve's own traces: answer classes by math-verify equivalence in first-drawn order, lengths,
finish reasons, and, once verified, the verifier's scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.aggregation.stopping import bayes_factor
from ttscale.planner.plan import Plan, Point
from ttscale.planner.signals import Probe, features
from ttscale.strategies.base import classes_of
from ttscale.types import Trace


def probe_of(traces: Sequence[Trace], prompt_tokens: int, *, verified: bool) -> Probe:
    """The probe state of a solve's traces.

    Example:
        >>> t = [Trace("", "4", 10, "stop"), Trace("", "4.0", 12, "stop"),
        ...      Trace("", None, 30, "length")]
        >>> p = probe_of(t, 100, verified=False)
        >>> p.classes, p.cut, p.counts
        ((0, 0, -1), (False, False, True), (2,))
    """
    class_of = {i: k for k, c in enumerate(classes_of(traces)) for i in c.traces}
    scores = None
    if verified:
        scores = tuple(float(t.score if t.score is not None else 0.0) for t in traces)
    return Probe(tuple(class_of.get(i, -1) for i in range(len(traces))),
                 tuple(t.completion_tokens for t in traces),
                 tuple(t.finish_reason == "length" for t in traces), prompt_tokens, scores)


@dataclass(frozen=True)
class Decision:
    """The next action at a probe state, the state's cell and its predicted difficulty."""

    action: str
    cell: int
    difficulty: int
    prob: float


def decide(plan: Plan, point: Point, track: str, stage: int, probe: Probe, *,
           can_sample: bool) -> Decision:
    """What ``point``'s policy does at ``stage`` of ``track`` for this probe; an action to
    sample that cannot be carried out (the last stage, or the budget) becomes the state's
    answer.

    Example:
        >>> from ttscale.planner.plan import example_plan
        >>> plan = example_plan()
        >>> p = Probe((0,), (10,), (False,), 5)
        >>> decide(plan, plan.points[1], "U", 0, p, can_sample=True).action
        'sample'
        >>> decide(plan, plan.points[1], "U", 0, p, can_sample=False).action
        'majority'
    """
    x = features(probe, track, confidence=plan.confidence)
    cell = plan.cell(track, stage, x, bayes_factor(list(probe.counts)))
    pred = plan.predictor(track, stage)
    table, answer = (point.v, point.answer_v) if track == "V" else (point.u, point.answer_u)
    action = table[stage][cell]
    if action == "sample" and not (can_sample and stage + 1 < len(plan.stages)):
        action = answer[stage][cell]
    return Decision(action, cell, pred.bin(x), pred.prob(x))
