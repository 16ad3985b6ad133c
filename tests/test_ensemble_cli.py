"""``ttscale eval ensemble``: runs as sources, their shared questions cross-validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttscale.aggregation.ensemble import METHODS
from ttscale.aggregation.stopping import BayesFactorRule
from ttscale.cli.main import app
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.ensembles import ensemble_report

runner = CliRunner()


def imported(tmp_path: Path, name: str, answers: list[str], tokens: int,
             ids: range = range(6)) -> Path:
    """An import run: problem k has gold str(k + 1); the model gives answers[k] 4 times."""
    f = tmp_path / f"{name}.jsonl"
    f.write_text("".join(json.dumps({"problem_num": k, "gold_answer": str(k + 1),
                                     "all_answers": [[answers[k], tokens]] * 4}) + "\n"
                         for k in ids), encoding="utf-8")
    out = tmp_path / name
    done = runner.invoke(app, ["eval", "import-samples", str(f), "--out", str(out)])
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = imported(tmp_path, "a", ["1", "2", "3", "4", "0", "0"], 10)  # right on 0-3
    b = imported(tmp_path, "b", ["0", "0", "3", "4", "5", "6"], 20)  # right on 2-5
    return a, b


def test_every_method_is_reported_with_accuracy_and_tokens(two_runs: tuple[Path, Path]
                                                           ) -> None:
    done = runner.invoke(app, ["eval", "ensemble", *map(str, two_runs), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == set(METHODS) and report["questions"] == 6
    assert report["source_accuracy"] == [4 / 6, 4 / 6]
    assert report["source_tokens"] == [40.0, 80.0]
    # equal votes tie where the two disagree; ties go to the first source's answer
    assert rows["equal"]["accuracy"] == pytest.approx(4 / 6)
    assert rows["equal"]["tokens"] == 120.0
    # hindsight: the first of the two equally good sources, only its tokens
    assert rows["best_hindsight"]["accuracy"] == pytest.approx(4 / 6)
    assert rows["best_hindsight"]["tokens"] == 40.0
    assert all(0 <= r["accuracy"] <= 1 for r in rows.values())
    table = runner.invoke(app, ["eval", "ensemble", *map(str, two_runs)])
    assert table.exit_code == 0 and "milp" in table.stdout and "second_order" in table.stdout


def test_fewer_samples_and_an_adaptive_rule_cost_less(two_runs: tuple[Path, Path]) -> None:
    half = ensemble_report(two_runs, n=2)
    assert {r.method: r.tokens for r in half.rows}["equal"] == 60.0
    adaptive = ensemble_report(two_runs, rule=BayesFactorRule(threshold=10), orders=3)
    # unanimous samples: the Bayes factor passes 10 at the third of each source's 4
    assert {r.method: r.tokens for r in adaptive.rows}["equal"] == pytest.approx(90.0)


def test_bad_input_is_one_sentence_and_exit_2(two_runs: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    one = runner.invoke(app, ["eval", "ensemble", str(two_runs[0])])
    assert one.exit_code == 2 and "at least 2 run directories" in one.output
    twice = runner.invoke(app, ["eval", "ensemble", str(two_runs[0]),
                                str(two_runs[0].parent / "." / two_runs[0].name)])
    assert twice.exit_code == 2 and "is given twice" in twice.output
    other = imported(tmp_path, "c", ["1"] * 12, 5, ids=range(6, 12))
    apart = runner.invoke(app, ["eval", "ensemble", str(two_runs[0]), str(other)])
    assert apart.exit_code == 2 and "share no question" in apart.output
    missing = runner.invoke(app, ["eval", "ensemble", str(two_runs[0]), str(tmp_path / "x")])
    assert missing.exit_code == 2 and "holds no run store" in missing.output
    rule = runner.invoke(app, ["eval", "ensemble", *map(str, two_runs), "--rule", "nope"])
    assert rule.exit_code == 2 and "unknown stopping rule" in rule.output
    with pytest.raises(ConfigError, match="--n must be a positive"):
        ensemble_report(two_runs, n=0)
