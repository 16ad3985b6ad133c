"""The OpenAI-compatible backend against small scripted servers (scripted_openai.py; the
real llama.cpp server is in test_openai_real.py, the failures in test_openai_failures.py).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from scripted_openai import CHAT, App, FakeServer, Reply, Seen, backend, openai_app, sample_text

from ttscale.backends.base import Backend, load_backend
from ttscale.backends.openai import OpenAIBackend, estimate_tokens
from ttscale.errors import BackendError, ConfigError
from ttscale.params import SamplingParams
from ttscale.types import Chat

# --------------------------------------------------------------------------------------
# Construction


def test_base_url_is_normalised_and_bad_options_fail() -> None:
    with OpenAIBackend("m", base_url="http://127.0.0.1:9") as be:
        assert be.base_url == "http://127.0.0.1:9/v1"
        assert be.root_url == "http://127.0.0.1:9"
        assert isinstance(be, Backend)
    with OpenAIBackend("m", base_url="http://127.0.0.1:9/v1/") as be:
        assert be.base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="http://"):
        OpenAIBackend("m", base_url="127.0.0.1:9")
    with pytest.raises(ConfigError, match="concurrency"):
        OpenAIBackend("m", concurrency=0)
    for timeout in (0, float("nan")):
        with pytest.raises(ConfigError, match="timeout must be a positive number"):
            OpenAIBackend("m", timeout=timeout)


def test_several_base_urls_are_normalised_once_each_and_name_their_own_failures() -> None:
    with OpenAIBackend("m", base_url=["http://127.0.0.1:1", "http://127.0.0.1:10/v1,"
                                      "http://127.0.0.1:1/v1/"]) as be:
        assert be.base_urls == ("http://127.0.0.1:1/v1", "http://127.0.0.1:10/v1")
        assert be.base_url == be.root_url + "/v1" == "http://127.0.0.1:1/v1"
        assert be._where("http://127.0.0.1:10/v1/completions") == "http://127.0.0.1:10/v1"
        assert be._where("http://127.0.0.1:1/tokenize") == "http://127.0.0.1:1/v1"
        assert "['http://127.0.0.1:1/v1', 'http://127.0.0.1:10/v1']" in repr(be)
    with pytest.raises(ConfigError, match="names no server"):
        OpenAIBackend("m", base_url=" , ")


def test_registered_as_openai(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app())
    be = load_backend("openai", base_url=srv.url)
    try:
        assert isinstance(be, OpenAIBackend)
        assert be.name == "openai"
        assert be.model_id == "scripted-model"  # from GET /models
    finally:
        be.close()


# --------------------------------------------------------------------------------------
# n, seeds and token counts


def test_n_in_one_request(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app())
    with backend(srv.url) as be:
        out = be.generate([CHAT], SamplingParams(n=3, seed=5, max_tokens=32))
    gens = out.generations[0]
    assert [g.text for g in gens] == [sample_text(5), sample_text(6), sample_text(7)]
    assert [g.seed for g in gens] == [5, 6, 7]
    # exact per-sample counts from the logprobs asked for behind the user's back
    assert [g.completion_tokens for g in gens] == [6, 7, 8]
    assert all(g.logprobs is None for g in gens)
    assert [g.finish_reason for g in gens] == ["length", "stop", "length"]
    assert out.usage.calls == 1
    assert out.usage.completion_tokens == 21
    assert out.usage.prompt_tokens == 33
    (req,) = srv.posts("/v1/chat/completions")
    assert req.body["n"] == 3 and req.body["seed"] == 5 and req.body["logprobs"] is True
    assert req.body["model"] == "scripted-model"


def test_server_ignoring_n_falls_back_to_one_request_per_sample(
        serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app(honour_n=False, logprobs=False))
    with backend(srv.url) as be:
        out = be.generate([CHAT], SamplingParams(n=3, seed=0))
        gens = out.generations[0]
        assert [g.text for g in gens] == [sample_text(0), sample_text(1), sample_text(2)]
        assert [g.seed for g in gens] == [0, 1, 2]
        assert [g.completion_tokens for g in gens] == [1, 2, 3]  # usage of each request
        assert out.usage.calls == 3
        assert out.usage.completion_tokens == 6
        assert be.use_n is False
        first = srv.posts("/v1/chat/completions")
        assert sorted(r.body["seed"] for r in first[1:]) == [1, 2]
        # remembered: the next call sends no n at all
        srv.seen.clear()
        out = be.generate([CHAT], SamplingParams(n=2, seed=10))
        assert [g.text for g in out.generations[0]] == [sample_text(10), sample_text(11)]
        reqs = srv.posts("/v1/chat/completions")
        assert len(reqs) == 2 and all("n" not in r.body for r in reqs)


def test_n_above_llamacpp_slot_count_is_split(serve: Callable[[App], FakeServer]) -> None:
    inner = openai_app()

    def app(req: Seen) -> Reply:
        if req.method == "POST" and req.body.get("n", 1) > 2:
            msg = f"Field 'n': Value must be between 1 <= value <= 2, but got {req.body['n']}"
            return 400, {"error": {"code": 400, "message": msg,
                                   "type": "invalid_request_error"}}, {}
        return inner(req)

    srv = serve(app)
    with backend(srv.url) as be:
        out = be.generate([CHAT], SamplingParams(n=5, seed=3))
        assert [g.text for g in out.generations[0]] == [sample_text(s) for s in range(3, 8)]
        assert out.usage.calls == 3  # 2 + 2 + 1; the refused request is not a call
        srv.seen.clear()
        be.generate([CHAT], SamplingParams(n=3))
        assert sorted(r.body.get("n", 1) for r in srv.posts("/v1/chat/completions")) == [1, 2]


def test_server_refusing_n_falls_back(serve: Callable[[App], FakeServer]) -> None:
    inner = openai_app()

    def app(req: Seen) -> Reply:
        if req.method == "POST" and req.body.get("n", 1) > 1:
            return 400, {"error": {"message": "n must be 1 for this model"}}, {}
        return inner(req)

    srv = serve(app)
    with backend(srv.url) as be:
        out = be.generate([CHAT], SamplingParams(n=2, seed=1))
        assert [g.text for g in out.generations[0]] == [sample_text(1), sample_text(2)]
        assert be.use_n is False


def test_logprobs_in_both_shapes(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app())
    params = SamplingParams(n=1, seed=2, logprobs=True, top_logprobs=2)
    with backend(srv.url) as be:
        out = be.generate([CHAT, "2+2="], params)
    chat, raw = out.generations[0][0], out.generations[1][0]
    for g in (chat, raw):
        assert g.logprobs is not None
        assert [t.token for t in g.logprobs] == sample_text(2).split()
        assert g.completion_tokens == 3
        assert all(t.logprob == -0.5 and len(t.top) == 2 for t in g.logprobs)
    assert raw.logprobs is not None and raw.logprobs[0].top == (("s2", -0.5), ("x", -2.0))
    (chat_req,) = srv.posts("/v1/chat/completions")
    assert chat_req.body["logprobs"] is True and chat_req.body["top_logprobs"] == 2
    (raw_req,) = srv.posts("/v1/completions")
    assert raw_req.body["logprobs"] == 2 and raw_req.body["prompt"] == "2+2="


def test_repeated_prefill_is_stripped(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app(echo_prefill=True))
    with backend(srv.url) as be:
        out = be.generate([Chat(CHAT.messages, prefill="Step 1:")],
                          SamplingParams(seed=4))
    assert out.generations[0][0].text == sample_text(4)
    (req,) = srv.posts("/v1/chat/completions")
    assert req.body["messages"][-1] == {"role": "assistant", "content": "Step 1:"}


def test_missing_usage_counts_prompt_with_tokenize(serve: Callable[[App], FakeServer]) -> None:
    inner = openai_app(usage=False)

    def app(req: Seen) -> Reply:  # vLLM's tokenize: "prompt"/"messages", answers a count
        if req.path == "/tokenize":
            if "prompt" not in req.body and "messages" not in req.body:
                return 400, {"error": {"message": "field required"}}, {}
            return 200, {"count": 7, "tokens": list(range(7)), "max_model_len": 4096}, {}
        if req.path == "/apply-template":
            return 404, b"<html>Not Found</html>", {}
        return inner(req)

    srv = serve(app)
    with backend(srv.url) as be:
        out = be.generate([CHAT], SamplingParams(n=2))
        assert [g.prompt_tokens for g in out.generations[0]] == [7, 7]
        assert be.count_tokens("hello") == 7


def test_count_tokens_estimates_without_tokenize(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app())
    with backend(srv.url) as be:
        assert be.count_tokens("hello world") == estimate_tokens("hello world")
        tried = len(srv.seen)
        assert be.count_tokens(CHAT) == estimate_tokens("What is 2+2?")
        assert len(srv.seen) == tried  # unavailability is remembered


# --------------------------------------------------------------------------------------
# Concurrency and threads


def test_requests_are_concurrent_and_callable_from_a_running_loop(
        serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app(delay=0.5))
    with backend(srv.url, concurrency=8) as be:
        start = time.perf_counter()
        out = be.generate(["a", "b", "c", "d"], SamplingParams(n=1))
        assert time.perf_counter() - start < 1.5  # one after another would take 2 s
        assert out.usage.calls == 4 and len(out.generations) == 4

        async def inside_a_loop() -> int:
            return len(be.generate([CHAT], SamplingParams(n=2)).generations[0])

        assert asyncio.run(inside_a_loop()) == 2
        with ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(
                lambda s: be.generate([CHAT], SamplingParams(seed=s)).generations[0][0].text,
                range(4)))
        assert counts == [sample_text(s) for s in range(4)]


def test_close_is_final_and_idempotent(serve: Callable[[App], FakeServer]) -> None:
    srv = serve(openai_app())
    be = backend(srv.url)
    be.close()
    be.close()
    assert not be._thread.is_alive()
    with pytest.raises(BackendError, match="closed"):
        be.generate([CHAT], SamplingParams())


# --------------------------------------------------------------------------------------
# Streamed, watched samples


def sse_app(req: Seen) -> Reply:
    """Streams five tokens per sample (with their top candidates), then the usage."""
    if req.path.endswith("/apply-template"):
        return 200, {"prompt": "a b c"}, {}
    if req.path.endswith("/tokenize"):
        return 200, {"tokens": [1, 2, 3]}, {}
    seed = int(req.body["seed"])
    lines: list[dict[str, Any]] = []
    for k in range(5):
        token = f" s{seed}t{k}"
        lp = {"content": [{"token": token, "logprob": -0.1,
                           "top_logprobs": [{"token": token, "logprob": -0.1},
                                            {"token": "x", "logprob": -3.0}]}]}
        lines.append({"choices": [{"index": 0, "delta": {"content": token}, "logprobs": lp,
                                   "finish_reason": None}]})
    lines.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    lines.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}})
    body = "".join(f"data: {json.dumps(x)}\n\n" for x in lines) + "data: [DONE]\n\n"
    return 200, body.encode(), {}


def test_generate_watched_streams_and_aborts_one_sample(
        serve: Callable[[App], FakeServer]) -> None:
    srv = serve(sse_app)
    seen: list[tuple[int, str]] = []

    def watch(i: int, t: Any) -> bool:
        seen.append((i, t.token))
        return i == 1 and t.token.endswith("t1")

    with backend(srv.url) as be:
        out = be.generate_watched(CHAT, SamplingParams(n=2, seed=5, logprobs=True,
                                                       top_logprobs=2), watch)
    first, second = out.generations[0]
    assert (first.text, first.completion_tokens, first.finish_reason) == (
        " s5t0 s5t1 s5t2 s5t3 s5t4", 5, "stop")
    assert (second.text, second.completion_tokens, second.finish_reason) == (
        " s6t0 s6t1", 2, "aborted")
    assert first.logprobs is not None and first.logprobs[0].top[1] == ("x", -3.0)
    assert out.usage.completion_tokens == 7 and out.usage.prompt_tokens == 6
    bodies = [s.body for s in srv.seen if s.path.endswith("/chat/completions")]
    assert sorted(b["seed"] for b in bodies) == [5, 6]
    assert all(b["stream"] and b["stream_options"] == {"include_usage": True}
               and b["logprobs"] and b["top_logprobs"] == 2 and "n" not in b for b in bodies)
    assert [t for i, t in seen if i == 1] == [" s6t0", " s6t1"]


# --------------------------------------------------------------------------------------
# Eval runs over servers


def test_an_eval_run_resumes_however_its_servers_are_spelled(
        serve: Callable[[App], FakeServer], tmp_path: Path) -> None:
    """The servers are part of a run's cache key: the same list in another order or spelling
    is the same run, and a run whose key was stored as the URLs were typed keeps it."""
    import ttscale
    from ttscale.evaluation.runs.store import Store

    a, b = serve(openai_app()), serve(openai_app())

    def drawn() -> int:
        posts = a.posts("/v1/chat/completions") + b.posts("/v1/chat/completions")
        return sum(int(p.body.get("n", 1)) for p in posts)

    def run(out: Path, *urls: str, n: int = 2) -> int:
        """The samples the servers drew for an eval of two questions at ``n``."""
        before = drawn()
        ttscale.evaluate("svamp", out, ids="0-1", ns=[n], backend="openai",
                         model="scripted-model", base_url=list(urls), temperature=0.7,
                         report_files=False)
        return drawn() - before

    assert run(tmp_path / "run", a.url, f"{b.url}/v1/") == 4
    assert run(tmp_path / "run", f"{b.url}/v1", f"{a.url}/") == 0  # the same run
    with pytest.raises(ConfigError, match="different model_sha256"):
        run(tmp_path / "run", a.url)  # another list of servers is another run

    # a run keyed by the URL as typed, as runs were before keys were normalised
    legacy = tmp_path / "legacy"
    assert run(legacy, f"{a.url}/") == 4
    old_key = f"openai:{a.url}/:scripted-model"
    with sqlite3.connect(legacy / "run.sqlite") as db:
        settings = json.loads(db.execute("SELECT settings FROM run").fetchone()[0])
        db.execute("UPDATE run SET settings = ?",
                   (json.dumps({**settings, "model_sha256": old_key}),))
        db.execute("UPDATE generations SET model_sha256 = ?", (old_key,))
    assert run(legacy, f"{a.url}/v1", n=4) == 4  # only the 2 missing samples a question
    Store.open(legacy, {**settings, "model_sha256": old_key}).close()  # its key is kept
