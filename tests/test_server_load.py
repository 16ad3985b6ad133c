"""The server under load and under generated input, on loopback.

- 50 concurrent requests: every one answered (200) or refused (429), never a 5xx, and the
  memory of the process steady over repeated waves. Fake backend here; the 135M model in
  the slow test.
- schemathesis generates requests from the server's own OpenAPI schema, a bounded number
  per operation: no 5xx, and every response matches the documented schema.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.server.run import Background
from ttscale.server.service import Settings

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

USER = [{"role": "user", "content": "What is 6*7?"}]


def rss_mb() -> float:
    """Resident memory of this process now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wave(url: str, count: int, model: str, max_tokens: int) -> Counter[int]:
    """``count`` chat requests at once; the status of each (0: no HTTP answer at all)."""
    oa = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)

    async def one() -> int:
        try:
            await oa.chat.completions.create(model=model, messages=USER,  # type: ignore[arg-type]
                                             max_tokens=max_tokens)
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code
        except openai.APIConnectionError:
            return 0

    try:
        return Counter(await asyncio.gather(*(one() for _ in range(count))))
    finally:
        await oa.close()


def check_wave(codes: Counter[int], count: int, capacity: int) -> None:
    assert set(codes) <= {200, 429}, codes  # answered or refused, nothing else
    assert sum(codes.values()) == count
    assert codes[200] >= capacity  # every place in the slots and the queue was used


def test_fifty_concurrent_requests_with_steady_memory() -> None:
    settings = Settings(max_concurrency=4, max_queue=16)
    with Background(FakeBackend(delay=0.2), settings) as srv:
        service = srv.server.config.app.state.service
        check_wave(asyncio.run(wave(srv.url, 50, "majority@8", 64)), 50, settings.capacity)
        after_first = rss_mb()
        for _ in range(4):
            codes = asyncio.run(wave(srv.url, 50, "majority@8", 64))
            check_wave(codes, 50, settings.capacity)
        grown = rss_mb() - after_first
        assert grown < 20, f"memory grew {grown:.1f} MB over 4 waves of 50 requests"
        assert (service.admitted, service.running) == (0, 0)  # every slot given back


@pytest.mark.slow
def test_fifty_concurrent_requests_on_the_135m_model(small_backend: Any) -> None:
    settings = Settings(max_concurrency=4, max_queue=8, max_tokens=64, default_max_tokens=32,
                        timeout=300)
    with Background(small_backend, settings) as srv:
        codes = asyncio.run(wave(srv.url, 50, "majority@2", 16))
        check_wave(codes, 50, settings.capacity)
        before = rss_mb()
        check_wave(asyncio.run(wave(srv.url, 50, "majority@2", 16)), 50, settings.capacity)
        assert rss_mb() - before < 50


# -- schemathesis ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed() -> Iterator[Background]:
    settings = Settings(api_keys=("k",), max_n=4, default_strategy="majority@4",
                        max_tokens=64, default_max_tokens=16,
                        max_body_bytes=100_000)
    with Background(FakeBackend(yes_logprob=-0.1), settings) as srv:
        yield srv


def _operations() -> list[str]:
    return ["GET /health", "GET /metrics", "GET /v1/models", "GET /v1/models/{model}",
            "POST /v1/chat/completions", "POST /v1/completions"]


@pytest.mark.parametrize("steer", [False, True], ids=["as-generated", "served-model"])
@pytest.mark.parametrize("label", _operations())
def test_generated_requests_get_no_5xx(keyed: Background, label: str, steer: bool) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    root = keyed.url[: -len("/v1")]
    schema = schemathesis.openapi.from_url(root + "/openapi.json")
    ops = {f"{op.method.upper()} {op.path}": op
           for op in (r.ok() for r in schema.get_all_operations())}
    assert set(ops) == set(_operations())  # the schema documents every route
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    seen: Counter[int] = Counter()

    # Bounded in count (30 per operation) and time (5 s per example).
    @given(case=ops[label].as_strategy())
    @settings(max_examples=30, deadline=5000, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        if steer:
            # random names earn a 404 and random messages rarely hold a question: steer
            # them so that the other generated fields reach solve
            if isinstance(case.body, dict):
                case.body["model"] = "majority@2/fake"
                if "messages" in case.body:
                    case.body["messages"] = [{"role": "user", "content": "What is 6*7?"}]
            if case.path_parameters and "model" in case.path_parameters:
                case.path_parameters["model"] = "majority@2/fake"
        response = case.call(base_url=root, headers={"Authorization": "Bearer k"}, timeout=30)
        seen[response.status_code] += 1
        case.validate_response(response, checks=checks)

    run()
    assert seen and max(seen) < 500, seen
