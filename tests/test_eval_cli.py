"""``ttscale eval import-samples`` and ``ttscale eval replay`` as a user runs them: a
subprocess of ``python -m ttscale`` importing this checkout's package."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import ttscale
from ttscale.answers import equivalent
from ttscale.strategies.base import classes_of, pick
from ttscale.types import Trace

SRC = str(Path(ttscale.__file__).resolve().parents[1])


def _ttscale(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "ttscale", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def _rows(count: int = 6, samples: int = 8) -> list[dict[str, object]]:
    r = random.Random(11)
    rows = []
    for q in range(count):
        gold = str(q + 1)
        p = q / count
        answers = [[gold if r.random() < p else r.choice(["100", "200"]), r.randint(50, 90)]
                   for _ in range(samples)]
        answers[0][0] = ["0.5", "1/2"][q % 2] if q == 0 else answers[0][0]
        rows.append({"problem_num": q, "gold_answer": "1/2" if q == 0 else gold,
                     "all_answers": answers})
    return rows


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    f = tmp_path / "model-a.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    out = tmp_path / "run"
    done = _ttscale("eval", "import-samples", f, "--format", "boinf", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "imported 6 questions, 48 samples (48 new)" in done.stderr
    again = _ttscale("eval", "import-samples", f, "--out", out)
    assert again.returncode == 0 and "(0 new)" in again.stderr
    return out


def _majority_correct(row: dict[str, object]) -> bool:
    answers = row["all_answers"]
    assert isinstance(answers, list)
    traces = [Trace("", a or None, t, "stop") for a, t in answers]
    winner = pick(classes_of(traces), "votes")
    return winner is not None and equivalent(winner, str(row["gold_answer"]))


def test_replay_json_and_results_file(run_dir: Path) -> None:
    done = _ttscale("eval", "replay", run_dir, "--strategies", "majority", "--n", "1,2,8",
                    "--resamples", "50", "--seed", "3", "--json")
    assert done.returncode == 0, done.stderr
    points = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["n"] for p in points] == [1, 2, 8]
    assert all(p["questions"] == 6 and p["strategy"] == "majority" for p in points)
    assert all(p["ci_low"] <= p["accuracy"] <= p["ci_high"] for p in points)
    # n = all samples: exactly the plain majority vote of each question
    expected = sum(map(_majority_correct, _rows())) / 6
    assert points[-1]["accuracy"] == pytest.approx(expected)
    tokens = sum(t for r in _rows() for _, t in r["all_answers"]) / 6  # type: ignore[attr-defined]
    assert points[-1]["mean_tokens"] == pytest.approx(tokens)
    stored = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert stored == points
    same = _ttscale("eval", "replay", run_dir, "--n", "1,2,8", "--resamples", "50",
                    "--seed", "3", "--json")
    assert same.stdout == done.stdout


def test_replay_table(run_dir: Path) -> None:
    done = _ttscale("eval", "replay", run_dir, "--n", "1,4", "--resamples", "20")
    assert done.returncode == 0, done.stderr
    assert "majority" in done.stdout and "accuracy" in done.stdout and "±" in done.stdout


@pytest.mark.parametrize(("args", "match"), [
    (("--n", "2,1"), "strictly increasing"),
    (("--n", "0,2"), "positive"),
    (("--n", "1,x"), "comma-separated integers"),
    (("--n", "1,9"), "more than the samples stored per question (at most 8)"),
    (("--strategies", "best"), "unknown strategy best"),
    (("--strategies", "deepconf:eta=0.9"), "a replay takes strategy names without options, "
     "got deepconf:eta=0.9: give adaptive_majority's with --rule, deepconf's with --confidence"),
    (("--strategies", "majority,weighted_best_of_n"), "no verifier scores"),
    (("--resamples", "0"), "--resamples must be a positive"),
])
def test_replay_refuses_bad_options(run_dir: Path, args: tuple[str, ...], match: str) -> None:
    done = _ttscale("eval", "replay", run_dir, *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and match in done.stderr, done.stderr
    assert done.stdout == ""


def test_import_and_replay_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem_num": 0, "all_answers": []}) + "\n")
    done = _ttscale("eval", "import-samples", bad, "--out", tmp_path / "r")
    assert done.returncode == 2
    assert "line 1 has no 'gold_answer' field" in done.stderr
    fmt = _ttscale("eval", "import-samples", bad, "--format", "csv", "--out", tmp_path / "r")
    assert fmt.returncode == 2 and "unknown sample format 'csv'" in fmt.stderr
    empty = _ttscale("eval", "replay", tmp_path / "nothing")
    assert empty.returncode == 2 and "holds no run store" in empty.stderr
