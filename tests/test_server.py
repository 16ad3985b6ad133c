"""The OpenAI-compatible server, live on 127.0.0.1, driven by the official ``openai`` client.

Every server runs uvicorn in a background thread over a scripted ``FakeBackend``; a
``delay`` on the fake makes it as slow as needed for streaming, queue and timeout tests.
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.registry import strategies
from ttscale.server.protocol import ChatCompletion, Completion
from ttscale.server.run import Background, exposure_warning, is_loopback, keys_from
from ttscale.server.service import ModelNotFound, Settings, plan, split_model
from ttscale.solve import solve
from ttscale.types import Prompt

SCRIPT = ["Step one.\n\nSo \\boxed{4}.", "Hmm.\n\n\\boxed{5}", "Thus \\boxed{4.0}."]
Q = "What is 2+2?"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": Q}]


def fake(**kw: Any) -> FakeBackend:
    return FakeBackend(responses=SCRIPT, **kw)


@contextmanager
def running(backend: FakeBackend | None = None, **settings: Any) -> Iterator[Background]:
    with Background(backend or fake(), Settings(**settings)) as srv:
        yield srv


def client(srv: Background, key: str = "unused", **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)  # a retry would hide the status under test
    return openai.OpenAI(base_url=srv.url, api_key=key, timeout=60, **kw)


@pytest.fixture(scope="module")
def srv() -> Iterator[Background]:
    with running(max_budget=100_000) as s:
        yield s


@pytest.fixture
def oa(srv: Background) -> openai.OpenAI:
    return client(srv)


# -- answers ------------------------------------------------------------------------------


def test_chat_majority_counts_every_token(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(model="majority@3/fake", messages=USER)
    direct = solve(Q, backend=fake(), strategy="majority", n=3)
    # the content is the first trace of the winning class; usage counts all three samples
    assert r.choices[0].message.content == direct.traces[0].text
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "majority@3/fake"
    assert r.usage is not None
    assert r.usage.prompt_tokens == direct.usage.prompt_tokens
    assert r.usage.completion_tokens == direct.usage.completion_tokens
    info = r.model_extra["ttscale"]  # type: ignore[index]
    assert info["strategy"] == "majority" and info["n"] == 3 and info["answer"] == "4"
    assert [(c["answer"], c["votes"], c["traces"]) for c in info["classes"]] == [
        ("4", 2, [0, 2]), ("5", 1, [1])]
    ChatCompletion.model_validate(r.model_dump())  # the documented schema holds


def test_completions(oa: openai.OpenAI) -> None:
    r = oa.completions.create(model="greedy/fake", prompt=Q, max_tokens=3)
    assert r.object == "text_completion"
    assert r.choices[0].text == "Step one. So"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3
    assert r.model_extra["ttscale"]["strategy"] == "greedy"  # type: ignore[index]
    Completion.model_validate(r.model_dump())


def test_models(oa: openai.OpenAI) -> None:
    ids = [m.id for m in oa.models.list()]
    assert ids[0] == "fake" and "majority@8/fake" in ids and "greedy/fake" in ids
    assert oa.models.retrieve("majority@4/fake").id == "majority@4/fake"
    with pytest.raises(openai.NotFoundError, match="not served here"):
        oa.models.retrieve("gpt-4o")


@pytest.mark.parametrize(("model", "extra", "strategy", "n"), [
    ("fake", {}, "majority", 8),  # the server default
    ("fake", {"reasoning_effort": "low"}, "auto", 2),  # no plan for fake: adaptive, <= 2
    ("fake", {"reasoning_effort": "minimal"}, "greedy", 1),
    ("majority@4/fake", {"reasoning_effort": "high"}, "majority", 4),  # name beats effort
    ("majority@4", {"extra_body": {"ttscale": {"n": 5}}}, "majority", 5),  # ttscale beats name
    ("greedy", {"extra_body": {"ttscale": {"strategy": "majority@6"}}}, "majority", 6),
])
def test_strategy_choice_precedence(oa: openai.OpenAI, model: str, extra: dict[str, Any],
                                    strategy: str, n: int) -> None:
    r = oa.chat.completions.create(model=model, messages=USER, **extra)
    info = r.model_extra["ttscale"]
    assert (info["strategy"], info["n"]) == (strategy, n)


def test_full_parameters_in_extra_body(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(
        model="fake", messages=USER, temperature=0.2, seed=7,
        extra_body={"ttscale": {"strategy": "best_of_n", "n": 3, "verifier": "self_judge",
                                "traces": True, "budget": 20_000}})
    info = r.model_extra["ttscale"]  # type: ignore[index]
    assert info["verifier"] == "self_judge" and info["calls"] == 4  # 1 sampling + 3 judging
    assert len(info["traces"]) == 3 and all(t["score"] is not None for t in info["traces"])
    assert r.usage is not None and not info["budget_limited"]


def test_n_returns_the_top_answer_classes(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(model="majority@3", messages=USER, n=4)
    # two classes exist: the winner first, then the runner-up; no padding
    assert [c.message.content for c in r.choices] == ["Step one. So \\boxed{4}.",
                                                      "Hmm. \\boxed{5}"]
    assert [c.index for c in r.choices] == [0, 1]


# -- streaming ----------------------------------------------------------------------------


def test_stream_shows_progress_as_it_happens() -> None:
    with running(fake(delay=0.4, yes_logprob=-0.1)) as s:
        stream = client(s).chat.completions.create(
            model="best_of_n@2", messages=USER, stream=True)
        start = time.perf_counter()
        seen: list[tuple[float, Any]] = [(time.perf_counter() - start, c) for c in stream]
    progress = [(t, c.model_extra["ttscale"]) for t, c in seen
                if (c.model_extra or {}).get("ttscale", {}).get("event") == "progress"]
    content = [(t, c.choices[0].delta.content) for t, c in seen
               if c.choices and c.choices[0].delta.content]
    assert [p["message"] for _, p in progress] == ["sampling 2 traces", "verifying 2 traces"]
    # each event arrives as its phase begins: sampling at once, verifying after the 0.4 s
    # sampling call, the answer after the 0.4 s verifying call
    assert progress[1][0] - progress[0][0] >= 0.3
    assert content[0][0] - progress[1][0] >= 0.3
    assert "".join(text for _, text in content) == "Step one. So \\boxed{4}."
    last = seen[-1][1]
    assert last.choices[0].finish_reason == "stop" and last.usage.total_tokens > 0
    assert last.model_extra["ttscale"]["event"] == "result"


def test_stream_wire_format(srv: Background) -> None:
    body = {"model": "majority@3", "messages": USER, "stream": True}
    with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    events = [c for c in chunks if "ttscale" in c and c["ttscale"]["event"] != "result"]
    assert events and all(c["choices"][0]["delta"] == {} for c in events)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Step one. So \\boxed{4}."
    assert sum(1 for c in chunks if c.get("usage")) == 1


def test_stream_completions_with_include_usage(oa: openai.OpenAI) -> None:
    chunks = list(oa.completions.create(model="majority@3", prompt=Q, stream=True,
                                        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Step one. So \\boxed{4}."
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and not chunks[-1].choices


def test_client_leaving_a_stream_stops_the_solve() -> None:
    backend = fake(delay=0.5, yes_logprob=-0.1)
    with running(backend) as s:
        stream = client(s).chat.completions.create(
            model="best_of_n@2", messages=USER, stream=True)
        for chunk in stream:
            if (chunk.model_extra or {}).get("ttscale", {}).get("event") == "progress":
                break  # gone while the samples are drawn
        stream.close()
        time.sleep(1.5)
        # the sampling call ran; the two verifier calls after it never did
        assert len(backend.calls) == 1
        assert s.server.config.app.state.service.admitted == 0


# -- limits and errors ----------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "status", "says"), [
    ({"model": "foo@4"}, 400, "unknown strategy 'foo': choose one of"),
    ({"model": "majority@x"}, 400, "the number after @ must be a positive whole number"),
    ({"model": "gpt-4o"}, 404, "model 'gpt-4o' is not served here: use 'fake'"),
    ({"model": "majority@33"}, 400, "33 samples is above this server's limit of 32"),
    ({"extra_body": {"ttscale": {"n": 99}}}, 400, "99 samples is above this server's limit"),
    ({"max_tokens": 5000}, 400, "max_tokens 5000 is above this server's limit of 4096"),
    ({"extra_body": {"ttscale": {"budget": 200_000}}}, 400, "budget 200000 is above"),
    ({"extra_body": {"ttscale": {"budget": 10}}}, 400, "the budget cannot pay for one sample"),
    ({"n": 40}, 400, "n must be between 1 and 32 choices"),
    ({"temperature": -1}, 400, "temperature: input should be greater than or equal to 0"),
    ({"extra_body": {"temprature": 0.5}}, 400, "unknown field 'temprature'"),
    ({"extra_body": {"ttscale": {"strategyy": "x"}}}, 400, "unknown field 'ttscale.strategyy'"),
    ({"messages": [{"role": "system", "content": "hi"}]}, 400, "has no user message"),
    ({"messages": [{"role": "user", "content": "  "}]}, 400, "the question is empty"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "tool calls are not supported"),
    ({"logprobs": True}, 400, "logprobs are not returned by ttscale"),
])
def test_errors_are_openai_shaped_with_one_clear_sentence(
        oa: openai.OpenAI, kwargs: dict[str, Any], status: int, says: str) -> None:
    args: dict[str, Any] = {"model": "fake", "messages": USER, **kwargs}
    with pytest.raises(openai.APIStatusError) as err:
        oa.chat.completions.create(**args)
    assert err.value.status_code == status
    body = err.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert says in body["message"], body["message"]
    assert "\n" not in body["message"]


@pytest.mark.parametrize(("method", "path", "content", "status", "says"), [
    ("POST", "/chat/completions", b"{nope", 400, "the body is not valid JSON"),
    ("POST", "/chat/completions", b"[1]", 400, "the body must be a JSON object"),
    ("GET", "/chat/completions", b"", 405, "GET is not allowed on /v1/chat/completions: use POST"),
    ("POST", "/embeddings", b"{}", 404, "ttscale does not serve embeddings: it answers "
                                        "/v1/chat/completions, /v1/completions and /v1/models"),
    ("GET", "/../chat", b"", 404, "there is no /chat here: ttscale answers /v1/chat/"),
    # a client that writes NaN (Python's json does): refused, also in an ignored field
    ("POST", "/chat/completions", b'{"model": "fake", "messages": [{"role": "user", '
     b'"content": "2+2?"}], "presence_penalty": NaN}', 400,
     "presence_penalty: input should be a finite number"),
])
def test_http_level_errors(srv: Background, method: str, path: str, content: bytes,
                           status: int, says: str) -> None:
    r = httpx.request(method, srv.url + path, content=content,
                      headers={"content-type": "application/json"})
    assert r.status_code == status
    assert says in r.json()["error"]["message"]


def test_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    assert keys_from(["k1"], "k2, ,k1") == ("k1", "k2")
    with running(api_keys=("k1", "k2")) as s:
        with pytest.raises(openai.AuthenticationError) as err:
            client(s, key="sk-wrong-key-123").models.list()
        assert err.value.status_code == 401
        assert "API key is missing or wrong" in err.value.message
        assert "sk-wrong-key-123" not in err.value.response.text  # never echoed
        r = httpx.post(s.url + "/chat/completions", json={"model": "greedy", "messages": USER})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client(s, key="k2").chat.completions.create(
            model="greedy", messages=USER).choices
        assert httpx.get(s.url[:-3] + "/health").json()["status"] == "ok"  # open
        assert httpx.get(s.url[:-3] + "/metrics").status_code == 401
        assert httpx.get(s.url[:-3] + "/metrics",
                         headers={"Authorization": "Bearer k1"}).status_code == 200


def test_body_too_large() -> None:
    with running(max_body_bytes=2000) as s:
        with pytest.raises(openai.APIStatusError, match="larger than this server's limit "
                                                        "of 2000 bytes") as err:
            client(s).chat.completions.create(
                model="greedy", messages=[{"role": "user", "content": "x " * 3000}])
        assert err.value.status_code == 413

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"model": "greedy", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}]}'

        r = httpx.post(s.url + "/chat/completions", content=chunked(),
                       headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_full_queue_is_refused_with_429() -> None:
    with running(fake(delay=1.5), max_concurrency=1, max_queue=1) as s:
        oa = client(s)

        def ask(_: int) -> int:
            try:
                oa.chat.completions.create(model="greedy", messages=USER)
                return 200
            except openai.RateLimitError as exc:
                assert "the server is busy" in exc.message
                assert exc.response.headers["retry-after"] == "1"
                return 429

        with ThreadPoolExecutor(4) as pool:
            codes = sorted(pool.map(ask, range(4)))
        assert codes == [200, 200, 429, 429]  # one running, one waiting, two refused
        text = httpx.get(s.url[:-3] + "/metrics").text
        assert 'ttscale_requests_total{endpoint="/v1/chat/completions",status="429"} 2' in text


def test_timeout_is_504_and_not_retried() -> None:
    backend = fake(delay=1.0)
    with running(backend, timeout=0.3) as s:
        oa = client(s, max_retries=2)  # the client's default: the server says not to retry
        t = time.perf_counter()
        with pytest.raises(openai.InternalServerError, match="longer than this server's "
                                                             "limit of 0.3 s") as err:
            oa.chat.completions.create(model="greedy", messages=USER)
        assert err.value.status_code == 504 and time.perf_counter() - t < 0.9
        time.sleep(1.0)
        assert len(backend.calls) == 1  # no retry reached the backend
        # in a stream the status is already 200: the error arrives as an event
        with pytest.raises(openai.APIError, match="longer than this server's limit"):
            list(oa.chat.completions.create(model="greedy", messages=USER,
                                            stream=True))


def test_timeout_while_queued_never_runs() -> None:
    # a backend that cannot be stopped mid-call (the scripted text takes 1 s to write):
    # the running request holds its slot past the queued one's deadline
    def slow(_p: Prompt, _i: int) -> str:
        time.sleep(1.0)
        return SCRIPT[0]

    backend = FakeBackend(script=slow)
    with running(backend, timeout=0.4, max_concurrency=1, max_queue=1) as s:
        service = s.server.config.app.state.service
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(client(s).chat.completions.create, model="greedy",
                                   messages=USER) for _ in range(2)]
            for f in futures:
                with pytest.raises(openai.InternalServerError, match="longer than"):
                    f.result()
        time.sleep(1.0)  # the running one finishes its call; the queued one never started
        assert len(backend.calls) == 1
        assert (service.admitted, service.running) == (0, 0)


def test_effort_levels_stay_within_the_server_limit() -> None:
    p = plan(question=Q, model="fake", served=["fake"], settings=Settings(max_n=16),
             effort="high")
    assert p.strategy == "auto:effort=high,n_max=16"  # the plan's high budget, <= 16 samples
    with pytest.raises(ConfigError, match="above this server's limit of 16"):
        plan(question=Q, model="majority@32", served=["fake"], settings=Settings(max_n=16))


def test_effort_levels_run_auto_and_a_named_strategy_beats_them() -> None:
    p = plan(question=Q, model="fake", served=["fake"], settings=Settings(), effort="low")
    assert (p.strategy, p.verifier, p.model) == ("auto:effort=low,n_max=32", None,
                                                 "auto:effort=low,n_max=32/fake")
    greedy = plan(question=Q, model="fake", served=["fake"], settings=Settings(), effort="none")
    assert (greedy.strategy, greedy.verifier) == ("greedy", None)
    named = plan(question=Q, model="majority@4/fake", served=["fake"], settings=Settings(),
                 effort="high")
    assert (named.strategy, named.n, named.verifier) == ("majority", 4, None)
    budgeted = plan(question=Q, model="auto:budget=3000/fake", served=["fake"],
                    settings=Settings())
    assert budgeted.strategy == "auto:budget=3000"
    # a count for a strategy that chooses its own samples would be ignored: refused
    with pytest.raises(ConfigError, match="auto chooses its own number of samples: drop the "
                       r"@N \(or n\), or cap them with auto:n_max=N"):
        plan(question=Q, model="auto@8/fake", served=["fake"], settings=Settings())
    with pytest.raises(ConfigError, match="greedy draws one sample"):
        plan(question=Q, model="fake", served=["fake"], settings=Settings(), strategy="greedy",
             n=4)
    with pytest.raises(ConfigError, match="greedy draws one sample"):
        Settings(default_strategy="greedy@4")


def test_metrics_count_requests_tokens_and_latency() -> None:
    with running() as s:
        oa = client(s)
        total = 0
        for _ in range(3):
            r = oa.chat.completions.create(model="majority@3", messages=USER)
            assert r.usage is not None
            total += r.usage.completion_tokens
        text = httpx.get(s.url[:-3] + "/metrics").text
    assert 'ttscale_requests_total{endpoint="/v1/chat/completions",status="200"} 3' in text
    assert f'ttscale_tokens_total{{kind="completion"}} {total}' in text
    assert 'ttscale_request_seconds_count{endpoint="/v1/chat/completions"} 3' in text
    assert "ttscale_queue_length 0" in text and "ttscale_requests_running 0" in text


def test_graceful_shutdown_finishes_the_request_in_flight() -> None:
    s = Background(fake(delay=1.0), Settings()).start()
    service = s.server.config.app.state.service
    answers: list[str | None] = []
    asker = threading.Thread(target=lambda: answers.append(client(s).chat.completions.create(
        model="greedy", messages=USER).choices[0].message.content))
    asker.start()
    while service.running == 0:
        time.sleep(0.01)
    s.stop()  # as SIGTERM: stop accepting, finish what is in flight
    asker.join(10)
    assert answers == ["Step one. So \\boxed{4}."]
    with socket.socket() as sock:  # no longer listening
        assert sock.connect_ex(("127.0.0.1", s.port)) != 0


# -- planning, without a server ----------------------------------------------------------


def test_model_names() -> None:
    served = ["qwen", "Qwen/Qwen2.5-1.5B"]
    assert split_model("majority@8/qwen", served) == ("majority@8", "qwen")
    assert split_model("greedy/Qwen/Qwen2.5-1.5B", served) == ("greedy", "Qwen/Qwen2.5-1.5B")
    assert split_model("majority@2", served) == ("majority@2", "qwen")
    with pytest.raises(ModelNotFound):
        split_model("Qwen/other", served)


def test_plan_rejects_text_that_is_not_unicode() -> None:
    with pytest.raises(ConfigError, match="not valid Unicode"):
        plan(question="\ud800?", model="fake", served=["fake"], settings=Settings())


def test_settings_and_hosts() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        Settings(default_strategy="nope@4")
    with pytest.raises(ConfigError, match="draws more samples than max_n 4"):
        Settings(max_n=4)  # the default majority@8
    assert "sekrit" not in repr(Settings(api_keys=("sekrit",)))
    assert is_loopback("::1") and not is_loopback("example.com")
    warning = exposure_warning("0.0.0.0", ())
    assert warning is not None and "without an API key" in warning and "\n" not in warning


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_command_starts_and_stops_on_sigterm() -> None:
    port = _free_port()
    env = {**os.environ, "TTSCALE_API_KEYS": "k1,k2"}
    proc = subprocess.Popen([sys.executable, "-m", "ttscale", "serve", "--backend",
                             "fake", "--port", str(port), "--default-strategy", "majority@4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = openai.OpenAI(base_url=url + "/v1", api_key="k2").chat.completions.create(
            model="fake", messages=USER)
        assert r.model_extra["ttscale"]["n"] == 4  # type: ignore[index]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the signal so the exit status reports it
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    assert "k1" not in err and "k2" not in err  # keys are never logged


def test_serve_command_refuses_bad_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "ttscale", "serve", "--backend",
                           "fake", "--default-strategy", "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown strategy 'nope': choose one of " + ", ".join(strategies.names())]
