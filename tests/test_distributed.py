"""The Ray executor: questions evaluated by actors, the driver the store's only writer.

The real path runs a real local Ray cluster on this machine with the 135M model: its stored
samples equal a plain run's with the same seeds, and a worker process killed by its PID
mid-run loses and duplicates nothing. The worker's logic (a private store seeded with what
the run holds, rows merged back) is tested without Ray on the scripted backend. A verifier
in an actor pool of its own stores the scores the in-process verifier stores, on Ray and
without it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import BackendError, ConfigError, MissingExtra
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.distributed import QuestionWorker, connect
from ttscale.evaluation.harness import EvalConfig
from ttscale.evaluation.runs.archive import merge_rows, question_rows
from ttscale.evaluation.runs.store import Store
from ttscale.evaluation.verifier_pool import Local, VerifierPool, VerifierWorker

# every stored score with its generation's key and the usage it cost, less the seconds
SCORES = ("SELECT g.prompt_hash, g.sample_index, s.verifier, s.step_scores, s.score, s.usage "
          "FROM scores s JOIN generations g ON g.id = s.generation_id "
          "ORDER BY g.prompt_hash, g.sample_index")
SAMPLES = ("SELECT model_sha256, prompt_hash, params_hash, sample_index, text, answer, "
           "completion_tokens FROM generations ORDER BY prompt_hash, sample_index")


def stored(run_dir: Path, sql: str = SAMPLES) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return db.execute(sql).fetchall()


def test_worker_resumes_a_question_from_the_rows_the_driver_sends(tmp_path: Path) -> None:
    """A question half done in the run (2 of 4 samples) is continued by the worker: it
    generates the missing 2, and merging its rows back stores each sample once."""
    settings = {"kind": "eval"}
    cfg = EvalConfig(ns=(2, 4))
    problem = Problem("q0", "What is 1+1?", "2")
    with Store.open(tmp_path / "run", settings) as run:
        half = QuestionWorker(settings, EvalConfig(ns=(2,)), "fake", {}, "sha")
        merge_rows(run, half.question(problem, []))
        assert run.count("generations") == 2
        worker = QuestionWorker(settings, cfg, "fake", {}, "sha")
        rows = worker.question(problem, question_rows(run, problem.id, problem.question))
        fake = worker.backend
        assert isinstance(fake, FakeBackend)
        assert [c[1].seed for c in fake.calls] == [2]  # only samples 2 and 3 generated
        merge_rows(run, rows)
        merge_rows(run, rows)  # a result that arrives twice is stored once
        assert run.count("generations") == 4
        assert sorted((r.n, r.seed) for r in run.results()) == [(2, 0), (4, 0)]


def _scores(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(*r[:-1], {k: v for k, v in json.loads(r[-1]).items() if k != "seconds"})
            for r in rows]


def test_a_verifier_pool_stores_what_the_local_verifier_stores(tmp_path: Path) -> None:
    """The same question scored by the worker's own verifier and by a pool of two verifier
    workers (their handles stand-ins that call here): the same scores and usage, and the
    pool's calls go to its workers in turn."""
    settings = {"kind": "eval"}
    # two seeds: two scoring calls, one to each worker of the pool
    cfg = EvalConfig(strategies=("weighted_best_of_n",), ns=(1, 4), seeds=2,
                     verifier="self_judge")
    problem = Problem("q0", "What is 1+1?", "2")
    options = {"yes_logprob": -0.4}
    runs = {}
    for name in ("local", "pool"):
        worker = QuestionWorker(settings, cfg, "fake", options, "sha")
        if name == "pool":
            pool = [VerifierWorker("self_judge", "fake", options) for _ in range(2)]
            worker.verifier = VerifierPool([Local(w) for w in pool], get=lambda ref: ref)
        with Store.open(tmp_path / name, settings) as run:
            merge_rows(run, worker.question(problem, []))
        runs[name] = _scores(stored(tmp_path / name, SCORES))
    assert len(runs["pool"]) == 8 and runs["pool"] == runs["local"]
    calls = [len(w.backend.calls) for w in pool]  # type: ignore[union-attr]
    assert calls[0] == calls[1] > 0  # the seeds' traces scored half by each worker


def test_ray_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtra, match=r"pip install 'ttscale\[ray\]'"):
        connect(True, None)


def test_unreachable_ray_address_is_one_sentence(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from ttscale.evaluation.api import evaluate

    with pytest.raises(BackendError, match="no Ray cluster answers at 127.0.0.1:9"):
        evaluate("gsm8k", tmp_path, limit=1, ns=[1], backend="fake", ray="127.0.0.1:9")


@pytest.mark.slow
def test_ray_run_equals_plain_run_and_survives_a_killed_worker(tmp_path: Path) -> None:
    """Two actors on a local 2-CPU cluster; one is killed (SIGKILL, by its PID) while it
    holds a question. Every sample is stored once, and the samples are the plain run's."""
    ray = pytest.importorskip("ray")
    from ttscale.evaluation.api import _backend_options, evaluate
    from ttscale.evaluation.distributed import run_on_ray
    from ttscale.evaluation.options import model_identity, select_problems

    common: dict[str, Any] = {"ns": [1, 2], "limit": 4, "model": "smollm2-135m",
                              "max_tokens": 48, "report_files": False}
    evaluate("gsm8k", tmp_path / "plain", concurrency=1, threads=1, **common)

    cfg = EvalConfig(ns=(1, 2), max_tokens=48)
    problems = select_problems("gsm8k", "test", 4, None, None, None, None)
    name, sha = model_identity("llamacpp", "smollm2-135m", None)
    from ttscale.evaluation.harness import run_settings

    settings = run_settings(cfg, model=name, model_sha256=sha, dataset="gsm8k", split="test")
    pids: list[int] = []
    lost: list[str] = []
    killed = threading.Event()

    def started(actors: list[Any]) -> None:
        pids.extend(ray.get([a.pid.remote() for a in actors]))

    def tick(t: Any) -> None:
        # the first question is back: both workers hold one now; kill one mid-question
        if t.done >= 1 and not killed.is_set():
            killed.set()
            os.kill(pids[0], signal.SIGKILL)

    options = _backend_options(cfg, "llamacpp", "smollm2-135m", None, 1, {}, per_worker=True)
    try:
        with Store.open(tmp_path / "ray", settings) as store:
            outcome = run_on_ray(True, cfg, store, problems, backend="llamacpp",
                                 options=options, sha=sha, workers=2, on_tick=tick,
                                 on_start=started, on_lost=lost.append)
            # run again: every question is complete, so none is sent and no actor starts
            again = run_on_ray(True, cfg, store, problems, backend="llamacpp",
                               options=options, sha=sha, workers=2,
                               on_start=lambda _a: pytest.fail("an actor started"))
            assert again.new_samples == 0
    finally:
        ray.shutdown()
    assert killed.is_set() and lost, "the worker was not killed while it held a question"
    assert outcome.new_samples == 8
    ray_rows, plain_rows = stored(tmp_path / "ray"), stored(tmp_path / "plain")
    assert len(ray_rows) == len(set(ray_rows)) == 8  # 4 questions x 2 samples, once each
    assert ray_rows == plain_rows
    results = stored(tmp_path / "ray", "SELECT question_id, strategy, n, seed, answer "
                                       "FROM results ORDER BY question_id, n")
    assert results == stored(tmp_path / "plain", "SELECT question_id, strategy, n, seed, "
                                                 "answer FROM results ORDER BY question_id, n")


@pytest.mark.slow
def test_ray_verifier_pool_stores_the_in_process_verifiers_scores(tmp_path: Path) -> None:
    """One question actor and one verifier actor (self_judge on the 135M model) on a local
    cluster: the question actor scores through the pool, and the run stores exactly the
    scores (and their usage) of a plain run whose verifier runs in-process. A verifier
    actor that cannot start ends the run with the verifier's own error."""
    ray = pytest.importorskip("ray")
    from ttscale.evaluation.api import _backend_options, evaluate
    from ttscale.evaluation.distributed import run_on_ray
    from ttscale.evaluation.harness import run_settings
    from ttscale.evaluation.options import model_identity, select_problems
    from ttscale.evaluation.verifier_pool import start_pool, wait_started

    # one llama.cpp slot: two judge prompts decoded in one batch or in two (as they happen
    # to arrive) give log-probabilities a few percent apart, so that even two plain runs
    # can store different scores; one at a time, every run stores the same
    one_slot = {"parallel": 1}
    evaluate("gsm8k", tmp_path / "plain", ns=[1, 2], limit=2, model="smollm2-135m",
             max_tokens=24, strategies="weighted_best_of_n", verifier="self_judge",
             concurrency=1, threads=1, report_files=False, backend_options=one_slot)
    cfg = EvalConfig(strategies=("weighted_best_of_n",), ns=(1, 2), max_tokens=24,
                     verifier="self_judge", concurrency=1)
    problems = select_problems("gsm8k", "test", 2, None, None, None, None)
    name, sha = model_identity("llamacpp", "smollm2-135m", None)
    settings = run_settings(cfg, model=name, model_sha256=sha, dataset="gsm8k", split="test")
    options = _backend_options(cfg, "llamacpp", "smollm2-135m", None, 1, one_slot,
                               per_worker=True)
    scorers: list[str] = []
    try:
        with Store.open(tmp_path / "ray", settings) as store:
            run_on_ray(True, cfg, store, problems, backend="llamacpp", options=options,
                       sha=sha, workers=1, verifier_workers=1,
                       on_start=lambda a: scorers.extend(ray.get([w.scorer.remote()
                                                                   for w in a])))
        # a verifier that cannot be built on the backend says why, not that an actor died
        with pytest.raises(ConfigError, match="the sprm verifier reads the policy's hidden"):
            wait_started(ray, start_pool(ray, 1, 0, "sprm", "fake", {}))
    finally:
        ray.shutdown()
    assert scorers == ["VerifierPool"]
    ray_scores = _scores(stored(tmp_path / "ray", SCORES))
    assert len(ray_scores) == 4  # 2 questions x 2 samples
    assert ray_scores == _scores(stored(tmp_path / "plain", SCORES))
    assert stored(tmp_path / "ray") == stored(tmp_path / "plain")


def _one_line_error(*args: str) -> str:
    import shutil
    import subprocess

    exe = Path(sys.executable).parent / "ttscale"
    cmd = [str(exe) if exe.exists() else str(shutil.which("ttscale")), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("error: "), proc.stderr
    return lines[-1]


def test_the_cli_names_an_unreachable_ray_address_and_a_missing_vllm(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    line = _one_line_error("eval", "--dataset", "gsm8k", "--limit", "1", "--n", "1",
                           "--backend", "fake", "--ray-address", "127.0.0.1:9",
                           "--out", str(tmp_path / "a"))
    assert "no Ray cluster answers at 127.0.0.1:9" in line and "--ray-address" in line
    try:
        import vllm  # noqa: F401
    except ImportError:
        line = _one_line_error("eval", "--dataset", "gsm8k", "--limit", "1", "--n", "1",
                               "--backend", "vllm", "--model", "Qwen/Qwen2.5-1.5B-Instruct",
                               "--out", str(tmp_path / "b"))
        assert "pip install 'ttscale[vllm]'" in line
