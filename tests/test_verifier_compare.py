"""``ttscale eval verifiers``: every verifier of a run on the same stored samples, in a real
SQLite run store, through the library and the real command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import ttscale
from ttscale.answers import equivalent, solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig, Harness, run_settings
from ttscale.evaluation.replay.verifiers import compare_verifiers
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.records import sampling_of
from ttscale.evaluation.runs.store import ScoreRow, Store
from ttscale.stats import auroc
from ttscale.types import Usage

SRC = str(Path(ttscale.__file__).resolve().parents[1])
# gold i + 1; sample i answers i % 3 + 1: q0 right at 0 and 3, q1 at 1, q2 at 2, q3 never
PROBLEMS = [Problem(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(4)]
SHA = "f" * 64


def script(_prompt: object, i: int) -> str:
    return f"Step one.\n\nThe answer is \\boxed{{{i % 3 + 1}}}."


def scored_run(tmp: Path, skip: str | None = None) -> Path:
    """A run of 4 questions x 4 samples judged by the (constant) fake self-judge, plus an
    ``oracle`` verifier scoring right answers 0.9 and wrong ones 0.1 (none on ``skip``)."""
    cfg = EvalConfig(strategies=("majority", "weighted_best_of_n"), ns=(4,))
    settings = run_settings(cfg, model="fake", model_sha256=SHA, dataset="t", split="test")
    with Store.open(tmp, settings) as store:
        fake = FakeBackend(script=script, yes_logprob=-0.3)
        Harness(cfg, CachedBackend(fake, store, SHA), store).run(PROBLEMS)
        rows = []
        for p in PROBLEMS:
            if p.id == skip:
                continue
            stored = store.get_generations(SHA, solve_prompt(p.question, settings[
                "system_prompt"]), sampling_of(settings), 0, 2**62)
            for g in stored.values():
                s = 0.9 if g.answer is not None and equivalent(p.gold, g.answer) else 0.1
                rows.append(ScoreRow(g.id, "oracle", (s,), s, Usage(10, 0, 1)))
        store.put_scores(rows)
        store.bind("verifier:oracle", "the oracle head (SHA-256 0f)")
    return tmp


def test_every_verifier_on_the_same_questions(tmp_path: Path) -> None:
    res = compare_verifiers(scored_run(tmp_path), [1, 4], resamples=50)
    assert (res.questions, res.skipped) == (4, 0)
    by = {v.verifier: v for v in res.verifiers}
    assert sorted(by) == ["oracle", "self_judge"]
    assert by["oracle"].auroc == 1.0  # it ranks every right trace above every wrong one
    assert by["self_judge"].auroc == 0.5  # the fake judge gives every trace the same score
    assert (by["oracle"].traces, by["oracle"].correct) == (16, 4)
    majority4 = next(p for p in res.majority if p.n == 4)
    oracle = {(p.strategy, p.n): p for p in by["oracle"].points}
    # q0: 2 of 4 right (majority ties broken by order), q1 and q2 1 of 4: the oracle picks
    # the right one wherever it is drawn, majority cannot out-vote the wrong classes
    assert oracle[("best_of_n [oracle]", 4)].accuracy == 0.75
    assert majority4.accuracy < 0.75
    # the verifier's tokens are in its strategies' cost, not in majority's
    assert oracle[("best_of_n [oracle]", 4)].mean_tokens > majority4.mean_tokens
    assert len(res.points) == 2 + 2 * 2 * 2
    # what each name stood for when it scored, as the run recorded it
    assert by["oracle"].source == "the oracle head (SHA-256 0f)"
    assert by["self_judge"].source == "self_judge"
    # within a question: q0-q2 have right and wrong samples, q3 only wrong ones
    assert (by["oracle"].within_auroc, by["oracle"].within_questions) == (1.0, 3)
    assert by["self_judge"].within_auroc == 0.5


def test_differences_against_majority_are_paired_over_the_same_subsets(tmp_path: Path) -> None:
    res = compare_verifiers(scored_run(tmp_path), [1, 2, 4], resamples=50)
    by = {v.verifier: v for v in res.verifiers}
    oracle = {(d.strategy, d.n): d for d in by["oracle"].differences}
    assert sorted(oracle) == [(s, n) for s in ("best_of_n", "weighted_best_of_n")
                              for n in (1, 2, 4)]
    # one sample: every strategy takes it, so no difference and no interval
    assert (oracle[("best_of_n", 1)].mean, oracle[("best_of_n", 1)].low) == (0.0, 0.0)
    # at n = all 4 samples there is one subset: the difference is exactly that of the points
    majority4 = next(p for p in res.majority if p.n == 4).accuracy
    best4 = next(p for p in by["oracle"].points if p.n == 4 and p.strategy.startswith("best"))
    d = oracle[("best_of_n", 4)]
    assert d.mean == pytest.approx(best4.accuracy - majority4)
    assert d.low < d.mean < d.high  # per question +1 or 0: a real interval
    # the oracle can only win: right answers score 0.9, wrong ones 0.1
    assert all(x.mean >= 0 for x in oracle.values())
    # a constant judge's weights are votes: weighted best-of-n is majority on every subset
    judge = {(d.strategy, d.n): d for d in by["self_judge"].differences}
    assert all((x.mean, x.low, x.high) == (0.0, 0.0, 0.0)
               for (s, _n), x in judge.items() if s == "weighted_best_of_n")


def test_a_question_not_scored_by_every_verifier_is_left_out(tmp_path: Path) -> None:
    res = compare_verifiers(scored_run(tmp_path, skip="q1"), [4], resamples=10)
    assert (res.questions, res.skipped) == (3, 1)
    only = compare_verifiers(tmp_path, [4], verifiers=["self_judge"], resamples=10)
    assert (only.questions, [v.verifier for v in only.verifiers]) == (4, ["self_judge"])


def test_samples_beyond_those_judged_can_be_left_out(tmp_path: Path) -> None:
    run = scored_run(tmp_path)
    before = compare_verifiers(run, [1, 4], resamples=50)
    # 2 more samples a question, scored by no verifier (as when a run had more samples than
    # a later eval at a smaller n judged): every question is now incomplete
    cfg = EvalConfig(strategies=("majority",), ns=(6,))
    settings = run_settings(cfg, model="fake", model_sha256=SHA, dataset="t", split="test")
    with Store.open(run, settings) as store:
        Harness(cfg, CachedBackend(FakeBackend(script=script), store, SHA), store).run(PROBLEMS)
    with pytest.raises(ConfigError, match="no question .* has 4 samples scored"):
        compare_verifiers(run, [4])
    first4 = compare_verifiers(run, [1, 4], resamples=50, samples=4)
    assert (first4.questions, first4.skipped) == (4, 0)
    assert first4.points == before.points  # the same 4 samples, subsets and figures
    with pytest.raises(ConfigError, match="--samples 2 is fewer than the largest n"):
        compare_verifiers(run, [1, 4], samples=2)


def test_bad_input_is_one_sentence(tmp_path: Path) -> None:
    run = scored_run(tmp_path)
    with pytest.raises(ConfigError, match="no scores from prm: .*it has oracle, self_judge"):
        compare_verifiers(run, [4], verifiers=["prm"])
    with pytest.raises(ConfigError, match="no question .* has 8 samples .*smaller -n"):
        compare_verifiers(run, [8])
    with pytest.raises(ConfigError, match="positive sample counts"):
        compare_verifiers(run, [0])


def test_auroc_counts_ties_as_half() -> None:
    assert auroc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    assert auroc([0.3, 0.3], [0, 0]) is None


def _ttscale(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "ttscale", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_command_prints_json_and_draws_the_curves(tmp_path: Path) -> None:
    run = scored_run(tmp_path / "run")
    png = tmp_path / "verifiers.png"
    out = _ttscale("eval", "verifiers", run, "-n", "1,2,4", "--plot", png, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [v["verifier"] for v in data["verifiers"]] == ["oracle", "self_judge"]
    assert [p["n"] for p in data["majority"]] == [1, 2, 4]
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = _ttscale("eval", "verifiers", run, "-n", "4")
    assert table.returncode == 0 and "weighted" in table.stdout and "1.000" in table.stdout
    assert "vs majority" in table.stdout
    assert ("oracle: AUROC 1.000 over 16 traces, 1.000 within a question (3 questions), "
            "the oracle head (SHA-256 0f)") in " ".join(table.stdout.split())
    bad = _ttscale("eval", "verifiers", run, "-n", "4", "--verifier", "prm")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "no scores from prm" in bad.stderr
    few = _ttscale("eval", "verifiers", run, "-n", "4", "--samples", "2")
    assert few.returncode == 2 and "--samples 2 is fewer than the largest n" in few.stderr
    first = _ttscale("eval", "verifiers", run, "-n", "4", "--samples", "4", "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["questions"] == 4


def test_a_verifier_name_with_options_is_one_name_on_the_command_line(tmp_path: Path) -> None:
    """Scores stored by ``--verifier sprm,layer=4`` are named with the option in it."""
    run = scored_run(tmp_path / "run")
    with sqlite3.connect(run / "run.sqlite") as db:
        db.execute("INSERT INTO scores SELECT generation_id, 'oracle,k=2', step_scores, 0.5, "
                   "created, usage FROM scores WHERE verifier='oracle'")
    out = _ttscale("eval", "verifiers", run, "-n", "4", "--verifier", "self_judge,oracle,k=2",
                   "--json")
    assert out.returncode == 0, out.stderr
    assert [v["verifier"] for v in json.loads(out.stdout)["verifiers"]] == [
        "self_judge", "oracle,k=2"]
    first = _ttscale("eval", "verifiers", run, "-n", "4", "--verifier", "k=2,oracle")
    assert first.returncode == 2 and "verifier option 'k=2' comes before any verifier" in (
        " ".join(first.stderr.split()))
