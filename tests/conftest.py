"""Shared fixtures: a scripted backend for logic, the 135M model for the real path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
