"""The evaluation harness as a library: ttscale.evaluate, replay, import_samples,
compare_verifiers, export / restore; progress through a callback, nothing printed, one
sentence on bad input. The README's Python examples run here too, on the real 135M model
and on the stored GSM8K run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import ttscale
from ttscale.errors import ConfigError, TtscaleError
from ttscale.evaluation.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_returns_points_reports_progress_and_prints_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events: list[Progress] = []
    run = ttscale.evaluate("svamp", tmp_path / "run", ids="0-2", ns=[1, 2, 4],
                           strategies=["majority"], backend="fake", progress=events.append)
    assert [(p.strategy, p.n) for p in run.points] == [
        ("majority", 1), ("majority", 2), ("majority", 4),
        ("pass@k", 1), ("pass@k", 2), ("pass@k", 4)]
    assert run.questions == 3 and run.outcome.new_samples == 12
    assert all(p.questions == 3 for p in run.points)
    # a phase line when the backend loads, then counted questions up to the total
    assert events[0].phase == "loading" and "fake" in events[0].message
    counts = [e for e in events if e.unit == "questions"]
    assert counts[0].done == 0 and counts[-1].done == counts[-1].total == 3
    assert capsys.readouterr() == ("", "")
    assert {"results.jsonl", "report.html", "curves.png"} <= {
        f.name for f in (tmp_path / "run").iterdir()}


def test_evaluate_resumes_and_a_larger_n_reuses_the_stored_samples(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ttscale.evaluate("svamp", out, ids="0-1", ns=[2], backend="fake", report_files=False)
    again = ttscale.evaluate("svamp", out, ids=[0, 1], ns=[2, 4], backend="fake",
                             report_files=False)  # the same questions, given as a list
    assert again.outcome.cached_samples == 4 and again.outcome.new_samples == 4
    assert not (out / "report.html").exists()


def test_replay_from_the_store_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ttscale.evaluate("svamp", out, ids="0-3", ns=[4], backend="fake", report_files=False)
    points = ttscale.replay(out, "majority,adaptive_majority", [2, 4], resamples=20,
                            rules=["fixed"])
    assert [(p.strategy.split("[")[0], p.n) for p in points][:2] == [("majority", 2),
                                                                    ("majority", 4)]
    assert len(points) == 4 and all(0 <= p.accuracy <= 1 for p in points)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["n"] for x in lines] == [p.n for p in points]


def test_replay_of_an_unfinished_run_says_which_questions_it_used(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ttscale.evaluate("svamp", out, ids="0-1", ns=[4], backend="fake", report_files=False)
    ttscale.evaluate("svamp", out, ids="2", ns=[2], backend="fake", report_files=False)
    said: list[Progress] = []
    points = ttscale.replay(out, ["majority"], [4], resamples=5, report_files=False,
                            progress=said.append)
    assert points[0].questions == 2
    assert [e.phase for e in said] == ["replay"] and "2 of 3 questions" in said[0].message


def test_import_samples_then_replay(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text("".join(json.dumps({"problem_num": i, "gold_answer": "7", "all_answers": [
        ["7", 100], ["8", 90], ["7", 110], ["7", 95]]}) + "\n" for i in range(3)))
    got = ttscale.import_samples(f, tmp_path / "imp")
    assert (got.questions, got.samples, got.new) == (3, 12, 12)
    assert ttscale.import_samples(f, tmp_path / "imp").new == 0
    (point,) = ttscale.replay(tmp_path / "imp", ["majority"], [4], report_files=False)
    assert point.accuracy == 1.0 and point.mean_tokens == 395


def test_export_then_restore_is_the_same_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ttscale.evaluate("svamp", out, ids="0-1", ns=[2], backend="fake", report_files=False)
    written = ttscale.export_run(out, tmp_path / "run.jsonl")
    assert written["generations"] == 4
    assert ttscale.restore_run(tmp_path / "run.jsonl", tmp_path / "copy")["generations"] == 4
    assert ([p.accuracy for p in ttscale.replay(out, "majority", [2], report_files=False)]
            == [p.accuracy for p in ttscale.replay(tmp_path / "copy", "majority", [2],
                                                   report_files=False)])


@pytest.mark.parametrize(("call", "says"), [
    (lambda d: ttscale.evaluate("svamp", d, ns=[4, 2], backend="fake"), "increasing"),
    (lambda d: ttscale.evaluate("svamp", d, strategies="nope", backend="fake"), "nope"),
    (lambda d: ttscale.evaluate("svamp", d, backend="nope"), "nope"),
    (lambda d: ttscale.evaluate("nope", d, backend="fake"), "nope"),
    (lambda d: ttscale.replay(d, ["vote"], [1]), "unknown strategy vote"),
    (lambda d: (ttscale.evaluate("svamp", d, ids="0-1", ns=[2], backend="fake",
                                 strategies="best_of_n", verifier="self_judge",
                                 report_files=False),
                ttscale.replay(d, ["weighted_best_of_n"], [2], verifier="llm_judge")),
     "has no scores from llm_judge: its samples are scored by self_judge"),
    (lambda d: ttscale.replay(d / "missing", ["majority"], [1]), "missing"),
    (lambda d: ttscale.import_samples(d / "none.jsonl", d / "x", "csv"), "csv"),
    (lambda d: ttscale.compare_verifiers(d, [1], resamples=0), "resamples"),
    (lambda d: ttscale.sprm_train([d], d / "head", width=0), "--width"),
    (lambda d: ttscale.sprm_train([d], d / "head", lr=float("nan")), "--lr must be positive"),
])
def test_bad_input_is_one_sentence(tmp_path: Path, call: object, says: str) -> None:
    with pytest.raises(TtscaleError) as info:
        call(tmp_path)  # type: ignore[operator]
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert says in message and "\n" not in message and "Traceback" not in message


def _python_blocks(readme: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme, flags=re.S)


@pytest.mark.slow
def test_the_readme_evaluate_and_replay_examples_run(tmp_path: Path) -> None:
    """The README's Python example of evaluate / replay, as written, on the real 135M
    model and the stored GSM8K run (bench/runs, shipped in the repository)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in _python_blocks(readme) if "ttscale.evaluate(" in b]
    assert "ttscale.replay(" in block and "smollm2-135m" in block
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "runs").symlink_to(ROOT / "bench" / "runs")
    here = Path.cwd()
    printed: list[str] = []
    try:
        os.chdir(tmp_path)
        exec(compile(block, "README.md", "exec"),  # the README's own code, as written
             {"print": lambda *a, **_k: printed.append(" ".join(map(str, a)))})
    finally:
        os.chdir(here)
    majority16 = [line for line in printed if line.startswith("majority 16 ")]
    assert majority16 and majority16[0].split()[2] == "70.0%"  # the stored run's figure
    assert any(line.startswith("majority 2 ") for line in printed)  # the 135M model's run


def test_solve_says_when_a_strategy_did_not_use_the_sample_count() -> None:
    from ttscale.backends.fake import FakeBackend

    greedy = ttscale.solve("2+2?", backend=FakeBackend(), strategy="greedy", n=8)
    assert greedy.notes == ("greedy takes no sample count: n=8 was not used",)
    auto = ttscale.solve("2+2?", backend=FakeBackend(), strategy="auto", n=8)
    assert auto.notes[-1].endswith("n=8 was not used (its plan picks the samples: cap them "
                                   "with auto:n_max=N)")
    # not given, or used: nothing to say
    assert ttscale.solve("2+2?", backend=FakeBackend(), strategy="greedy").notes == ()
    assert ttscale.solve("2+2?", backend=FakeBackend(), strategy="majority", n=3).notes == ()
