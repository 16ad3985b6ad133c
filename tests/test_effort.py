"""Effort modes: low / medium / high as SPRM best-of-k, or majority at k without a head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.planner.effort import EFFORT_SAMPLES, plan_effort
from ttscale.solve import solve

SHA = "ab" * 32


def _head_dir(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from ttscale.verifiers.sprm.head import HeadMeta, SPRMHead

    SPRMHead.new(HeadMeta(SHA, "tiny", 2, 4, 6, 5)).save(tmp_path / "tiny")
    return tmp_path


@pytest.mark.parametrize(("effort", "k"), [("low", 2), ("medium", 8), ("high", 32)])
def test_a_model_with_a_head_gets_sprm_best_of_k(tmp_path: Path, effort: str, k: int) -> None:
    plan = plan_effort(effort, model="tiny", sha256=SHA, heads_dir=_head_dir(tmp_path))
    assert (plan.strategy, plan.n) == ("best_of_n", k)
    assert plan.verifier == f"sprm:{tmp_path / 'tiny.sprm.safetensors'}"
    assert plan.note is None


@pytest.mark.parametrize(("effort", "k"), sorted(EFFORT_SAMPLES.items()))
def test_a_model_without_a_head_falls_back_to_majority_at_k(tmp_path: Path, effort: str,
                                                            k: int) -> None:
    plan = plan_effort(effort, model="other", sha256="cd" * 32, heads_dir=_head_dir(tmp_path))
    assert (plan.strategy, plan.n, plan.verifier) == ("majority", k, None)
    assert plan.note == (f"no SPRM head ships for other, so effort {effort} is majority "
                         f"voting over {k} samples")


def test_solve_with_effort_on_a_fake_backend_votes_k_samples_and_says_why() -> None:
    fb = FakeBackend(responses=["\\boxed{4}", "\\boxed{5}", "\\boxed{4}"])
    r = solve("What is 2+2?", backend=fb, effort="medium")
    assert r.strategy == "majority"
    assert len(r.traces) == 8 and fb.calls[-1][1].n == 8
    assert r.answer == "4"
    assert r.notes[0] == "no SPRM head ships for fake, so effort medium is majority voting " \
                         "over 8 samples"


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


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "ttscale", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_cli_effort_on_a_model_without_a_head() -> None:
    proc = _cli("solve", "What is 6*7?", "--backend", "fake", "--effort", "low", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["strategy"] == "majority" and len(data["traces"]) == 2
    assert data["notes"] == ["no SPRM head ships for fake, so effort low is majority voting "
                             "over 2 samples"]


def test_cli_effort_with_strategy_is_one_sentence_and_exit_2() -> None:
    proc = _cli("solve", "What is 6*7?", "--backend", "fake", "--effort", "low", "-n", "4")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == ("error: --effort picks the strategy, samples and verifier "
                                   "itself: drop --strategy, -n and --verifier, or drop "
                                   "--effort")
