"""The real path: SmolLM2-135M through the in-process llama.cpp backend."""

from __future__ import annotations

import pytest

from ttscale import Budget, solve
from ttscale.answers import solve_prompt
from ttscale.backends.llamacpp import LlamaCppBackend
from ttscale.params import SamplingParams
from ttscale.types import Chat, Message

pytestmark = pytest.mark.slow
Q = "Tom has 3 apples and buys 5 more. How many apples does he have now?"


def test_batched_samples_have_exact_counts(small_backend: LlamaCppBackend) -> None:
    prompt = solve_prompt(Q)
    out = small_backend.generate([prompt, Chat.user("Say hi.")],
                                 SamplingParams(n=3, max_tokens=24, seed=5))
    assert [len(g) for g in out.generations] == [3, 3]
    gens = out.generations[0]
    assert all(0 < g.completion_tokens <= 24 for g in gens)
    assert all(g.finish_reason in ("stop", "length") for g in gens)
    assert [g.seed for g in gens] == [5, 6, 7]
    exact = small_backend.count_tokens(prompt)
    assert gens[0].prompt_tokens == exact
    total = sum(g.completion_tokens for gs in out.generations for g in gs)
    assert out.usage.completion_tokens == total
    assert out.usage.calls == 2 and out.usage.flops > 0


def test_sample_i_equals_single_request_with_seed_plus_i(small_backend: LlamaCppBackend) -> None:
    p = Chat.user("Write a number.")
    three = small_backend.generate([p], SamplingParams(n=3, max_tokens=12, seed=11,
                                                       temperature=1.0)).generations[0]
    third = small_backend.generate([p], SamplingParams(n=1, max_tokens=12, seed=13,
                                                       temperature=1.0)).generations[0][0]
    assert third.text == three[2].text


def test_n_larger_than_slots_is_split(small_backend: LlamaCppBackend) -> None:
    out = small_backend.generate([Chat.user("Hi")], SamplingParams(n=6, max_tokens=4, seed=0))
    assert len(out.generations[0]) == 6
    assert [g.seed for g in out.generations[0]] == list(range(6))


def test_logprobs_and_raw_continuation(small_backend: LlamaCppBackend) -> None:
    out = small_backend.generate(["The capital of France is"],
                                 SamplingParams(max_tokens=5, temperature=0, logprobs=True,
                                                top_logprobs=3))
    g = out.generations[0][0]
    assert g.logprobs is not None and len(g.logprobs) == g.completion_tokens
    assert all(lp.logprob <= 0 for lp in g.logprobs) and len(g.logprobs[0].top) == 3


def test_prefill_returns_only_the_continuation(small_backend: LlamaCppBackend) -> None:
    prefill = "Tom starts with 3 apples."
    chat = Chat((Message("user", Q),), prefill=prefill)
    g = small_backend.generate([chat], SamplingParams(max_tokens=16, temperature=0)).generations
    assert not g[0][0].text.startswith(prefill)


def test_solve_majority_end_to_end(small_backend: LlamaCppBackend) -> None:
    r = solve(Q, backend=small_backend, strategy="majority", n=4, max_tokens=96)
    assert len(r.traces) == 4
    assert sum(c.votes for c in r.classes) == sum(t.answer is not None for t in r.traces)
    assert r.usage.completion_tokens == sum(t.completion_tokens for t in r.traces)
    if r.classes:
        assert r.answer == max(r.classes, key=lambda c: c.votes).answer


def test_solve_weighted_best_of_n_with_self_judge(small_backend: LlamaCppBackend) -> None:
    r = solve(Q, backend=small_backend, strategy="weighted_best_of_n", verifier="self_judge",
              n=2, max_tokens=64)
    assert all(t.score is not None and 0 <= t.score <= 1 for t in r.traces)
    assert r.usage.calls == 1 + 2  # one sampling request, one judge request per trace


def test_real_budget_is_never_exceeded(small_backend: LlamaCppBackend) -> None:
    cap = 600
    r = solve(Q, backend=small_backend, n=8, max_tokens=100, budget=Budget(max_tokens=cap))
    assert r.usage.total_tokens <= cap and r.budget_limited and 0 < len(r.traces) < 8


def test_extra_buffers_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain CPU weight buffers (the way round llama.cpp builds that crash in the AMX one)
    still load and generate; a bad switch is one sentence."""
    from ttscale.errors import ConfigError

    monkeypatch.setenv("TTSCALE_LLAMA_EXTRA_BUFFERS", "0")
    be = LlamaCppBackend("smollm2-135m", parallel=1, ctx_per_slot=512, threads=2)
    try:
        assert be.extra_buffers is False
        out = be.generate([Chat.user(Q)], SamplingParams(n=1, temperature=0.0, max_tokens=6))
        assert out.generations[0][0].completion_tokens > 0 and out.generations[0][0].text
    finally:
        be.close()
    monkeypatch.setenv("TTSCALE_LLAMA_EXTRA_BUFFERS", "off")
    with pytest.raises(ConfigError, match="TTSCALE_LLAMA_EXTRA_BUFFERS must be 0 or 1"):
        LlamaCppBackend("smollm2-135m", parallel=1)
