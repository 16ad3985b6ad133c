"""The brevity-weighted vote in the planner: fitted only where calibration shows it pays,
replayed by the fit exactly as ``auto`` answers live."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.planner.calibration import CalQuestion, Costs, trajectories
from ttscale.planner.candidates import agreement_policies, candidates
from ttscale.planner.explain import explain
from ttscale.planner.fit import BRE, MAJ, SAM, allocate, fit_predictors, play
from ttscale.planner.plan import example_plan, load_plan
from ttscale.solve import solve


def _split(right_short: bool, count: int = 8) -> list[CalQuestion]:
    """Questions whose samples split two against two: the right class is the short one
    (``right_short``) or the long one."""
    short = 1 if right_short else 0
    lengths = tuple(100 if c == short else 300 for c in (0, 0, 1, 1))
    return [CalQuestion(f"q{i}", (0, 0, 1, 1), (False, True), (400,) * 4, lengths,
                        (False,) * 4) for i in range(count)]


@pytest.mark.parametrize(("right_short", "answer"), [(True, BRE), (False, MAJ)])
def test_the_fit_answers_by_brevity_only_where_it_is_right_more_often(
        right_short: bool, answer: int) -> None:
    tr = trajectories(_split(right_short), (1, 2, 4), orders=8)
    every = np.ones(8, dtype=bool)
    fitted = fit_predictors(tr, every, bins=1)
    pol = allocate(tr, fitted, every, tr.ptok / 400, tr.vtok / 400, 0.0)
    # with samples free it draws all four where that helps, and answers by the rule that
    # is right more often (more samples do not help a tie broken by the first drawn)
    assert bool((pol.tu[:2] == SAM).all()) is right_short
    assert set(pol.au[2].tolist()) == {answer}
    out = play(tr, fitted, pol, np.arange(8), Costs())
    # a two-two tie: majority takes the first drawn (right half the time), brevity the
    # short class, always (right or always wrong: then the fit keeps majority)
    assert out.accuracy == (1.0 if right_short else pytest.approx(tr.maj[:, :, 2].mean()))
    assert bool(tr.bok[:, :, 2].all()) is right_short


def test_agreement_rules_come_in_a_brevity_form_that_majority_anchors_ignore() -> None:
    rules = agreement_policies((1, 2, 4), 5, answer="brevity")
    assert [label for _p, label in rules][:2] == ["brevity vote@1",
                                                  "bayes factor > 3, at most 2 samples, "
                                                  "brevity vote"]
    assert all(not label.startswith("majority@") for _p, label in rules)
    assert {int(a) for p, _l in rules for a in np.unique(p.tu)} <= {SAM, BRE}


@pytest.mark.parametrize("right_short", [True, False])
def test_each_rule_has_a_brevity_twin_scored_beside_it(right_short: bool) -> None:
    tr = trajectories(_split(right_short), (1, 2, 4), orders=8)
    every = np.ones(8, dtype=bool)
    found = candidates(tr, fit_predictors(tr, every, bins=1), every, Costs(), "tokens",
                       bins=1)
    acc = {c.rule: c.accuracy for c in found if c.rule and c.race is None}
    # drawing all four and answering by brevity is always right where the short class is,
    # never where the long one is; majority breaks the tie by the first drawn
    assert acc["brevity vote@4"] == (1.0 if right_short else 0.0)
    assert 0.0 < acc["majority@4"] < 1.0
    assert len([r for r in acc if "brevity vote" in r]) == len([r for r in acc if "brevity"
                                                                not in r])


def test_auto_answers_by_the_shorter_sample_when_its_plan_says_brevity(
        tmp_path: Path) -> None:
    plan = replace(example_plan(), model_sha256=None)
    go, brevity = plan.points[1].u, (("brevity",) * 5,) * 2
    plan = replace(plan, points=(plan.points[0], replace(plan.points[1], u=(go[0],
                                                                             brevity[1]),
                                                          answer_u=brevity)))
    path = plan.save(tmp_path / "brevity.plan.json")
    assert load_plan(path).points[1].answer_u == brevity
    assert "sample more (at most 2 samples; answers by the brevity vote)" in \
        explain(load_plan(path))
    wordy = "let me think about this at some length before I say it: \\boxed{4}"
    fb = FakeBackend(responses=[wordy, "so \\boxed{5}"])
    r = solve("2+2?", backend=fb, strategy=f"auto:budget=400,plan={path}")
    assert [t.answer for t in r.traces] == ["4", "5"]  # one vote each
    assert r.answer == "5" and r.notes[-1].endswith("2 samples, answered by brevity")
    by_votes = solve("2+2?", backend=FakeBackend(responses=[wordy, "so \\boxed{5}"]),
                     strategy=f"auto:budget=400,plan={_majority(tmp_path)}")
    assert by_votes.answer == "4"  # the same tie by majority: the first drawn


def _majority(tmp_path: Path) -> Path:
    return replace(example_plan(), model_sha256=None).save(tmp_path / "majority.plan.json")


def test_majority_can_vote_by_brevity_and_refuses_an_unknown_vote() -> None:
    wordy = "let me think about this at some length before I say it: \\boxed{4}"
    answers = {vote: solve("2+2?", backend=FakeBackend(responses=[wordy, "so \\boxed{5}"]),
                           strategy=f"majority:vote={vote}", n=2).answer
               for vote in ("count", "brevity")}
    assert answers == {"count": "4", "brevity": "5"}  # a one-one tie: first drawn, shorter
    with pytest.raises(ConfigError, match="vote must be one of count, brevity"):
        solve("2+2?", backend=FakeBackend(), strategy="majority:vote=short", n=2)
