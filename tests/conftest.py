"""Shared fixtures: a scripted backend for logic, scripted OpenAI-shaped servers, the 135M
model for the real path."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from scripted_openai import App, FakeServer

from ttscale.backends.fake import FakeBackend


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(responses=["Step one.\n\nSo \\boxed{4}.", "Hmm.\n\n\\boxed{5}",
                                  "Thus \\boxed{4.0}."])


@pytest.fixture(scope="session")
def small_backend() -> Iterator[object]:
    """SmolLM2-135M through the real llama.cpp backend, loaded once per test session."""
    from ttscale.backends.llamacpp import LlamaCppBackend

    be = LlamaCppBackend("smollm2-135m", parallel=4, ctx_per_slot=1024, threads=2)
    yield be
    be.close()


@pytest.fixture
def serve() -> Iterator[Callable[[App], FakeServer]]:
    """Start scripted servers (``serve(app)``); each is closed after the test."""
    servers: list[FakeServer] = []

    def start(app: App) -> FakeServer:
        server = FakeServer(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
