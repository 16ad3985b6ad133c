"""The evaluation controller at hundreds of requests in flight, against a real stand-in
OpenAI-compatible server on 127.0.0.1 (``bench/standin_server.py``): every sample stored
exactly once, the same rows as the threaded harness, questions in flight bounded, a Ctrl-C
that leaves a resumable store, and a server that stops answering mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttscale.errors import BackendError
from ttscale.evaluation import controller
from ttscale.evaluation.api import evaluate
from ttscale.evaluation.runs.writer import StoreWriter

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "bench" / "standin_server.py"
KEYS = "SELECT COUNT(*), COUNT(DISTINCT prompt_hash || ':' || sample_index) FROM generations"


def start_standin(*extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(STANDIN), "--tokens", "40", *extra],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["url"]


@pytest.fixture
def standin() -> Iterator[str]:
    proc, url = start_standin()
    yield url
    proc.terminate()
    proc.wait(10)


def query(run_dir: Path, sql: str) -> Any:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return db.execute(sql).fetchall()


def stored_so_far(run_dir: Path) -> int:
    """Samples stored so far; 0 while the run has not yet made its file or its tables."""
    if not (run_dir / "run.sqlite").exists():
        return 0
    try:
        return int(query(run_dir, KEYS)[0][0])
    except sqlite3.OperationalError:  # the file exists a moment before its schema does
        return 0


def test_256_in_flight_store_every_sample_once_as_the_threaded_path_does(
        standin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight = 0
    most = 0
    question = controller._Run.question

    async def counted(self: Any, problem: Any) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await question(self, problem)
        finally:
            in_flight -= 1

    monkeypatch.setattr(controller._Run, "question", counted)
    opts: dict[str, Any] = {"split": "train", "limit": 400, "ns": [1, 4, 8],
                            "backend": "openai", "base_url": standin, "resamples": 1,
                            "report_files": False}
    run = evaluate("gsm8k", tmp_path / "async", concurrency=256, **opts)
    assert run.outcome.new_samples == 3200
    assert query(tmp_path / "async", KEYS) == [(3200, 3200)]
    assert 200 <= most <= 256  # bounded by --concurrency, and it was reached

    # the threaded harness on the same questions: the same samples and result rows
    monkeypatch.setattr(controller, "usable", lambda _h: False)
    evaluate("gsm8k", tmp_path / "threads", concurrency=8, **{**opts, "limit": 40})
    rows = ("SELECT question_id, strategy, n, seed, answer, correct FROM results "
            "WHERE question_id IN (SELECT id FROM questions WHERE position < 40) "
            "ORDER BY question_id, n")
    samples = "SELECT prompt_hash, sample_index, text, token_logprobs FROM generations"
    assert query(tmp_path / "threads", rows) == query(tmp_path / "async", rows)
    threaded = set(query(tmp_path / "threads", samples))
    assert threaded <= set(query(tmp_path / "async", samples)) and len(threaded) == 320


def test_ctrl_c_mid_run_leaves_a_store_the_next_run_completes(standin: str,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ttscale", "eval", "--dataset", "gsm8k", "--split", "train",
           "--limit", "1500", "--n", "1,8", "--backend", "openai", "--base-url", standin,
           "--concurrency", "512", "--resamples", "1", "--out", str(out), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if stored_so_far(out) > 200:
            break
    # 12,000 samples: on an idle machine the run must still be going when Ctrl-C comes
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    kept, unique = query(out, KEYS)[0]
    assert 0 < kept == unique < 12000
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-500:]
    assert query(out, KEYS) == [(12000, 12000)]  # nothing lost, nothing twice
    assert f"{12000 - kept} samples generated now" in " ".join(rerun.stderr.split())


def test_a_server_that_stops_answering_fails_in_one_sentence_and_resumes(
        tmp_path: Path) -> None:
    proc, url = start_standin("--fail-after", "300")
    port = url.rsplit(":", 1)[1].split("/")[0]
    opts: dict[str, Any] = {"split": "train", "limit": 200, "ns": [1, 4],
                            "backend": "openai", "base_url": url, "resamples": 1,
                            "concurrency": 64, "report_files": False,
                            "backend_options": {"max_retries": 2, "backoff": 0.05}}
    try:
        with pytest.raises(BackendError, match=f"at {url}") as failure:
            evaluate("gsm8k", tmp_path, **opts)
        assert "\n" not in str(failure.value)
    finally:
        proc.terminate()
        proc.wait(10)
    kept = query(tmp_path, KEYS)[0][0]
    assert 0 < kept < 800
    proc, again = start_standin("--port", port)  # the fleet member is back
    try:
        run = evaluate("gsm8k", tmp_path, **{**opts, "base_url": again})
    finally:
        proc.terminate()
        proc.wait(10)
    assert run.outcome.new_samples == 800 - kept
    assert query(tmp_path, KEYS) == [(800, 800)]


def test_writer_commits_what_is_queued_when_closed(tmp_path: Path) -> None:
    from ttscale.evaluation.runs.store import ResultRow, Store
    from ttscale.types import Usage

    with Store.open(tmp_path, {}) as store:
        writer = StoreWriter(store, max_pending=4)
        futures = [writer.submit(results=[ResultRow("eval", f"q{i}", "majority", 1, 0, "4",
                                                    True, Usage())]) for i in range(50)]
        writer.close()
        assert all(f.done() for f in futures) and len(store.results()) == 50
        assert writer.stats.commits < 50  # batched


def test_evaluate_from_inside_a_running_event_loop(standin: str, tmp_path: Path) -> None:
    """A notebook or an async app calls evaluate with its own loop running."""
    import asyncio

    async def inside() -> int:
        run = evaluate("gsm8k", tmp_path, limit=5, ns=[1, 2], backend="openai",
                       base_url=standin, report_files=False)
        return run.outcome.new_samples

    assert asyncio.run(inside()) == 10


def test_several_base_urls_share_the_requests_and_store_every_sample_once(
        tmp_path: Path) -> None:
    """Two stand-in servers behind repeated --base-url: both answer, and every sample is
    stored exactly once; a comma-separated list is the same fleet."""
    import httpx

    servers = [start_standin(), start_standin()]
    urls = [url for _proc, url in servers]
    try:
        cmd = [sys.executable, "-m", "ttscale", "eval", "--dataset", "gsm8k", "--split",
               "train", "--limit", "120", "--n", "1,4", "--backend", "openai",
               "--base-url", urls[0], "--base-url", urls[1], "--concurrency", "64",
               "--resamples", "1", "--out", str(tmp_path), "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-500:]
        assert query(tmp_path, KEYS) == [(480, 480)]
        answered = [httpx.get(url[: -len("/v1")] + "/stats").json() for url in urls]
        assert all(a["requests"] > 30 for a in answered), answered  # both, about evenly
        assert sum(a["completions"] for a in answered) == 480  # none asked twice

        # the same fleet, comma-separated: the same cache key, so nothing is generated again
        again = evaluate("gsm8k", tmp_path, split="train", limit=120, ns=[1, 4],
                         backend="openai", base_url=",".join(urls), resamples=1,
                         concurrency=64, report_files=False)
        assert again.outcome.new_samples == 0 and again.outcome.cached_samples == 480
    finally:
        for proc, _url in servers:
            proc.terminate()
            proc.wait(10)


def test_a_fleet_member_that_stops_answering_is_named(tmp_path: Path) -> None:
    good, bad = start_standin(), start_standin("--fail-after", "40")
    try:
        with pytest.raises(BackendError) as failure:
            evaluate("gsm8k", tmp_path, split="train", limit=100, ns=[1, 4],
                     backend="openai", base_url=[good[1], bad[1]], resamples=1,
                     concurrency=32, report_files=False,
                     backend_options={"max_retries": 1, "backoff": 0.05})
        assert f"at {bad[1]}" in str(failure.value) and good[1] not in str(failure.value)
    finally:
        for proc, _url in (good, bad):
            proc.terminate()
            proc.wait(10)
    assert 0 < query(tmp_path, KEYS)[0][0] < 400  # what was answered is kept


def test_a_backend_never_closed_exits_without_a_word(standin: str) -> None:
    code = ("from ttscale.backends.openai import OpenAIBackend\n"
            "from ttscale.params import SamplingParams\n"
            "def use():\n"
            f"    be = OpenAIBackend(base_url={standin!r})\n"
            "    return be.generate(['x'], SamplingParams(n=2, max_tokens=8))\n"
            "print(len(use().generations[0]))\n"
            "import gc; gc.collect()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "2"
    assert done.stderr == ""  # no "Unclosed client session" from aiohttp


def test_a_failed_run_leaves_no_unread_task_errors(tmp_path: Path) -> None:
    """The run stops on the first failure; the requests failing beside it are not logged
    at exit as "Task exception was never retrieved"."""
    proc, url = start_standin("--fail-after", "100")
    code = ("import gc\n"
            "from ttscale.errors import BackendError\n"
            "from ttscale.evaluation.api import evaluate\n"
            "try:\n"
            f"    evaluate('gsm8k', {str(tmp_path)!r}, split='train', limit=200, ns=[1, 4],\n"
            f"             backend='openai', base_url={url!r}, resamples=1, concurrency=64,\n"
            "             report_files=False,\n"
            "             backend_options={'max_retries': 1, 'backoff': 0.05})\n"
            "except BackendError as exc:\n"
            "    print('failed:', exc)\n"
            "gc.collect()\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
    finally:
        proc.terminate()
        proc.wait(10)
    assert done.returncode == 0 and done.stdout.startswith("failed: ")
    assert "never retrieved" not in done.stderr, done.stderr[-800:]
