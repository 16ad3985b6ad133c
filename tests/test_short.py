"""Races (short-m@k): ``n`` samples start together, the first ``m`` to finish vote and the
rest are stopped. The live race, its replay in the planner and a plan that runs one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.planner.calibration import CalQuestion, Costs, race_grid, race_ok_cost
from ttscale.planner.crossfit import cross_fit, fit_plan
from ttscale.planner.explain import explain
from ttscale.planner.plan import example_plan, load_plan
from ttscale.solve import solve
from ttscale.strategies.short import first_finished

# sample i answers RESPONSES[i]: two short answers of 4, two long ones of 5 (majority: 5)
RESPONSES = ["we think hard about it and carefully weigh every step: \\boxed{5}",
             "so \\boxed{4}",
             "after a long and winding chain of thought it is \\boxed{5}",
             "thus \\boxed{4}",
             "one more long and careful chain of reasoning gives \\boxed{5}"]


def test_the_first_m_to_finish_vote_and_the_rest_are_stopped_and_charged_what_they_ran(
) -> None:
    r = solve("2+2?", backend=FakeBackend(responses=RESPONSES), strategy="short:m=2", n=5)
    assert r.answer == "4"  # majority over all five would say 5
    assert [t.finish_reason for t in r.traces] == ["aborted", "stop", "aborted", "stop",
                                                   "aborted"]
    shortest = max(r.traces[i].completion_tokens for i in (1, 3))
    # each stopped sample ran one token past the moment the second finished
    assert {r.traces[i].completion_tokens for i in (0, 2, 4)} == {shortest + 1}
    assert r.usage.completion_tokens == sum(t.completion_tokens for t in r.traces)
    whole = solve("2+2?", backend=FakeBackend(responses=RESPONSES), strategy="majority", n=5)
    assert whole.answer == "5" and whole.usage.completion_tokens > 2 * r.usage.completion_tokens


def test_a_backend_that_cannot_stream_votes_the_same_and_says_every_token_was_charged(
) -> None:
    class Whole(FakeBackend):
        generate_watched = None  # type: ignore[assignment]

    r = solve("2+2?", backend=Whole(responses=RESPONSES), strategy="short:m=2", n=5)
    whole = solve("2+2?", backend=FakeBackend(responses=RESPONSES), strategy="majority", n=5)
    assert r.answer == "4"
    assert r.usage.completion_tokens == whole.usage.completion_tokens
    assert any("cannot stream" in n and "every generated token" in n for n in r.notes)


def test_the_planners_replay_of_a_race_matches_the_live_one_token_for_token() -> None:
    fb = FakeBackend(responses=RESPONSES)
    live = solve("2+2?", backend=fb, strategy="short:m=2", n=5)
    full = solve("2+2?", backend=FakeBackend(responses=RESPONSES), strategy="majority",
                 n=5).traces
    prompt = live.usage.prompt_tokens // 5
    q = CalQuestion("q", tuple(0 if t.answer == "4" else 1 for t in full), (True, False),
                    tuple(prompt + t.completion_tokens for t in full),
                    tuple(t.completion_tokens for t in full), (False,) * 5, prompt)
    ok, cost = race_ok_cost(q, range(5), 2)
    assert ok and cost == live.usage.total_tokens
    assert race_ok_cost(q, range(5), 5) == (False, sum(q.tokens))  # everyone: majority


def test_a_race_refuses_more_voters_than_samples() -> None:
    with pytest.raises(ConfigError, match="short's m .* must be between 1 and 4, got 5"):
        solve("2+2?", backend=FakeBackend(), strategy="short:m=5", n=4)
    assert first_finished([], 3) == []


def _short_right(count: int = 8) -> list[CalQuestion]:
    """Eight samples: four short right ones, four long wrong ones."""
    classes = (1, 0) * 4
    lengths = tuple(100 if c == 0 else 1000 for c in classes)
    return [CalQuestion(f"q{i}", classes, (True, False), lengths, lengths, (False,) * 8)
            for i in range(count)]


def test_the_fit_chooses_a_race_where_the_first_to_finish_are_right(tmp_path: Path) -> None:
    qs = _short_right()
    assert race_grid((1, 2, 3, 4, 8)) == ((2, 1), (3, 2), (4, 2), (8, 4))
    # at 1,000 tokens a question, about two whole samples: right when a short one is drawn
    plain = cross_fit(qs, Costs(), [1000.0], unit="tokens", folds=2, orders=32, bins=1)[0]
    held = cross_fit(qs, Costs(), [1000.0], unit="tokens", folds=2, orders=32, bins=1,
                     races=True)[0]
    # eight started, the four short ones finish first and the long ones stop at 101 tokens
    assert sum(held.accuracy) / 8 == 1.0 and sum(plain.accuracy) / 8 < 0.85
    assert held.mean("tokens") == 4 * 100 + 4 * 101
    plan = fit_plan(qs, Costs(), model="fake", model_sha256=None, verifier=None,
                    unit="tokens", folds=2, orders=32, bins=1, races=True)
    point = plan.select(1000.0, "tokens")
    assert point.race == (8, 4) and point.rule == "first 4 of 8 to finish"
    assert point.accuracy == 1.0 and point.samples == 8 and plan.calibration["races"]
    path = plan.save(tmp_path / "race.plan.json")
    assert load_plan(path).select(1000.0, "tokens").race == (8, 4)
    no_races = fit_plan(qs, Costs(), model="fake", model_sha256=None, verifier=None,
                        unit="tokens", folds=2, orders=32, bins=1)
    assert not any(p.race for p in no_races.points)
    # a plan is written in the oldest format that holds it: one without races stays
    # readable by a ttscale that knows none
    written = no_races.save(tmp_path / "plain.plan.json")
    assert json.loads(path.read_text())["version"] == 3
    assert json.loads(written.read_text())["version"] == 2
    assert load_plan(written).points == no_races.points


def _race_plan(tmp_path: Path, race: list[int]) -> Path:
    plan = replace(example_plan(), model_sha256=None)
    path = replace(plan, points=(replace(plan.points[0], race=tuple(race),
                                         rule=f"first {race[-1]} of {race[0]} to finish"),)
                   ).save(tmp_path / "race.plan.json")
    return path


def test_auto_runs_the_race_its_plan_chose_and_says_so(tmp_path: Path) -> None:
    path = _race_plan(tmp_path, [5, 2])
    r = solve("2+2?", backend=FakeBackend(responses=RESPONSES),
              strategy=f"auto:budget=400,plan={path}")
    assert r.answer == "4" and len(r.traces) == 5
    assert r.notes[-1] == ("auto: race 5, first 2 to finish vote; 3 of 5 samples stopped "
                           "early")
    plan = load_plan(path)
    assert plan.points[0].race == (5, 2)
    assert "a race, 5 samples started together, the first 2 to finish vote" in explain(plan)
    capped = solve("2+2?", backend=FakeBackend(responses=RESPONSES),
                   strategy=f"auto:budget=400,plan={path},n_max=3")
    assert len(capped.traces) == 3


def test_a_plan_with_a_malformed_race_is_refused(tmp_path: Path) -> None:
    path = _race_plan(tmp_path, [5, 2])
    data = json.loads(path.read_text())
    data["points"][0]["race"] = [3, 4]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"has a race \[3, 4\] that is not \[k, m\]"):
        load_plan(path)


@pytest.mark.slow
def test_a_real_race_on_the_small_model_stops_the_rest_once_one_finished(
        small_backend: object) -> None:
    r = solve("Name one colour, in one word.", backend=small_backend,  # type: ignore[arg-type]
              strategy="short:m=1",
              n=4, temperature=1.0, max_tokens=96, seed=3)
    ended = [t for t in r.traces if t.finish_reason != "aborted"]
    stopped = [t for t in r.traces if t.finish_reason == "aborted"]
    assert len(r.traces) == 4 and ended
    assert r.usage.completion_tokens == sum(t.completion_tokens for t in r.traces)
    voter = r.traces[first_finished(r.traces, 1)[0]]
    assert r.answer == voter.answer or (voter.answer is None and r.answer is None)
    # a stopped sample was still running when the first one ended: never longer than it by
    # more than the few tokens llama.cpp decodes before it sees the stop
    assert all(t.completion_tokens <= voter.completion_tokens + 8 for t in stopped)
    assert np.mean([t.completion_tokens for t in r.traces]) < 96


def test_a_rerun_through_an_eval_store_answers_the_same_race(tmp_path: Path) -> None:
    from ttscale.evaluation.runs.cache import CachedBackend
    from ttscale.evaluation.runs.store import Store

    store = Store.open(tmp_path, {})
    first = solve("2+2?", backend=CachedBackend(FakeBackend(responses=RESPONSES), store, "s"),
                  strategy="short:m=2", n=5)
    again = CachedBackend(FakeBackend(responses=RESPONSES), store, "s")
    second = solve("2+2?", backend=again, strategy="short:m=2", n=5)
    store.close()
    # only the two that ended were stored; they end first again, the other three stop at
    # their first token
    assert first.answer == second.answer == "4"
    assert [t.finish_reason for t in second.traces] == [t.finish_reason for t in first.traces]
    assert [t.completion_tokens for i, t in enumerate(second.traces) if i in (0, 2, 4)] == \
        [1, 1, 1]
    assert again.cached_usage.completion_tokens == sum(first.traces[i].completion_tokens
                                                       for i in (1, 3))


def test_plan_fit_weighs_races_only_when_asked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ttscale.cli.main import app
    from ttscale.evaluation.api import evaluate

    evaluate("svamp", tmp_path / "run", ids="0-5", ns=[4], backend="fake",
             report_files=False)
    runner = CliRunner()
    for flag, races in (([], False), (["--races"], True)):
        out = tmp_path / f"plan-{races}.json"
        done = runner.invoke(app, ["plan", "fit", str(tmp_path / "run"), "--currency",
                                   "tokens", "--folds", "2", "--orders", "4", "--out",
                                   str(out), *flag])
        assert done.exit_code == 0, done.output
        assert json.loads(out.read_text())["calibration"]["races"] is races


def test_eval_replay_draws_races_as_the_planner_replays_them(tmp_path: Path) -> None:
    import random

    from ttscale.evaluation.api import evaluate, replay
    from ttscale.evaluation.replay.metrics import prepare, race

    samples = [("4", 300, None), ("5", 120, None), ("4", 90, None), ("5", 400, None),
               ("6", 150, None), ("4", 200, None)]
    p = prepare(samples, "4")
    q = CalQuestion("q", p.classes, p.correct, p.tokens, p.tokens, (False,) * 6)
    rng = random.Random(1)
    for _ in range(50):  # the curve's race and the plan's race are the same race
        drawn = rng.sample(range(6), rng.randint(1, 6))
        assert race(p, drawn) == race_ok_cost(q, drawn, (len(drawn) + 1) // 2)
    evaluate("svamp", tmp_path / "run", ids="0-5", ns=[4], backend="fake",
             report_files=False)
    points = {(x.strategy, x.n): x for x in replay(tmp_path / "run", "majority,short",
                                                   [2, 4], resamples=8, report_files=False)}
    assert {("short", 2), ("short", 4)} <= set(points)
    assert points["short", 4].mean_tokens <= points["majority", 4].mean_tokens
