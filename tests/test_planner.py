"""The planner: signals, plan files and their refusals, the policy's accounting, cross-fitting,
and ``auto`` through solve and replay."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ttscale.answers import solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.progress import Progress
from ttscale.planner.calibration import CalQuestion, Costs, trajectories
from ttscale.planner.crossfit import cross_fit, fit_plan
from ttscale.planner.plan import check_model, example_plan, load_plan, plan_from_dict
from ttscale.planner.signals import U_SIGNALS, Probe, u_features, v_features
from ttscale.solve import solve


def _questions(count: int = 12, n: int = 8, seed: int = 0) -> list[CalQuestion]:
    """Easy questions (all agree, right) and scattered ones (a right minority)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        if i % 2 == 0:
            classes = (0,) * n
            correct: tuple[bool, ...] = (True,)
        else:
            classes = tuple(int(c) for c in rng.integers(0, 3, n))
            correct = (True, False, False)
        out.append(CalQuestion(f"q{i}", classes, correct, (100,) * n, (80,) * n,
                               (False,) * n, 20, tuple(float(c == 0) for c in classes),
                               (100,) * n))
    return out


def test_signals_of_a_probe() -> None:
    p = Probe((0, 0, 1), (100, 200, 300), (False, False, True), 50, scores=(0.9, 0.8, 0.1))
    u = dict(zip(U_SIGNALS, u_features(p), strict=True))
    assert u["leader_share"] == pytest.approx(2 / 3) and u["cut_share"] == pytest.approx(1 / 3)
    assert u["distinct"] == pytest.approx(2 / 3) and u["no_answer"] == 0.0
    v = v_features(p)[len(U_SIGNALS):]
    assert v[1] == 0.9 and v[-1] == 1.0  # the max score; the weighted winner is the majority


def test_plan_json_round_trip(tmp_path: Path) -> None:
    plan = example_plan()
    path = plan.save(tmp_path / "p.plan.json")
    back = load_plan(path)
    # written in the oldest format that holds it (no races: 2), everything else unchanged
    assert back.version == plan.format_version() == 2
    assert back == replace(plan, signals=back.signals, calibration=back.calibration,
                           version=2)
    assert back.select(400, "tokens").lam == 0.01


@pytest.mark.parametrize(("data", "message"), [
    ([1, 2], "is not a ttscale plan"),
    ({"format": "ttscale-plan", "version": 4}, "newer than this ttscale reads"),
    ({"format": "ttscale-plan", "version": 1}, "is not a valid ttscale plan"),
])
def test_a_file_that_is_not_a_plan_is_refused(tmp_path: Path, data: object,
                                              message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        load_plan(path)
    assert path.read_text() == json.dumps(data)  # nothing stored is lost


def test_a_plan_for_another_model_names_both_hashes() -> None:
    with pytest.raises(ConfigError, match=r"aaaaaaaaaaaa\.\.\.\), not for m \(SHA-256 "
                                          r"bbbbbbbbbbbb"):
        check_model(example_plan(), "b" * 64, "m")


def test_a_budget_below_the_probe_is_refused() -> None:
    with pytest.raises(ConfigError, match="below the probe's cost"):
        example_plan().select(10, "tokens")


def test_an_unknown_action_is_refused() -> None:
    data = json.loads(example_plan().to_json())
    data["points"][0]["u"][0][0] = "dance"
    with pytest.raises(ConfigError, match="unknown actions"):
        plan_from_dict(data)


def test_cross_fitting_never_reads_a_questions_own_label() -> None:
    qs = _questions()
    base = cross_fit(qs, Costs(), [300.0], unit="tokens", folds=4, orders=8)[0]
    flipped = list(qs)
    flipped[3] = replace(qs[3], correct=tuple(not c for c in qs[3].correct))
    again = cross_fit(flipped, Costs(), [300.0], unit="tokens", folds=4, orders=8)[0]
    # question 3's own plan is the same (fitted without it), so its tokens are too; only its
    # grade changed
    assert again.costs["tokens"][3] == base.costs["tokens"][3]
    assert again.accuracy[3] == pytest.approx(1.0 - base.accuracy[3])


def test_cross_fitted_auto_stays_within_its_budget_and_stops_easy_questions_early() -> None:
    qs = _questions(count=20)
    held = cross_fit(qs, Costs(), [200.0, 400.0, 800.0], unit="tokens", folds=5, orders=8)
    for h in held:
        assert h.mean("tokens") <= h.budget * 1.1  # a mean budget, met on held-out questions
    top = held[-1]
    easy = np.mean([top.costs["tokens"][i] for i in range(0, 20, 2)])
    hard = np.mean([top.costs["tokens"][i] for i in range(1, 20, 2)])
    assert easy < hard


def test_fit_plan_writes_a_plan_that_loads(tmp_path: Path) -> None:
    plan = fit_plan(_questions(), Costs(), model="m", model_sha256="c" * 64, verifier="v",
                    unit="tokens", folds=3, orders=4)
    back = load_plan(plan.save(tmp_path / "m.plan.json"))
    assert back.verifier == "v" and back.stages == (1, 2, 3, 4, 5, 6, 7, 8)
    assert back.calibration["frontier"] and back.signals["U@2"]["leader_share"] > 0.5
    assert all(a in ("majority", "weighted", "verify", "sample")
               for p in back.points for row in p.v for a in row)


def test_trajectories_count_every_drawn_sample() -> None:
    tr = trajectories(_questions(count=2, n=4), (1, 2, 4), orders=3)
    assert tr.ptok[:, :, 2].tolist() == [[400.0] * 3] * 2
    assert tr.vtok[:, :, 0].tolist() == [[100.0] * 3] * 2


def _fake_plan(tmp_path: Path) -> Path:
    plan = replace(example_plan(), model_sha256=None)
    return plan.save(tmp_path / "fake.plan.json")


def test_auto_with_a_plan_samples_what_the_policy_says_and_counts_it(tmp_path: Path) -> None:
    fb = FakeBackend(responses=["so \\boxed{4}", "so \\boxed{5}"])
    path = _fake_plan(tmp_path)
    r = solve("2+2?", backend=fb, strategy=f"auto:budget=400,plan={path}")
    assert len(r.traces) == 2 and r.strategy == "auto"  # probe, then one more (policy)
    assert r.usage.calls == len(fb.calls) == 2
    prompt = fb.count_tokens(solve_prompt("2+2?"))
    assert r.usage.total_tokens == sum(prompt + t.completion_tokens for t in r.traces)
    cheap = solve("2+2?", backend=FakeBackend(), strategy=f"auto:budget=250,plan={path}")
    assert len(cheap.traces) == 1  # the cheap operating point answers after the probe


def test_auto_never_exceeds_a_hard_budget(tmp_path: Path) -> None:
    path = _fake_plan(tmp_path)
    fb = FakeBackend(responses=["so \\boxed{4}"])
    r = solve("2+2?", backend=fb, strategy=f"auto:budget=400,plan={path}", budget=1050,
              max_tokens=1000)
    assert r.usage.total_tokens <= 1050 and len(r.traces) == 1 and r.budget_limited


def test_auto_refuses_a_verifier_the_plan_was_not_fitted_for(tmp_path: Path) -> None:
    fb = FakeBackend(yes_logprob=-0.1)
    with pytest.raises(ConfigError, match="fitted with no verifier, not the self_judge"):
        solve("2+2?", backend=fb, strategy=f"auto:plan={_fake_plan(tmp_path)}",
              verifier="self_judge")
    assert fb.calls == []


def test_auto_refuses_a_plan_of_another_model(tmp_path: Path) -> None:
    path = example_plan().save(tmp_path / "other.plan.json")  # fitted for SHA aaaa...
    fb = FakeBackend()
    fb.sha256 = "b" * 64  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="SHA-256 aaaaaaaaaaaa"):
        solve("2+2?", backend=fb, strategy=f"auto:plan={path}")


def test_replay_of_auto_on_a_small_generated_run(tmp_path: Path) -> None:
    from ttscale.evaluation.api import evaluate, replay

    evaluate("svamp", tmp_path / "run", ids="0-5", ns=[4], backend="fake",
             report_files=False)
    points = replay(tmp_path / "run", "majority,auto", [1, 4], resamples=8,
                    report_files=False)
    auto = [p for p in points if p.strategy == "auto"]
    maj = {p.n: p for p in points if p.strategy == "majority"}
    assert [p.n for p in auto] == [1, 4]
    for p in auto:
        assert p.mean_tokens <= maj[p.n].mean_tokens * 1.05
    from ttscale.evaluation.replay.auto import fit_from_runs

    with pytest.raises(ConfigError, match="run is given twice: a plan merges the samples"):
        fit_from_runs([str(tmp_path / "run"), str(tmp_path / "run")], unit="tokens")
    seen: list[Progress] = []  # a fit takes minutes on real runs: it reports each fit it makes
    fit_from_runs([str(tmp_path / "run")], unit="tokens", folds=2, orders=4,
                  progress=seen.append)
    counted = [e for e in seen if e.unit == "fits"]
    assert seen[0].message == "fitting on 6 questions, then cross-fitting over 2 folds..."
    assert [(e.done, e.total) for e in counted] == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.slow
def test_auto_on_the_real_small_model() -> None:
    from ttscale.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend("smollm2-135m", parallel=4)
    try:
        r = solve("What is 3+4?", backend=backend, strategy="auto:budget=600",
                  max_tokens=64)
    finally:
        backend.close()
    assert r.strategy == "auto" and r.traces
    assert r.notes[0].startswith("no plan ships for smollm2-135m")
    assert r.usage.total_tokens == sum(t.completion_tokens for t in r.traces) + \
        r.usage.prompt_tokens


def test_effort_levels_are_chosen_per_fold_and_rise_with_effort() -> None:
    qs = _questions(count=20)
    low, medium, high = cross_fit(qs, Costs(), ["low", "medium", "high"], unit="tokens",
                                  folds=4, orders=8)
    assert low.mean("tokens") <= medium.mean("tokens") <= high.mean("tokens")
    assert low.budget <= medium.budget <= high.budget  # the budgets the folds resolved to
    with pytest.raises(ConfigError, match="unknown effort 'max'"):
        cross_fit(qs, Costs(), ["max"], unit="tokens", folds=4, orders=8)


def test_a_fitted_plan_keeps_agreement_rules_and_held_out_figures(tmp_path: Path) -> None:
    plan = fit_plan(_questions(count=16), Costs(), model="m", model_sha256=None,
                    verifier=None, unit="tokens", folds=4, orders=8)
    path = plan.save(tmp_path / "m.plan.json")
    back = load_plan(path)
    assert back.points == plan.points  # the rule and the cost's error survive the file
    costs = [p.upper("tokens") for p in back.points]
    accs = [p.accuracy for p in back.points]
    assert costs == sorted(costs) and accs == sorted(accs)  # a frontier: none dominated
    assert all(p.cost_rse >= 0 for p in back.points)
    # every effort level's budget selects a point that costs what it says, one error up
    for effort in ("low", "medium", "high"):
        assert back.select(back.effort_budget(effort), "tokens").upper("tokens") <= \
            back.effort_budget(effort) + 1e-9
    text = path.read_text()
    assert '["majority"' in text or '["sample"' in text  # a table row on one line
