"""Replay metrics on small generated sample sets: pass@k, subset votes, curves, import."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from ttscale.errors import ConfigError
from ttscale.evaluation.replay.metrics import (
    QuestionSamples,
    Sample,
    curve,
    pass_at_k,
    prepare,
    subsample_accuracy,
)
from ttscale.evaluation.runs.importers import import_boinf
from ttscale.strategies.base import classes_of, pick
from ttscale.types import Trace


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    import itertools

    items = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 1, 1), (5, 2, 2), (6, 3, 4),
                                           (8, 1, 8), (7, 6, 3)])
def test_pass_at_k_matches_enumeration(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k))


def test_pass_at_k_known_values() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 2, 3) == 1.0  # every 3-subset of 4 holds a correct one
    with pytest.raises(ConfigError, match="k at most"):
        pass_at_k(3, 1, 4)


def _plain_majority_correct(samples: list[Sample], gold: str) -> bool:
    traces = [Trace(f"x {s[0]}", s[0], s[1], "stop") for s in samples]
    winner = pick(classes_of(traces), "votes")
    from ttscale.answers import equivalent

    return winner is not None and equivalent(winner, gold)


@pytest.mark.parametrize("seed", range(6))
def test_majority_at_all_samples_equals_plain_majority(seed: int) -> None:
    r = random.Random(seed)
    samples: list[Sample] = [(r.choice(["1", "2", "0.5", "1/2", None]), r.randint(1, 9), None)
                             for _ in range(7)]
    for gold in ("1", "2", "0.5"):
        acc, tokens = subsample_accuracy(samples, gold, 7, 20, random.Random(0))
        assert acc == float(_plain_majority_correct(samples, gold))
        assert tokens == sum(s[1] for s in samples)


def test_equivalent_answers_merge() -> None:
    samples: list[Sample] = [("0.5", 1, None), ("3", 1, None), ("1/2", 1, None)]
    p = prepare(samples, "\\frac{1}{2}")
    assert p.classes == (0, 1, 0)
    assert p.correct == (True, False)
    assert subsample_accuracy(samples, "0.5", 3, 10, random.Random(0)) == (1.0, 3.0)


def test_tie_goes_to_earliest_drawn_class() -> None:
    samples: list[Sample] = [("1", 1, None), ("2", 1, None)]
    # k=2 of 2: sample order, so "1" wins the 1-1 tie
    assert subsample_accuracy(samples, "1", 2, 5, random.Random(0))[0] == 1.0
    assert subsample_accuracy(samples, "2", 2, 5, random.Random(0))[0] == 0.0
    # k=2 of 3 with a 1-1 tie: the winner is whichever was drawn first, so about half
    three: list[Sample] = [("1", 1, None), ("2", 1, None), ("3", 1, None)]
    acc, _ = subsample_accuracy(three, "1", 2, 4000, random.Random(1))
    assert acc == pytest.approx(1 / 3, abs=0.03)


def test_subsets_are_drawn_without_replacement() -> None:
    samples: list[Sample] = [(str(i), 10 ** i, None) for i in range(4)]
    _, tokens = subsample_accuracy(samples, "0", 2, 2000, random.Random(0))
    # each sample is in a 2-subset with probability 1/2: mean tokens = sum / 2
    assert tokens == pytest.approx(sum(10 ** i for i in range(4)) / 2, rel=0.05)


def test_weighted_sums_scores_per_class() -> None:
    samples: list[Sample] = [("1", 1, 0.1), ("1", 1, 0.2), ("2", 1, 0.9)]
    assert subsample_accuracy(samples, "2", 3, 1, random.Random(0), "weighted")[0] == 1.0
    assert subsample_accuracy(samples, "2", 3, 1, random.Random(0), "majority")[0] == 0.0
    # best-of-N: the single best-scored sample wins, however few votes its class has
    samples = [("1", 1, 0.5), ("1", 1, 0.5), ("2", 1, 0.6)]
    assert subsample_accuracy(samples, "2", 3, 1, random.Random(0), "best")[0] == 1.0
    assert subsample_accuracy(samples, "1", 3, 1, random.Random(0), "weighted")[0] == 1.0
    # pass: right when any sample is
    assert subsample_accuracy(samples, "2", 2, 1, random.Random(0), "pass")[0] == pytest.approx(
        2 / 3)
    with pytest.raises(ConfigError, match="choose one of"):
        subsample_accuracy(samples, "2", 3, 1, random.Random(0), "median")


def test_no_answers_is_incorrect_and_bad_k_refused() -> None:
    samples: list[Sample] = [(None, 4, None), (None, 6, None)]
    assert subsample_accuracy(samples, "1", 2, 3, random.Random(0)) == (0.0, 10.0)
    with pytest.raises(ConfigError, match="between 1 and the 2 samples"):
        subsample_accuracy(samples, "1", 3, 3, random.Random(0))


def _questions(count: int, seed: int) -> list[QuestionSamples]:
    r = random.Random(seed)
    out = []
    for q in range(count):
        p = r.random()
        samples = tuple((str(q) if r.random() < p else str(q + 1000), r.randint(10, 20), None)
                        for _ in range(8))
        out.append(QuestionSamples(str(q), str(q), samples))
    return out


def test_ci_shrinks_with_more_questions() -> None:
    widths = []
    for count in (10, 40, 160):
        point = curve(_questions(count, 3), [4], resamples=50)[0]
        assert point.ci_low <= point.accuracy <= point.ci_high
        widths.append(point.ci_high - point.ci_low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[2] == pytest.approx(2, rel=0.35)  # ~ 1/sqrt(questions)


def test_curve_is_reproducible_and_binned() -> None:
    qs = _questions(30, 5)
    a = curve(qs, [1, 2, 8], resamples=30, seed=7)
    assert a == curve(qs, [1, 2, 8], resamples=30, seed=7)
    assert [p.n for p in a] == [1, 2, 8]
    for p in a:
        assert sum(count for _, count, _ in p.bins) == 30
        total = sum(count * acc for _, count, acc in p.bins if acc is not None)
        assert total / 30 == pytest.approx(p.accuracy)
    # n=1 accuracy equals the mean pass rate exactly in expectation
    rates = [prepare(q.samples, q.gold).pass_rate for q in qs]
    assert a[0].accuracy == pytest.approx(sum(rates) / len(rates), abs=0.05)
    assert not math.isnan(a[-1].ci_high)


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in rows))
    return path


def test_import_boinf_reads_samples(tmp_path: Path) -> None:
    f = _write(tmp_path / "m.jsonl", [
        {"problem_num": 3, "gold_answer": " 42", "all_answers": [["42", 100], ["", 5],
                                                                  [None, 7], [17, 9]]}, ""])
    (q,) = import_boinf(f)
    assert (q.id, q.gold) == ("3", "42")
    assert q.samples == (("42", 100), (None, 5), (None, 7), ("17", 9))


@pytest.mark.parametrize(("line", "match"), [
    ({"problem_num": 0, "all_answers": []}, "line 2 has no 'gold_answer' field"),
    ({"gold_answer": "1", "all_answers": []}, "line 2 has no 'problem_num' field"),
    ({"problem_num": 1, "gold_answer": "1"}, "line 2 has no 'all_answers' field"),
    ("{not json", "line 2 is not JSON"),
    ({"problem_num": 1, "gold_answer": "1", "all_answers": [["1"]]}, "line 2: all_answers"),
    ({"problem_num": 1, "gold_answer": "1", "all_answers": [["1", -3]]}, "completion_tokens"),
    ({"problem_num": 0, "gold_answer": "1", "all_answers": []}, "repeats problem_num 0"),
])
def test_import_boinf_bad_line(tmp_path: Path, line: object, match: str) -> None:
    good = {"problem_num": 0, "gold_answer": "1", "all_answers": [["1", 3]]}
    f = _write(tmp_path / "m.jsonl", [good, line])
    with pytest.raises(ConfigError, match=match):
        import_boinf(f)


def test_import_boinf_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        import_boinf(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match="no problems"):
        import_boinf(_write(tmp_path / "e.jsonl", [""]))
