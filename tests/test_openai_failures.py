"""The OpenAI-compatible backend's failures against scripted servers: one clear line each,
retried where a retry can help.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from scripted_openai import CHAT, App, FakeServer, Reply, Seen, backend, openai_app, sample_text

from ttscale.backends.openai import OpenAIBackend
from ttscale.errors import BackendError
from ttscale.params import SamplingParams

# --------------------------------------------------------------------------------------
# Failures: one clear line each


def test_429_is_retried_honouring_retry_after(serve: Callable[[App], FakeServer]) -> None:
    inner = openai_app()
    refusals = iter(["0.3", "0"])

    def app(req: Seen) -> Reply:
        wait = next(refusals, None)
        if wait is not None:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": wait}
        return inner(req)

    srv = serve(app)
    with backend(srv.url, max_retries=3) as be:
        start = time.perf_counter()
        out = be.generate([CHAT], SamplingParams())
        assert time.perf_counter() - start >= 0.3
    assert out.generations[0][0].text == sample_text(0)
    assert out.usage.calls == 1
    assert len(srv.posts("/v1/chat/completions")) == 3


def test_503_gives_up_after_retries(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(lambda req: (503, {"error": {"message": "loading model"}}, {}))
    with backend(srv.url, max_retries=2) as be, pytest.raises(BackendError) as info:
        be.generate([CHAT], SamplingParams())
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"the server at {srv.url}/v1 answered 503 after 3 tries: check that "
                       "it is running and not overloaded")
    assert len(srv.seen) == 3


def test_timeout_gives_up_with_the_fix(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app(delay=1.0))
    with backend(srv.url, timeout=0.2, max_retries=1) as be, \
            pytest.raises(BackendError) as info:
        be.generate([CHAT], SamplingParams())
    assert str(info.value) == (f"the server at {srv.url}/v1 did not answer within 0.2 s after "
                               "2 tries: raise the timeout or lower the concurrency")


def test_other_4xx_quotes_the_server_and_is_not_retried(
        serve: Callable[[App], FakeServer]) -> None:
    srv = serve(lambda req: (404, {"error": {"message": "The model `zzz` does not exist"}}, {}))
    with backend(srv.url, max_retries=3) as be, pytest.raises(BackendError) as info:
        be.generate([CHAT], SamplingParams())
    assert "The model `zzz` does not exist" in str(info.value)
    assert len(srv.seen) == 1


@pytest.mark.parametrize("payload", [
    b"<!DOCTYPE html>\n<html><body>Welcome to nginx!</body></html>\n",
    {"hello": "world"},
])
def test_not_an_openai_server(serve: Callable[[App], FakeServer], payload: Any) -> None:
    srv = serve(lambda req: (200, payload, {}))
    with backend(srv.url) as be, pytest.raises(BackendError) as info:
        be.generate(["2+2="], SamplingParams())
    assert "did not answer like an OpenAI-compatible API" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(BackendError, match="OpenAI-compatible"):
        OpenAIBackend(base_url=srv.url, backoff=0)  # model=None asks GET /models


def test_unreachable_server() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    expected = (f"could not reach an OpenAI-compatible server at {url}/v1: start it or fix "
                "--base-url")
    with backend(url, max_retries=1) as be, pytest.raises(BackendError) as info:
        be.generate([CHAT], SamplingParams())
    assert str(info.value) == expected
    with pytest.raises(BackendError) as info:
        OpenAIBackend(base_url=url, max_retries=0)
    assert str(info.value) == expected


def test_a_signal_caught_by_the_loop_thread_still_reaches_the_waiting_caller() -> None:
    """The OS may deliver Ctrl-C to any thread; the caller waiting on a silent server must
    still be interrupted (here a SIGUSR1 sent to the loop thread, whose handler raises)."""
    import signal

    class Stop(Exception):
        pass

    def raise_stop(_signum: int, _frame: Any) -> None:
        raise Stop

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    old = signal.signal(signal.SIGUSR1, raise_stop)
    be = OpenAIBackend("m", base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
                       timeout=60, max_retries=0)
    try:
        ident = be._thread.ident
        assert ident is not None
        threading.Timer(0.5, signal.pthread_kill, (ident, signal.SIGUSR1)).start()
        start = time.monotonic()
        with pytest.raises(Stop):
            be.generate([CHAT], SamplingParams())
        assert time.monotonic() - start < 5  # not the server's 60 s timeout
    finally:
        signal.signal(signal.SIGUSR1, old)
        be.close()
        for conn in held:
            conn.close()
        listener.close()


def test_api_key_is_sent_and_never_shown(serve: Callable[[App], FakeServer],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    inner = openai_app()
    good = "sk-good-secret-1234"

    def app(req: Seen) -> Reply:
        auth = req.headers.get("authorization", "")
        if auth != f"Bearer {good}":  # echo the key back, as some servers do
            return 401, {"error": {"message": f"Incorrect API key provided: {auth}"}}, {}
        return inner(req)

    srv = serve(app)
    monkeypatch.setenv("TTSCALE_TEST_KEY", good)
    with backend(srv.url, api_key_env="TTSCALE_TEST_KEY") as be:
        assert be.generate([CHAT], SamplingParams()).generations[0][0].text == sample_text(0)
        assert good not in repr(be)
    assert srv.seen[-1].headers["authorization"] == f"Bearer {good}"

    bad = "sk-wrong-secret-5678"
    monkeypatch.setenv("TTSCALE_TEST_KEY", bad)
    with backend(srv.url, api_key_env="TTSCALE_TEST_KEY") as be, \
            pytest.raises(BackendError) as info:
        be.generate([CHAT], SamplingParams())
    message = str(info.value)
    assert bad not in message and "401" in message and "TTSCALE_TEST_KEY" in message

    monkeypatch.delenv("TTSCALE_TEST_KEY")
    with backend(srv.url, api_key_env="TTSCALE_TEST_KEY", max_retries=0) as be, \
            pytest.raises(BackendError):
        be.generate([CHAT], SamplingParams())
    assert "authorization" not in srv.seen[-1].headers
