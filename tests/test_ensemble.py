"""Ensembles over sources: weights, the MILP, and cross-validation that never peeks."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from ttscale.aggregation.ensemble import (
    METHODS,
    Fitted,
    QuestionVotes,
    cross_validate,
    effective_weights,
    first_order_weight,
    fit,
    milp_weights,
    predict,
    question_votes,
)
from ttscale.errors import ConfigError


def synthetic(seed: int, questions: int = 24, accuracies: tuple[float, ...] = (0.8, 0.6, 0.5,
                                                                              0.4)
              ) -> list[QuestionVotes]:
    """Sources that answer right with their accuracy, else one of three wrong answers."""
    rng = random.Random(seed)
    out = []
    for k in range(questions):
        drawn = []
        for acc in accuracies:
            drawn.append(["7" if rng.random() < acc else rng.choice(["1", "2", "3"])
                          for _ in range(5)])
        out.append(question_votes(str(k), lambda a: a == "7", drawn,
                                  [100.0 * (i + 1) for i in range(len(accuracies))]))
    return out


def test_first_order_weight_formula() -> None:
    for p, k in ((0.9, 2), (0.6, 4), (0.3, 10)):
        assert first_order_weight(p, k) == pytest.approx(math.log(p * (k - 1) / (1 - p)))
    assert first_order_weight(0.2, 2) == 0.0  # worse than chance: never a negative vote
    with pytest.raises(ConfigError):
        first_order_weight(1.0, 2)


def test_first_order_uses_smoothed_calibration_accuracy_and_question_k() -> None:
    qs = synthetic(0)
    fitted = fit("first_order", qs[:10], 4)
    tops = [sum(q.top(i) is not None and q.correct[q.top(i)]  # type: ignore[index]
                for q in qs[:10]) for i in range(4)]
    assert fitted.weights == tuple((t + 0.5) / 11 for t in tops)
    q = qs[11]
    k = max(2, len(q.candidates))
    assert effective_weights(fitted, q) == tuple(first_order_weight(p, k)
                                                 for p in fitted.weights)


def _q(qid: str, shares: tuple[tuple[float, ...], ...],
       correct: tuple[bool, ...] = (True, False, False)) -> QuestionVotes:
    return QuestionVotes(qid, tuple(str(i) for i in range(len(correct))), correct, shares,
                         (1.0,) * len(shares))


def test_milp_finds_the_known_optimum() -> None:
    # source 0 wins a and b, source 1 wins c and d, source 2 wins nothing alone; no single
    # source gets more than 2 of 4, but 0 + 1 together with 2 as a tie-breaker gets 3:
    # e: 0 and 1 split, 2 decides.
    qs = [_q("a", ((1, 0, 0), (0, 1, 0), (0, 0, 1))),
          _q("b", ((1, 0, 0), (0, 0, 1), (0, 1, 0))),
          _q("c", ((0, 1, 0), (1, 0, 0), (0, 0, 1))),
          _q("e", ((1, 0, 0), (0, 1, 0), (1, 0, 0)))]
    w = milp_weights(qs, 3)
    won = [predict(Fitted("milp", w), q) == 0 for q in qs]
    assert sum(won) == 3  # the maximum: a and c need sources 0 and 1 to beat each other
    assert sum(w) == pytest.approx(1.0) and min(w) >= 0
    # and the best single source (source 0) gets only 3 with c lost
    assert sum(predict(Fitted("best_cv", (1.0, 0.0, 0.0)), q) == 0 for q in qs) == 3


def test_milp_prefers_the_largest_margin() -> None:
    qs = [_q("a", ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), (True, False, False)),
          _q("b", ((0.4, 0.6, 0.0), (1.0, 0.0, 0.0)), (True, False, False))]
    assert milp_weights(qs, 2) == pytest.approx((0.625, 0.375), abs=1e-6)


def test_milp_skips_questions_no_source_can_win() -> None:
    qs = [_q("a", ((1, 0, 0), (0, 1, 0))), _q("x", ((0, 1, 0), (0, 0, 1)), (False,) * 3)]
    w = milp_weights(qs, 2)
    assert predict(Fitted("milp", w), qs[0]) == 0


@pytest.mark.parametrize("method", [m for m in METHODS if m != "best_hindsight"])
def test_cross_validation_never_reads_the_held_out_label(method: str) -> None:
    qs = synthetic(3)
    base = cross_validate(qs, method)
    for i in (0, 5, 17):
        flipped = list(qs)
        # the held-out question's gold moves to another candidate (or to none)
        flipped[i] = replace(qs[i], correct=tuple(not c for c in qs[i].correct))
        again = cross_validate(flipped, method)
        assert again.predictions[i] == base.predictions[i]
        assert again.weights[i] == base.weights[i]


def test_cross_validation_folds_and_errors() -> None:
    qs = synthetic(4)
    assert len(cross_validate(qs, "equal", folds=4).predictions) == len(qs)
    with pytest.raises(ConfigError, match="folds"):
        cross_validate(qs, "equal", folds=1)
    with pytest.raises(ConfigError, match="unknown ensemble method"):
        cross_validate(qs, "boosting")


def test_weighted_methods_beat_equal_votes_when_accuracies_differ() -> None:
    qs = [q for s in range(3) for q in synthetic(s, 40, (0.9, 0.35, 0.35, 0.35, 0.35))]
    equal = cross_validate(qs, "equal", folds=10).accuracy
    for method in ("first_order", "milp", "best_cv"):
        assert cross_validate(qs, method, folds=10).accuracy >= equal


def test_tokens_count_only_consulted_sources() -> None:
    qs = synthetic(5)
    assert cross_validate(qs, "best_cv").tokens == tuple(
        100.0 * (1 + w.index(1.0)) for w in cross_validate(qs, "best_cv").weights)
    assert cross_validate(qs, "equal").mean_tokens == 1000.0


def test_second_order_discounts_sources_that_err_together() -> None:
    # sources 1 and 2 copy each other's mistakes; source 0 is right when they are wrong
    train = []
    for k in range(12):
        if k % 2:
            train.append(_q(str(k), ((1, 0, 0), (0, 1, 0), (0, 1, 0))))
        else:
            train.append(_q(str(k), ((1, 0, 0), (1, 0, 0), (1, 0, 0))))
    fitted = fit("second_order", train, 3)
    test = _q("t", ((1, 0, 0), (0, 1, 0), (0, 1, 0)))
    assert predict(fit("equal", train, 3), test) == 1  # two copies outvote one
    assert predict(fitted, test) == 0
