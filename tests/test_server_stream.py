"""The server shows the work as it happens and drops the work nobody waits for.

- Streams carry the traces as ``reasoning_content`` deltas while they are decoded, then the
  voted answer as content: read with the official ``openai`` client and with a raw SSE
  reader.
- A client that leaves cancels its generation at the next token; shutdown waits for live
  clients only, and not past ``shutdown_timeout``.
- Error sentences name request fields, never CLI flags; ``serve`` on a port in use fails
  before loading anything.

Logic on the scripted backend in a background server; the real path with a real
``ttscale serve`` subprocess on 127.0.0.1 and the 135M model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.server.run import Background
from ttscale.server.service import Settings

Q = "What is 2+2?"
USER = [{"role": "user", "content": Q}]
LONG = [{"role": "user", "content": "Write a very long story about a dragon who learns "
                                    "arithmetic, in many chapters."}]


@contextmanager
def running(backend: FakeBackend, **settings: Any) -> Iterator[Background]:
    with Background(backend, Settings(**settings)) as srv:
        yield srv


def sse(response: httpx.Response) -> Iterator[tuple[float, dict[str, Any]]]:
    """(seconds since the reader started, chunk) for each SSE data line but [DONE]."""
    start = time.perf_counter()
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield time.perf_counter() - start, json.loads(line[6:])


def reasoning(chunk: dict[str, Any]) -> str:
    return "".join(c["delta"].get("reasoning_content") or "" for c in chunk.get("choices", ()))


def content(chunk: dict[str, Any]) -> str:
    return "".join(c["delta"].get("content") or "" for c in chunk.get("choices", ()))


def event(chunk: dict[str, Any]) -> str | None:
    return (chunk.get("ttscale") or {}).get("event")


# -- streamed work, scripted backend ------------------------------------------------------------


def test_traces_stream_as_reasoning_then_the_answer_as_content() -> None:
    script = ["one two three four so \\boxed{4}", "five six so \\boxed{4}",
              "seven so \\boxed{5}"]
    with running(FakeBackend(responses=script, delay=1.5)) as srv:
        body = {"model": "majority@3", "messages": USER, "stream": True}
        with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=30) as r:
            chunks = list(sse(r))
    sampling = next(t for t, c in chunks if (c.get("ttscale") or {}).get("message")
                    == "sampling 3 traces")
    first = next(t for t, c in chunks if reasoning(c))
    last_reasoning = max(t for t, c in chunks if reasoning(c))
    answer = next(t for t, c in chunks if content(c))
    # the first words come as they are decoded, well before the 1.5 s call ends
    assert first - sampling < 0.5
    assert answer >= last_reasoning and answer - sampling >= 1.4
    thinking = "".join(reasoning(c) for _, c in chunks)
    assert thinking == ("[sample 1]\none two three four so \\boxed{4}\n\n"
                        "[sample 2]\nfive six so \\boxed{4}\n\n[sample 3]\nseven so \\boxed{5}")
    assert "".join(content(c) for _, c in chunks) == "one two three four so \\boxed{4}"
    assert event(chunks[-1][1]) == "result"


def test_the_official_client_reads_reasoning_content() -> None:
    with running(FakeBackend(responses=["so \\boxed{4}"], delay=0.2)) as srv:
        oa = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0)
        stream: Any = oa.chat.completions.create(
            model="majority@2", messages=USER, stream=True)  # type: ignore[arg-type]
        deltas = [c.choices[0].delta for c in stream if c.choices]
    thinking = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    assert thinking == "[sample 1]\nso \\boxed{4}\n\n[sample 2]\nso \\boxed{4}"
    assert "".join(d.content or "" for d in deltas) == "so \\boxed{4}"


def test_completions_streams_carry_no_reasoning() -> None:
    with running(FakeBackend(responses=["so \\boxed{4}"])) as srv:
        body = {"model": "majority@2", "prompt": Q, "stream": True}
        with httpx.stream("POST", srv.url + "/completions", json=body, timeout=30) as r:
            chunks = [c for _, c in sse(r)]
    assert all("reasoning_content" not in json.dumps(c) for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "so \\boxed{4}"


# -- dropped work, scripted backend ---------------------------------------------------------


def test_a_client_leaving_cancels_the_call_in_flight() -> None:
    backend = FakeBackend(delay=30.0)
    with running(backend) as srv:
        service = srv.server.config.app.state.service
        body = {"model": "majority@4", "messages": USER, "stream": True}
        with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=30) as r:
            for _, chunk in sse(r):
                if event(chunk) == "progress":
                    break  # gone while the samples are drawn
        left = time.perf_counter()
        while service.running and time.perf_counter() - left < 5:
            time.sleep(0.02)
        assert service.running == 0 and time.perf_counter() - left < 1.0  # not 30 s
        assert service.admitted == 0


def test_shutdown_cancels_what_still_runs_after_its_grace() -> None:
    srv = Background(FakeBackend(delay=30.0), Settings(shutdown_timeout=1.0)).start()
    service = srv.server.config.app.state.service
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0).chat.completions \
                .create(model="greedy", messages=USER)  # type: ignore[arg-type]
        except Exception as exc:
            failed.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    while service.running == 0:
        time.sleep(0.01)
    start = time.perf_counter()
    srv.stop(timeout=20)
    assert time.perf_counter() - start < 4.0  # the grace, then a token's wait: not 30 s
    asker.join(10)
    assert failed and service.running == 0


# -- error sentences ------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "says"), [
    ("beam@8:width=3", "(e.g. 9 samples: @9 in the model name, or ttscale.n)"),
    ("majority:n=3", "set the number of samples with @N in the model name (or ttscale.n)"),
])
def test_http_errors_name_request_fields_not_cli_flags(model: str, says: str) -> None:
    with running(FakeBackend()) as srv:
        r = httpx.post(srv.url + "/chat/completions", json={"model": model, "messages": USER})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and says in message, message
    assert " -n" not in message and "--" not in message


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_on_a_port_in_use_fails_before_loading_the_model(tmp_path: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.perf_counter()
        # a model that is not installed: loading it would fail differently, and slowly
        proc = subprocess.run(
            [sys.executable, "-m", "ttscale", "serve", "--model", "qwen2.5-coder-0.5b",
             "--port", str(port)], capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "TTSCALE_CACHE": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use: stop what listens there or choose "
        "another with --port"]
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize(("args", "says"), [
    (["--host", "no.such.host.invalid", "--port", "0"],
     "cannot listen on 'no.such.host.invalid'"),
    (["--api-key", ""], "--api-key is empty: give a non-empty key, or leave --api-key out"),
])
def test_serve_refuses_a_host_or_key_it_cannot_use_before_loading(
        tmp_path: Any, args: list[str], says: str) -> None:
    """A host that is not this machine's (with --port 0 too), or an empty key (an unset
    variable in --api-key "$KEY" would otherwise serve without one)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ttscale", "serve", "--model", "qwen2.5-coder-0.5b", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "TTSCALE_CACHE": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr


# -- the real path: ttscale serve with the 135M model ----------------------------------------


@pytest.fixture
def real_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttscale", "serve", "--model", "smollm2-135m", "--port",
         str(port), "--threads", "2", "--parallel", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def first_token_seconds(url: str, model: str) -> float:
    """How long the model takes to its first token through this server: a whole request
    for one token per sample (the prompt evaluation, one decoding step, the overheads).
    Fresh prompts are evaluated in full every time, so a stream's first token cannot come
    sooner; the stream must add less than a second to it."""
    taken = []
    for _ in range(2):  # the slower of two: other work on the machine makes it vary
        start = time.perf_counter()
        r = httpx.post(url + "/v1/chat/completions", timeout=600,
                       json={"model": model, "messages": LONG, "max_tokens": 1})
        assert r.status_code == 200, r.text
        taken.append(time.perf_counter() - start)
    return max(taken)


@pytest.mark.slow
def test_a_real_server_streams_work_and_drops_it_when_the_client_leaves(
        real_server: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = real_server
    own = first_token_seconds(url, "majority@16")
    body = {"model": "majority@16", "messages": LONG, "stream": True, "max_tokens": 1500}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        sampling = first = None
        for t, chunk in sse(r):
            if (chunk.get("ttscale") or {}).get("message", "").startswith("sampling"):
                sampling = t
            if reasoning(chunk) and first is None:
                first = t
            if first is not None and t - first > 2:
                break  # the client goes away two seconds into the traces
    assert sampling is not None and first is not None
    assert first - sampling < own + 1.0, \
        f"first reasoning token {first - sampling:.2f} s in, the model's own {own:.2f} s"
    left = time.perf_counter()
    while httpx.get(url + "/health").json()["in_flight"] and time.perf_counter() - left < 10:
        time.sleep(0.1)
    assert httpx.get(url + "/health").json()["in_flight"] == 0
    assert time.perf_counter() - left < 3.0
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.perf_counter() - start < 5.0
    # uvicorn re-raises the signal after its clean shutdown: the CLI's code for Ctrl-C
    assert proc.returncode == 130, err
    assert "Application shutdown complete" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_official_client_sees_reasoning_within_a_second_of_the_first_token(
        real_server: tuple[subprocess.Popen[str], str]) -> None:
    _, url = real_server
    own = first_token_seconds(url, "majority@4")
    oa = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    stream: Any = oa.chat.completions.create(
        model="majority@4", messages=LONG, stream=True, max_tokens=400)  # type: ignore[arg-type]
    sampling = first = None
    start = time.perf_counter()
    for chunk in stream:
        now = time.perf_counter() - start
        if ((chunk.model_extra or {}).get("ttscale") or {}).get("message", "") \
                .startswith("sampling"):
            sampling = now
        if chunk.choices and getattr(chunk.choices[0].delta, "reasoning_content", None):
            first = now
            break
    stream.close()
    # the model's own first token, measured again: a busy machine varies between the two
    own = max(own, first_token_seconds(url, "majority@4"))
    assert sampling is not None and first is not None
    assert first - sampling < own + 1.0, \
        f"first reasoning token {first - sampling:.2f} s in, the model's own {own:.2f} s"
