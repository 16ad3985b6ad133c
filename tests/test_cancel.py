"""Cancelling work in flight, and samples that do not depend on what ran before.

The logic on the scripted backend; the real path with SmolLM2-135M: the llama.cpp backend
stopping a batch at its next token, streamed samples equal to whole ones, the same seeded
request giving the same samples, and ``ttscale solve`` run as a user runs it and
interrupted with Ctrl-C (SIGINT) once generation has started.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ttscale import solve
from ttscale.answers import solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.cancel import Cancel, current
from ttscale.errors import Cancelled
from ttscale.params import SamplingParams

Q = "Tom has 3 apples and buys 5 more. How many apples does he have now?"
LONG = "Write a very long story about a dragon who learns arithmetic, in many chapters."


# -- the token and solve, on the scripted backend ------------------------------------------


def test_a_cancelled_solve_stops_in_the_middle_of_a_call() -> None:
    token = Cancel()
    threading.Timer(0.3, token.set, args=("the client left",)).start()
    start = time.perf_counter()
    with pytest.raises(Cancelled, match="the client left"):
        solve(Q, backend=FakeBackend(delay=5.0), strategy="majority", n=2, cancel=token)
    assert time.perf_counter() - start < 1.0  # not the 5 s the call takes
    assert current() is None  # the scope ends with the solve


def test_a_solve_cancelled_before_it_starts_spends_nothing() -> None:
    token, backend = Cancel(), FakeBackend()
    token.set()
    with pytest.raises(Cancelled):
        solve(Q, backend=backend, strategy="majority", n=2, cancel=token)
    assert backend.calls == []


def test_traces_are_shown_as_they_are_generated() -> None:
    seen: list[tuple[int, str]] = []
    r = solve(Q, backend=FakeBackend(responses=["so \\boxed{8}", "it is \\boxed{8}"]),
              strategy="adaptive_majority:batch=2", n=6, on_text=lambda i, t: seen.append((i, t)))
    texts = {i: "".join(t for j, t in seen if j == i) for i in {i for i, _ in seen}}
    assert texts == {i: trace.text for i, trace in enumerate(r.traces)}


# -- the real path: llama.cpp ---------------------------------------------------------------


def _busy_slots(backend: object) -> int:
    slots = httpx.get(backend.address + "/slots", timeout=10).json()  # type: ignore[attr-defined]
    return sum(bool(s.get("is_processing")) for s in slots)


@pytest.mark.slow
def test_cancel_stops_a_llamacpp_batch_at_its_next_token(small_backend: object) -> None:
    token = Cancel()
    pieces: list[str] = []
    outcome: list[object] = []

    def run() -> None:
        with token.scope():
            try:
                small_backend.generate_streamed(  # type: ignore[attr-defined]
                    solve_prompt(LONG), SamplingParams(n=4, max_tokens=1000, seed=1),
                    lambda i, piece: pieces.append(piece))
                outcome.append("finished")
            except Cancelled:
                outcome.append(time.perf_counter())

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 300
    while len(pieces) < 8 and time.monotonic() < deadline:  # decoding has begun
        time.sleep(0.05)
    assert pieces, "no token came"
    stopped = time.perf_counter()
    token.set("test")
    worker.join(10)
    assert outcome and outcome[0] != "finished"
    assert isinstance(outcome[0], float) and outcome[0] - stopped < 2.0
    deadline = time.monotonic() + 2.0
    while _busy_slots(small_backend) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _busy_slots(small_backend) == 0  # llama.cpp dropped the requests


@pytest.mark.slow
def test_streamed_samples_are_the_whole_ones(small_backend: object) -> None:
    prompt = solve_prompt(Q)
    params = SamplingParams(n=3, max_tokens=48, seed=3)
    pieces: dict[int, list[str]] = {}
    streamed = small_backend.generate_streamed(  # type: ignore[attr-defined]
        prompt, params, lambda i, piece: pieces.setdefault(i, []).append(piece))
    # kept log-probabilities make the backend ask for whole answers
    whole = small_backend.generate([prompt], params.with_(logprobs=True))  # type: ignore[attr-defined]
    for s, w in zip(streamed.generations[0], whole.generations[0], strict=True):
        assert (s.text, s.completion_tokens, s.finish_reason, s.seed) == \
            (w.text, w.completion_tokens, w.finish_reason, w.seed)
    assert ["".join(pieces[i]) for i in range(3)] == [g.text for g in streamed.generations[0]]


@pytest.mark.slow
def test_a_seeded_request_gives_the_same_samples_alone_and_beside_others(
        small_backend: object) -> None:
    """The prompt cache used to change the samples once a prompt had been seen: the first
    request after start answered differently from the identical ones after it."""
    params = SamplingParams(n=3, max_tokens=40, seed=7)

    def texts() -> list[str]:
        out = small_backend.generate([solve_prompt(Q)], params)  # type: ignore[attr-defined]
        return [g.text for g in out.generations[0]]

    first, again = texts(), texts()
    other = threading.Thread(target=small_backend.generate, args=(  # type: ignore[attr-defined]
        [solve_prompt(LONG)], SamplingParams(n=2, max_tokens=60, seed=11)))
    other.start()
    beside = texts()
    other.join()
    assert first == again == beside


# -- the real path: ttscale solve interrupted --------------------------------------------------


def _entry_point() -> str:
    local = Path(sys.executable).parent / "ttscale"
    found = str(local) if local.exists() else shutil.which("ttscale")
    assert found, "the ttscale entry point is not installed: pip install -e ."
    return found


@pytest.fixture
def terminal_solve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[bytes]]]:
    """``ttscale solve`` on the 135M model with a long answer, stderr on a terminal (so the
    phase shows), SIGINT at its default as in a terminal's foreground process."""
    env = {**os.environ, "TTSCALE_CACHE": str(tmp_path / "cache"), "COLUMNS": "120"}
    env.pop("TTSCALE_DEBUG", None)
    master, slave = pty.openpty()
    drawn: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            drawn.append(chunk)

    proc = subprocess.Popen(
        [_entry_point(), "solve", LONG, "--model", "smollm2-135m", "-n", "4",
         "--max-tokens", "1500", "--threads", "2"],
        stdout=subprocess.PIPE, stderr=slave, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield proc, drawn
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
        os.close(master)


def _interrupt(proc: subprocess.Popen[bytes], drawn: list[bytes], times: int) -> float:
    """Wait until the samples are being drawn, send SIGINT ``times`` (0.1 s apart); the
    seconds from the first to the exit."""
    deadline = time.monotonic() + 600
    while b"sampling" not in b"".join(drawn):
        assert proc.poll() is None, b"".join(drawn)
        assert time.monotonic() < deadline, "solve never started sampling"
        time.sleep(0.1)
    time.sleep(3)  # well into decoding: the prompt is evaluated, tokens are coming
    assert proc.poll() is None
    start = time.perf_counter()
    for k in range(times):
        if k:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    return time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_exits_within_two_seconds_without_a_traceback(
        terminal_solve: tuple[subprocess.Popen[bytes], list[bytes]], times: int) -> None:
    proc, drawn = terminal_solve
    seconds = _interrupt(proc, drawn, times)
    time.sleep(0.2)  # the last output reaches the reader
    said = b"".join(drawn).decode(errors="replace")
    assert proc.returncode == 130, said
    assert seconds < 2.0, f"exited {seconds:.2f} s after Ctrl-C"
    assert "Traceback" not in said and "Exception ignored" not in said, said
    assert said.count("interrupted") == 1, said
    assert proc.stdout is not None and proc.stdout.read() == b""
