"""``ttscale eval export`` and ``ttscale eval restore``: a run written to one text file and
rebuilt from it, on real SQLite stores, through the real command."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import ttscale
from ttscale.errors import ConfigError
from ttscale.evaluation.runs.archive import export_run, restore_run
from ttscale.evaluation.runs.store import FILE_NAME

SRC = str(Path(ttscale.__file__).resolve().parents[1])


def _ttscale(*args: str | Path, columns: str | None = "1000") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    # rich wraps tables at COLUMNS (80 when unset) when not on a terminal
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "ttscale", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=180)


def _tables(run: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows without row ids, with each score named by its generation's key."""
    conn = sqlite3.connect(run / FILE_NAME)
    try:
        out = {
            "generations": conn.execute(
                "SELECT model_sha256, prompt_hash, params_hash, sample_index, prompt, params, "
                "text, prompt_tokens, completion_tokens, finish_reason, logprobs, "
                "token_logprobs, answer, hit_stop FROM generations ORDER BY id").fetchall(),
            "scores": conn.execute(
                "SELECT g.prompt_hash, g.sample_index, s.verifier, s.step_scores, s.score, "
                "s.usage FROM scores s JOIN generations g ON g.id = s.generation_id "
                "ORDER BY g.id, s.verifier").fetchall(),
            "results": conn.execute("SELECT run, question_id, strategy, n, seed, answer, "
                                    "correct, usage FROM results ORDER BY id").fetchall(),
            "trees": conn.execute("SELECT question_id, strategy, tree FROM trees "
                                  "ORDER BY id").fetchall(),
            "questions": conn.execute("SELECT position, id, question, gold, meta FROM "
                                      "questions ORDER BY position").fetchall(),
            "bindings": conn.execute("SELECT key, value FROM bindings ORDER BY key").fetchall(),
            "settings": conn.execute("SELECT settings FROM run").fetchall(),
        }
    finally:
        conn.close()
    return out


def _eval(run: Path, out: Path, strategies: str, ids: str = "0-2") -> list[str | Path]:
    # a run's dataset is part of its settings: every run here reads the fixture's file
    return ["eval", "--dataset", run.parent / "qs.jsonl", "--ids", ids, "--backend", "fake",
            "--strategies", strategies, "--n", "2", "--out", out, "--concurrency", "1",
            "--verifier", "self_judge"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with samples, self-judge scores, replayed and searched results and trees."""
    tmp = tmp_path_factory.mktemp("archive")
    # the fake backend answers 42: the odd questions are right
    (tmp / "qs.jsonl").write_text("".join(
        json.dumps({"question": f"Question {i}?", "answer": "42" if i % 2 else str(i)}) + "\n"
        for i in range(5)))
    out = tmp / "run"
    done = _ttscale(*_eval(out, out, "majority,weighted_best_of_n,beam:width=2"))
    assert done.returncode == 0, done.stderr
    return out


def test_a_restored_run_equals_the_original_row_for_row(run: Path, tmp_path: Path) -> None:
    f = tmp_path / "run.jsonl"
    written = _ttscale("eval", "export", run, f)
    assert written.returncode == 0, written.stderr
    before = _tables(run)
    assert before["trees"] and before["scores"] and before["bindings"]  # all kinds present
    assert f"wrote {f}: " in written.stderr
    assert f"{len(before['generations'])} generations" in written.stderr
    restored = _ttscale("eval", "restore", f, "--out", tmp_path / "copy")
    assert restored.returncode == 0, restored.stderr
    assert _tables(tmp_path / "copy") == before
    # the same file again adds nothing
    again = _ttscale("eval", "restore", f, "--out", tmp_path / "copy")
    assert again.returncode == 0 and "nothing new" in again.stderr
    assert _tables(tmp_path / "copy") == before


def test_a_long_path_in_a_message_stays_on_one_line(run: Path, tmp_path: Path) -> None:
    """Piped stderr at the default 80 columns: a path a user copies is not broken."""
    folder = tmp_path / ("a-long-folder-name-" * 6)
    folder.mkdir()
    f = folder / "run.jsonl"
    written = _ttscale("eval", "export", run, f, columns=None)
    assert written.returncode == 0, written.stderr
    assert len(str(f)) > 80 and f"wrote {f}: " in written.stderr
    restored = _ttscale("eval", "restore", f, "--out", folder / "copy", columns=None)
    assert f"restored into {folder / 'copy'}: " in restored.stderr


def test_the_restored_run_replays_instead_of_generating(run: Path, tmp_path: Path) -> None:
    f = tmp_path / "run.jsonl"
    export_run(run, f)
    copy = tmp_path / "copy"
    restore_run(f, copy)
    done = _ttscale(*_eval(run, copy, "majority"), "--json")
    assert done.returncode == 0, done.stderr
    assert "0 samples generated now, 6 replayed" in done.stderr


def test_restore_merges_another_machines_questions(run: Path, tmp_path: Path) -> None:
    """Questions 3-4 generated elsewhere join questions 0-2: the merged run holds both, each
    question once, and exporting it again gives every row of both."""
    elsewhere = tmp_path / "elsewhere"
    done = _ttscale(*_eval(run, elsewhere, "majority,weighted_best_of_n,beam:width=2", "3-4"))
    assert done.returncode == 0, done.stderr
    merged = tmp_path / "merged"
    export_run(run, tmp_path / "a.jsonl")
    restore_run(tmp_path / "a.jsonl", merged)
    export_run(elsewhere, tmp_path / "b.jsonl")
    new = restore_run(tmp_path / "b.jsonl", merged)
    one, two, both = _tables(run), _tables(elsewhere), _tables(merged)
    assert new["questions"] == 2 and new["generations"] == len(two["generations"])
    assert [q[2] for q in both["questions"]] == [f"Question {i}?" for i in range(5)]
    assert [q[0] for q in both["questions"]] == [0, 1, 2, 3, 4]
    for table in ("generations", "scores", "results", "trees"):
        assert sorted(both[table], key=repr) == sorted(one[table] + two[table], key=repr)


def test_without_logprobs_the_tokens_are_left_out(run: Path, tmp_path: Path) -> None:
    full, slim = tmp_path / "full.jsonl", tmp_path / "slim.jsonl"
    export_run(run, full)
    export_run(run, slim, logprobs=False)
    assert slim.stat().st_size < full.stat().st_size
    rows = [json.loads(line) for line in slim.read_text().splitlines()]
    assert all(r["token_logprobs"] is None for r in rows if r.get("table") == "generations")


def test_a_restore_into_a_run_of_other_settings_is_refused(run: Path, tmp_path: Path) -> None:
    f = tmp_path / "run.jsonl"
    export_run(run, f)
    other = tmp_path / "other"
    done = _ttscale(*_eval(run, other, "majority"), "--temperature", "0.3")
    assert done.returncode == 0, done.stderr
    refused = _ttscale("eval", "restore", f, "--out", other)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "different sampling" in refused.stderr and "use a new --out name" in refused.stderr


@pytest.mark.parametrize(("text", "message"), [
    (None, "no file at"),
    ("", "does not start with a ttscale run header"),
    ('{"format": "other"}\n', "does not start with a ttscale run header"),
    ('{"format": "ttscale-run", "schema_version": 99, "settings": {}}\n',
     "holds store schema 99"),
    ('{"format": "ttscale-run", "schema_version": 1, "settings": {"kind": "eval"}}\nnope\n',
     "line 2 is not valid JSON"),
    ('{"format": "ttscale-run", "schema_version": 1, "settings": {"kind": "eval"}}\n'
     '{"table": "secrets"}\n', "line 2 names no known table"),
    ('{"format": "ttscale-run", "schema_version": 1, "settings": {"kind": "eval"}}\n'
     '{"table": "bindings", "key": "k"}\n', "a bindings row has no 'value'"),
])
def test_bad_files_are_one_sentence(tmp_path: Path, text: str | None, message: str) -> None:
    f = tmp_path / "bad.jsonl"
    if text is not None:
        f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        restore_run(f, tmp_path / "out")
    done = _ttscale("eval", "restore", f, "--out", tmp_path / "cli")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert message in " ".join(done.stderr.split())


def test_exporting_a_directory_without_a_run_is_one_sentence(tmp_path: Path) -> None:
    done = _ttscale("eval", "export", tmp_path, tmp_path / "x.jsonl")
    assert done.returncode == 2 and "holds no run store" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_a_reports_samples_rebuild_a_run_that_replays_them(run: Path, tmp_path: Path) -> None:
    page = run / "report.html"
    done = _ttscale("eval", "restore", page, "--out", tmp_path / "copy")
    assert done.returncode == 0, done.stderr
    assert "3 questions" in done.stderr and "6 generations" in done.stderr
    # the samples as stored (a beam's steps are not in a report), but for their
    # log-probabilities and whether a stop string ended them
    rebuilt = [g[:10] + g[12:13] for g in _tables(tmp_path / "copy")["generations"]]
    keys = {g[:4] for g in _tables(tmp_path / "copy")["generations"]}
    assert rebuilt == [g[:10] + g[12:13] for g in _tables(run)["generations"] if g[:4] in keys]
    assert len(rebuilt) == 6
    again = _ttscale(*_eval(run, tmp_path / "copy", "majority"))
    assert again.returncode == 0, again.stderr
    assert "0 samples generated now, 6 replayed" in again.stderr


def test_a_report_without_settings_needs_a_run_of_the_same_options(run: Path,
                                                                   tmp_path: Path) -> None:
    old = tmp_path / "old.html"
    old.write_text(re.sub(r'\{"settings":\{.*?\},"questions"', '{"questions"',
                          (run / "report.html").read_text(), count=1))
    refused = _ttscale("eval", "restore", old, "--out", tmp_path / "a")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "give --settings-from RUN" in " ".join(refused.stderr.split())
    done = _ttscale("eval", "restore", old, "--out", tmp_path / "b", "--settings-from", run)
    assert done.returncode == 0, done.stderr
    assert len(_tables(tmp_path / "b")["generations"]) == 6
    empty = tmp_path / "empty.html"
    empty.write_text("<html><body>hello</body></html>")
    none = _ttscale("eval", "restore", empty, "--out", tmp_path / "c")
    assert none.returncode == 2 and "holds no embedded run data" in none.stderr
