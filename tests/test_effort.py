"""Effort modes: low / medium / high as three budgets of the model's plan (the ``auto``
strategy), or adaptive majority over at most 2 / 8 / 32 samples without a plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.planner.effort import EFFORT_SAMPLES, describe_efforts, effort_strategy
from ttscale.solve import solve


@pytest.mark.parametrize(("effort", "k"), sorted(EFFORT_SAMPLES.items()))
def test_without_a_plan_effort_is_adaptive_majority_and_says_so(effort: str, k: int) -> None:
    # every sample disagrees, so the adaptive rule never settles: it uses all k
    fb = FakeBackend(script=lambda _p, i: f"\\boxed{{{i}}}")
    r = solve("What is 2+2?", backend=fb, effort=effort)
    assert r.strategy == "auto"
    assert len(r.traces) == k
    assert r.notes[0] == (f"no plan ships for fake, so effort {effort} is adaptive majority "
                          f"(budgeted) over at most {k} samples")


def test_an_easy_question_stops_early_at_high_effort() -> None:
    r = solve("What is 2+2?", backend=FakeBackend(responses=["\\boxed{4}"]), effort="high")
    assert r.answer == "4" and len(r.traces) < EFFORT_SAMPLES["high"]


@pytest.mark.parametrize("extra", [{"strategy": "majority"}, {"n": 4},
                                   {"verifier": "self_judge"}])
def test_effort_with_an_explicit_strategy_or_n_is_refused(extra: dict[str, object]) -> None:
    fb = FakeBackend()
    with pytest.raises(ConfigError, match="an effort level picks the strategy"):
        solve("2+2?", backend=fb, effort="low", **extra)  # type: ignore[arg-type]
    assert fb.calls == []  # refused before anything was sampled


def test_unknown_effort_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown effort 'extreme': choose one of low, medium"):
        solve("2+2?", backend=FakeBackend(), effort="extreme")


def test_effort_strategy_and_description() -> None:
    assert effort_strategy("medium", 16) == "auto:effort=medium,n_max=16"
    assert "no plan ships for fake" in describe_efforts(None, "fake")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "ttscale", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_cli_effort_on_a_model_without_a_plan() -> None:
    proc = _cli("solve", "What is 6*7?", "--backend", "fake", "--effort", "low", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["strategy"] == "auto" and len(data["traces"]) == 2
    assert data["notes"] == ["no plan ships for fake, so effort low is adaptive majority "
                             "(budgeted) over at most 2 samples"]


def test_cli_effort_with_strategy_is_one_sentence_and_exit_2() -> None:
    proc = _cli("solve", "What is 6*7?", "--backend", "fake", "--effort", "low", "-n", "4")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == ("error: --effort picks the strategy, samples and verifier "
                                   "itself: drop --strategy, -n and --verifier, or drop "
                                   "--effort")
