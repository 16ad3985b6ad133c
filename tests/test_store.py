"""The run store on real SQLite files: settings checks, refusal of foreign files, idempotent
inserts, WAL mode and round trips of every table."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from ttscale.errors import ConfigError
from ttscale.evaluation.runs.store import (
    FILE_NAME,
    NewGeneration,
    ResultRow,
    ScoreRow,
    Store,
    params_json,
    prompt_from_json,
    prompt_json,
)
from ttscale.params import SamplingParams
from ttscale.types import Chat, Generation, TokenLogprob, Usage

SETTINGS = {"model": "qwen", "dataset": "gsm8k", "split": "test", "n": [1, 4, 16],
            "seeds": [0], "sampling": SamplingParams(max_tokens=64)}
SHA = "ab" * 32


def gen(text: str, index: int, logprobs: bool = False) -> Generation:
    lps = (TokenLogprob("Yes", -0.25, (("Yes", -0.25), ("No", -1.5))),) if logprobs else None
    return Generation(text, 5, len(text.split()), "stop", lps, index)


def rows(n: int, params: SamplingParams | None = None, text: str = "t") -> list[NewGeneration]:
    params = params or SamplingParams()
    return [NewGeneration(SHA, Chat.user("q"), params, i, gen(f"{text} {i}", i), str(i))
            for i in range(n)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reopen_with_same_settings_keeps_data(tmp_path: Path) -> None:
    with Store.open(tmp_path / "run", SETTINGS) as s:
        s.put_generations(rows(3))
    with Store.open(tmp_path / "run", dict(SETTINGS)) as s:
        assert s.count("generations") == 3
        assert s.settings["n"] == [1, 4, 16] and s.settings["sampling"]["max_tokens"] == 64


def test_different_setting_is_refused_naming_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    Store.open(run, SETTINGS).close()
    with pytest.raises(ConfigError) as err:
        Store.open(run, {**SETTINGS, "model": "smollm"})
    assert str(err.value) == (f'{run} holds a run with different model (stored "qwen", '
                              'asked "smollm"): use a new --out name')
    with pytest.raises(ConfigError, match=r"different seeds \(stored \[0\], asked none\)"):
        Store.open(run, {k: v for k, v in SETTINGS.items() if k != "seeds"})
    with pytest.raises(ConfigError, match=r"different sampling \(stored .*\"max_tokens\":64"):
        Store.open(run, {**SETTINGS, "sampling": SamplingParams(max_tokens=65)})


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    path = run / FILE_NAME
    path.write_bytes(b"these are my precious notes, not a database\n" * 50)
    before = digest(path)
    with pytest.raises(ConfigError) as err:
        Store.open(run, SETTINGS)
    assert str(err.value) == (f"{path} is not an SQLite file, so not a ttscale run store: move "
                              "it away or use a new --out name")
    assert digest(path) == before
    assert sorted(p.name for p in run.iterdir()) == [FILE_NAME]
    with pytest.raises(ConfigError, match="is a file, not a run directory"):
        Store.open(path, SETTINGS)


def test_a_foreign_or_damaged_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    path = run / FILE_NAME
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(ConfigError, match="without the ttscale tables run, generations, "
                                          "scores, results, trees: move it away"):
        Store.open(run, SETTINGS)
    assert digest(path) == before
    # A real SQLite header followed by garbage: sqlite itself finds it unreadable.
    path.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4000)
    before = digest(path)
    with pytest.raises(ConfigError, match="is not a readable ttscale run store"):
        Store.open(run, SETTINGS)
    assert digest(path) == before


def test_insert_or_ignore_is_idempotent(tmp_path: Path) -> None:
    with Store.open(tmp_path, SETTINGS) as s:
        assert s.put_generations(rows(4)) == 4
        assert s.put_generations(rows(4)) == 0
        # A different text under an existing key does not replace the first one.
        assert s.put_generations(rows(6, text="other")) == 2
        assert s.count("generations") == 6
        got = s.get_generations(SHA, Chat.user("q"), SamplingParams(), 0, 10)
        assert [got[i].generation.text for i in range(6)] == [
            "t 0", "t 1", "t 2", "t 3", "other 4", "other 5"]


def test_wal_mode_is_on(tmp_path: Path) -> None:
    with Store.open(tmp_path, SETTINGS) as s:
        assert s.journal_mode() == "wal"
        s.put_generations(rows(1))
        other = sqlite3.connect(s.path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # Committed at once: another connection sees the batch while the store is open.
        assert other.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 1
        other.close()


def test_generations_round_trip_with_logprobs(tmp_path: Path) -> None:
    params = SamplingParams(temperature=0.0, logprobs=True, top_logprobs=2)
    g = gen("Yes", 3, logprobs=True)
    with Store.open(tmp_path, SETTINGS) as s:
        s.put_generations([NewGeneration(SHA, "raw prompt", params, 3, g, None)])
        got = s.get_generations(SHA, "raw prompt", params.with_(n=4, seed=1), 0, 8)
        assert list(got) == [3] and got[3].generation == g and got[3].answer is None
        # Another model, prompt or parameter set is another key.
        assert not s.get_generations("cd" * 32, "raw prompt", params, 0, 8)
        assert not s.get_generations(SHA, "raw prompt ", params, 0, 8)
        assert not s.get_generations(SHA, "raw prompt", params.with_(temperature=0.1), 0, 8)
        assert not s.get_generations(SHA, "raw prompt", params, 4, 8)


def test_keys_leave_out_n_and_seed() -> None:
    assert params_json(SamplingParams(n=3, seed=9)) == params_json(SamplingParams())
    assert params_json(SamplingParams(stop=("\n",))) != params_json(SamplingParams())
    chat = Chat.user("q", system="be brief")
    assert prompt_from_json(prompt_json(chat)) == chat
    assert prompt_from_json(prompt_json("plain")) == "plain"
    assert prompt_json("q") != prompt_json(Chat.user("q"))


def test_scores_results_and_trees_round_trip(tmp_path: Path) -> None:
    with Store.open(tmp_path, SETTINGS) as s:
        s.put_generations(rows(2))
        ids = [g.id for g in s.get_generations(SHA, Chat.user("q"), SamplingParams(), 0,
                                                2).values()]
        assert s.put_scores([ScoreRow(ids[0], "self_judge", (0.5, 0.25), 0.25)]) == 1
        assert s.put_scores([ScoreRow(ids[0], "self_judge", (0.9,), 0.9)]) == 0
        assert s.get_scores("self_judge", ids) == {
            ids[0]: ScoreRow(ids[0], "self_judge", (0.5, 0.25), 0.25)}
        row = ResultRow("main", "gsm8k-test-0", "majority", 4, 0, "18", True,
                        Usage(10, 20, 1, 0.5, 60.0))
        assert s.put_results([row, row]) == 1
        assert s.results() == [row] and s.results("other") == []
        tid = s.put_tree("gsm8k-test-0", "beam", {"children": [{"score": 0.5}]})
        [tree] = s.trees("gsm8k-test-0")
        assert (tree.id, tree.strategy, tree.tree) == (tid, "beam", {"children": [{"score": 0.5}]})
        with pytest.raises(ConfigError, match="unknown table"):
            s.count("nope")


def test_concurrent_batches_from_threads(tmp_path: Path) -> None:
    with Store.open(tmp_path, SETTINGS) as s:
        def write(offset: int) -> None:
            for k in range(5):
                batch = [NewGeneration(SHA, f"p{offset}", SamplingParams(), k * 10 + i,
                                       gen("x", i)) for i in range(10)]
                s.put_generations(batch)

        threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.count("generations") == 4 * 5 * 10
