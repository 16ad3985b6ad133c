"""``ttscale eval`` generation runs: the harness over a cached backend, resuming, larger N
reusing smaller N, stored verifier scores, bad input, and a kill -9 of the real command."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eval_helpers import (
    PROBLEMS,
    SRC,
    eval_args,
    open_run,
    questions_file,
    run_ttscale,
    script,
)

import ttscale
from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig, vote
from ttscale.evaluation.replay.metrics import curve
from ttscale.evaluation.runs.records import load_records, question_samples
from ttscale.evaluation.runs.store import FILE_NAME
from ttscale.types import Usage


def test_larger_n_generates_only_the_missing_samples(tmp_path: Path) -> None:
    fake = FakeBackend(script=script)
    store, h = open_run(tmp_path, EvalConfig(ns=(1, 2)), fake)
    first = h.run(PROBLEMS)
    assert (first.new_samples, first.cached_samples) == (8, 0)
    store.close()
    store, h = open_run(tmp_path, EvalConfig(ns=(1, 4, 8)), fake)
    second = h.run(PROBLEMS)
    assert (second.new_samples, second.cached_samples) == (24, 8)
    # requests of at most 4 samples for the missing ones: 2..5 and 6..7 of each question
    assert sorted((p.seed, p.n) for _, p in fake.calls[4:]) == [(2, 4)] * 4 + [(6, 2)] * 4
    assert store.count("generations") == 32
    store.close()
    _settings, records = load_records(tmp_path)
    assert [len(r.traces) for r in records] == [8, 8, 8, 8]
    assert [t.answer for t in records[0].traces[:4]] == ["1", "2", "3", "1"]


def test_results_are_the_vote_of_the_first_n_samples(tmp_path: Path) -> None:
    store, h = open_run(tmp_path, EvalConfig(ns=(1, 3, 4)), FakeBackend(script=script))
    h.run(PROBLEMS[:2])
    rows = {(r.question_id, r.n): r for r in store.results()}
    assert rows[("q0", 1)].answer == "1" and rows[("q0", 1)].correct  # gold of q0 is 1
    assert rows[("q1", 3)].answer == "1" and not rows[("q1", 3)].correct  # a 3-way tie
    assert rows[("q1", 4)].answer == "1"  # 1 has two votes of four
    # the cost of n samples is n samples' prompt and completion tokens
    one, four = rows[("q0", 1)].usage, rows[("q0", 4)].usage
    assert four.total_tokens == 4 * one.total_tokens and four.calls == 4
    store.close()


def test_verifier_scores_are_stored_once_and_counted(tmp_path: Path) -> None:
    fake = FakeBackend(script=script, yes_logprob=-0.3)
    cfg = EvalConfig(strategies=("majority", "weighted_best_of_n"), ns=(2, 4))
    store, h = open_run(tmp_path, cfg, fake)
    h.run(PROBLEMS[:1])
    assert cfg.verifier == "self_judge"
    assert store.count("scores") == 4
    judged = len(fake.calls)
    store.close()
    store, h = open_run(tmp_path, cfg, fake)
    again = h.run(PROBLEMS[:1])
    assert again.new_samples == 0 and len(fake.calls) == judged  # nothing generated or judged
    rows = {(r.strategy, r.n): r for r in store.results()}
    # weighted best-of-N pays for the judge too
    assert (rows[("weighted_best_of_n", 4)].usage.total_tokens
            > rows[("majority", 4)].usage.total_tokens)
    store.close()
    _s, records = load_records(tmp_path)
    samples = question_samples(records)
    assert all(s[2] is not None and len(s) == 4 and s[3] > 0 for s in samples[0].samples)
    weighted = curve(samples, [4], "weighted_best_of_n")[0]
    majority = curve(samples, [4], "majority")[0]
    assert weighted.mean_tokens > majority.mean_tokens


def test_search_strategies_share_the_runs_one_verifier(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every question and n of a solved strategy scores with the verifier built for the run."""
    import importlib

    from ttscale.evaluation import harness
    from ttscale.verifiers import spec

    built: list[object] = []

    def counting(name: object, backend: object) -> object:
        if isinstance(name, str):  # built from a spec; an instance only passes through
            built.append(name)
        return spec.build_verifier(name, backend)  # type: ignore[arg-type]

    monkeypatch.setattr(harness, "build_verifier", counting)
    monkeypatch.setattr(importlib.import_module("ttscale.solve"), "build_verifier", counting)
    fake = FakeBackend(script=script, yes_logprob=-0.3)
    cfg = EvalConfig(strategies=("majority", "beam:width=2", "dvts:width=2"), ns=(2, 4),
                     verifier="self_judge")
    store, h = open_run(tmp_path, cfg, fake)
    h.run(PROBLEMS[:3])
    rows = [r for r in store.results() if r.strategy.startswith(("beam", "dvts"))]
    assert len(rows) == 3 * 2 * 2 and all(r.usage.total_tokens > 0 for r in rows)
    assert built == ["self_judge"]
    store.close()


def test_vote_breaks_ties_toward_the_first_class() -> None:
    assert vote([("2", 0.1), ("3", 0.1)], "majority") == "2"
    assert vote([("2", 0.1), ("3", 0.1), ("3", 0.05)], "weighted") == "3"
    assert vote([("2", 0.3), ("3", 0.2), ("3", 0.2)], "best") == "2"
    assert vote([], "majority") is None


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ConfigError, match="positive sample counts"):
        EvalConfig(ns=(0, 2))
    with pytest.raises(ConfigError, match="unknown strategy"):
        EvalConfig(strategies=("nonsense",))
    with pytest.raises(ConfigError, match="positive numbers"):
        EvalConfig(seeds=0)


# --- the command as a user runs it -----------------------------------------------------------

def test_eval_command_writes_results_and_refuses_other_settings(tmp_path: Path) -> None:
    data, out = questions_file(tmp_path), tmp_path / "run"
    done = run_ttscale(*eval_args(data, out), "--json")
    assert done.returncode == 0, done.stderr
    points = [json.loads(line) for line in done.stdout.splitlines()]
    majority = [p for p in points if p["strategy"] == "majority"]
    assert [p["n"] for p in majority] == [1, 2, 4]
    assert all(p["accuracy"] == 0.5 and p["questions"] == 6 for p in majority)
    assert (out / "results.jsonl").read_text().splitlines()[0] == done.stdout.splitlines()[0]
    assert "24 samples generated now" in done.stderr

    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "report.html").unlink()
    rebuilt = run_ttscale("report", out)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.strip() == str(out / "report.html")
    assert "Question 0?" in (out / "report.html").read_text()

    more = run_ttscale(*eval_args(data, out, n="1,8"), "--json")
    assert more.returncode == 0, more.stderr
    assert "24 samples generated now, 24 replayed" in more.stderr

    other = run_ttscale(*eval_args(data, out), "--temperature", "0.3")
    assert other.returncode == 2
    assert "different sampling" in other.stderr and "use a new --out name" in other.stderr
    assert "Traceback" not in other.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", "gsm8k", "--split", "dev"], "gsm8k has no split 'dev'"),
    (["--dataset", "gsm8k", "--n", "4,2"], "--n must be strictly increasing"),
    (["--dataset", "gsm8k", "--n", "0,2"], "--n must list positive sample counts"),
    (["--dataset", "gsm8k", "--ids", "5000"], "past the end of gsm8k test"),
])
def test_eval_bad_input_is_one_sentence(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_ttscale("eval", "--backend", "fake", "--out", tmp_path / "r", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_eval_jsonl_missing_field_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "a?", "answer": "1"}\n{"question": "b?"}\n')
    done = run_ttscale(*eval_args(f, tmp_path / "r"))
    assert done.returncode == 2 and "line 2" in done.stderr, done.stderr


def test_eval_refuses_a_corrupted_store_and_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / FILE_NAME).write_bytes(b"not a database at all" * 10)
    done = run_ttscale(*eval_args(questions_file(tmp_path), out))
    assert done.returncode == 2 and "not an SQLite file" in done.stderr
    assert (out / FILE_NAME).read_bytes() == b"not a database at all" * 10


def _generations(out: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(out / FILE_NAME)
    try:
        return conn.execute("SELECT prompt_hash, sample_index, text FROM generations "
                            "ORDER BY prompt_hash, sample_index").fetchall()
    except sqlite3.OperationalError:
        return []  # the tables are not created yet
    finally:
        conn.close()


def _numbers(out: Path) -> list[dict[str, object]]:
    """The curve points of a run without wall seconds, which are measured, not computed."""
    points = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for p in points:
        del p["mean_seconds"]
    return points


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_eval_killed_with_sigkill_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    data = questions_file(tmp_path, 8)
    whole = tmp_path / "whole"
    assert run_ttscale(*eval_args(data, whole, "--json")).returncode == 0
    reference = _numbers(whole)

    killed = tmp_path / "killed"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen([sys.executable, "-m", "ttscale",
                             *map(str, eval_args(data, killed, "--fake-delay", "0.4"))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (killed / FILE_NAME).exists() and 2 <= len(_generations(killed)) // 4 < 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = _generations(killed)
    assert 0 < len(partial) < 32

    again = run_ttscale(*eval_args(data, killed, "--json"))
    assert again.returncode == 0, again.stderr
    assert f"{32 - len(partial)} samples generated now" in again.stderr
    final = _generations(killed)
    assert final == _generations(whole) and len(set(final)) == 32
    assert _numbers(killed) == reference


def test_report_of_a_directory_without_a_run_is_one_sentence(tmp_path: Path) -> None:
    done = run_ttscale("report", tmp_path)
    assert done.returncode == 2 and "holds no run store" in done.stderr
    assert "Traceback" not in done.stderr


def test_datasets_lists_the_offline_sets_with_sizes() -> None:
    done = run_ttscale("datasets", "--json")
    assert done.returncode == 0, done.stderr
    rows = {d["name"]: d for d in json.loads(done.stdout)}
    assert rows["gsm8k"]["splits"] == ["test", "train"]
    assert rows["gsm8k"]["sizes"] == [1319, 7473]
    assert {"math500", "math", "svamp", "asdiv", "gym:TASK", "PATH.jsonl"} <= set(rows)
    table = run_ttscale("datasets")
    assert "1,319" in table.stdout and "math500" in table.stdout


@pytest.mark.slow
def test_eval_on_the_real_small_model(tmp_path: Path) -> None:
    out = tmp_path / "real"
    done = run_ttscale("eval", "--dataset", "gsm8k", "--ids", "0-1", "--model", "smollm2-135m",
                    "--strategies", "majority,weighted_best_of_n", "--n", "1,2",
                    "--max-tokens", "96", "--out", out, "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    _s, records = load_records(out)
    assert [len(r.traces) for r in records] == [2, 2]
    trace = records[0].traces[0]
    assert trace.completion_tokens > 0 and trace.prompt_tokens > 0
    assert trace.score is not None and 0.0 <= trace.score <= 1.0
    points = [json.loads(line) for line in done.stdout.splitlines()]
    assert {p["strategy"] for p in points} == {"majority", "weighted_best_of_n", "pass@k"}


def test_replay_of_a_run_still_generating_uses_its_finishedquestions_file(tmp_path: Path) -> None:
    store, h = open_run(tmp_path, EvalConfig(ns=(2,)), FakeBackend(script=script))
    h.run(PROBLEMS[:2])
    store.close()
    store, h = open_run(tmp_path, EvalConfig(ns=(4,)), FakeBackend(script=script))
    h.run(PROBLEMS[:1])  # q0 has 4 samples now, q1 still 2
    store.close()
    done = run_ttscale("eval", "replay", tmp_path, "--strategies", "majority", "--n", "1,4",
                    "--json")
    assert done.returncode == 0, done.stderr
    assert "replaying the 1 of 2 questions with 4 samples" in done.stderr
    assert {json.loads(line)["questions"] for line in done.stdout.splitlines()} == {1}
    too_many = run_ttscale("eval", "replay", tmp_path, "--strategies", "majority", "--n", "8")
    assert too_many.returncode == 2 and "at most 4" in too_many.stderr


def test_results_file_and_report_keep_earlier_invocations(tmp_path: Path) -> None:
    """Sampling, then a search, then another n: the run's files show all of them, the
    terminal only what was asked now."""
    data, out = questions_file(tmp_path, 3), tmp_path / "run"
    first = run_ttscale(*eval_args(data, out, n="1,2"), "--json")
    assert first.returncode == 0, first.stderr
    second = run_ttscale("eval", "--dataset", data, "--backend", "fake", "--strategies", "greedy",
                      "--n", "1", "--out", out, "--concurrency", "1", "--json")
    assert second.returncode == 0, second.stderr
    printed = [(p["strategy"], p["n"]) for p in map(json.loads, second.stdout.splitlines())]
    assert printed == [("pass@k", 1), ("greedy", 1)]
    kept = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(p["strategy"], p["n"]) for p in kept] == [
        ("pass@k", 1), ("greedy", 1), ("majority", 1), ("majority", 2)]
    # majority's points are the first invocation's, on the same questions
    firsts = {(p["strategy"], p["n"]): p for p in map(json.loads, first.stdout.splitlines())}
    assert all(p["accuracy"] == firsts[("majority", p["n"])]["accuracy"]
               for p in kept if p["strategy"] == "majority")
    rebuilt = run_ttscale("report", out)
    assert rebuilt.returncode == 0, rebuilt.stderr
    page = (out / "report.html").read_text()
    assert "greedy" in page and "majority" in page


def test_a_rows_cost_counts_only_its_own_replays_beside_otherquestions_file(
        tmp_path: Path) -> None:
    """Two questions solved side by side: one replays its calls from the cache while the
    other generates. Each row is charged its own replayed compute, not its neighbour's."""

    def solve(run: Path, strategy: str, problems: list[Problem]) -> dict[str, Usage]:
        fake = FakeBackend(script=script, yes_logprob=-0.3, delay=0.02)
        cfg = EvalConfig(strategies=(strategy,), ns=(2,), verifier="self_judge",
                         concurrency=2)
        store, h = open_run(run, cfg, fake)
        h.run(problems)
        rows = {r.question_id: r.usage for r in store.results() if r.strategy == strategy}
        store.close()
        return rows

    # at n=2, DVTS of width 2 is beam search: the same calls, all replayed the second time
    beam = solve(tmp_path / "run", "beam:width=2", PROBLEMS[:1])
    both = solve(tmp_path / "run", "dvts:width=2", PROBLEMS[:2])
    alone = solve(tmp_path / "alone", "dvts:width=2", PROBLEMS[1:2])
    assert both["q0"].total_tokens == beam["q0"].total_tokens
    assert both["q1"].total_tokens == alone["q1"].total_tokens
    assert both["q1"].completion_tokens == alone["q1"].completion_tokens


def test_the_end_of_run_report_reads_no_log_probabilities(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The points, results.jsonl and report.html of a run come out the same without reading
    a single trace's log-probabilities back (most of a large run's bytes)."""
    from dataclasses import replace

    from ttscale.evaluation import api
    from ttscale.evaluation.runs import store as store_module

    run = ttscale.evaluate("svamp", tmp_path, ids="0-3", ns=[1, 2, 4], backend="fake",
                           strategies="majority,greedy")
    files = {name: (tmp_path / name).read_bytes() for name in ("results.jsonl", "report.html")}
    _settings, full = load_records(tmp_path)
    assert all(t.logprobs for r in full for t in r.traces)  # they are stored
    _settings, lean = load_records(tmp_path, logprobs=False)
    assert lean == [replace(r, traces=tuple(replace(t, logprobs=None) for t in r.traces))
                    for r in full]

    def refuse(_text: object) -> None:
        raise AssertionError("log-probabilities read back")

    monkeypatch.setattr(store_module, "unpack", refuse)
    cfg = EvalConfig(strategies=("majority", "greedy"), ns=(1, 2, 4))
    again = api._summary(tmp_path, cfg, run.outcome, [r.id for r in full], True)
    assert again.points == run.points
    assert {n: (tmp_path / n).read_bytes() for n in files} == files
