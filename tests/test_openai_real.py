"""The OpenAI-compatible backend against a real llama.cpp server: xllamacpp's in-process
server with the 135M model, as a user's ``--backend openai --base-url`` would reach it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ttscale.backends.openai import OpenAIBackend
from ttscale.params import SamplingParams
from ttscale.types import Chat

# --------------------------------------------------------------------------------------
# A real llama.cpp server (xllamacpp, in this process) with the 135M model


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    # No skip when missing: the set-up installs both, and a skip would hide that it did not.
    import xllamacpp as xl

    from ttscale import models

    path, _ = models.resolve("smollm2-135m")
    p = xl.CommonParams()
    p.model.path = str(path)
    p.n_parallel = 4
    p.n_ctx = 4 * 1024
    p.cpuparams.n_threads = 2
    p.cpuparams_batch.n_threads = 2
    p.warmup = False
    p.verbosity = -1
    server = xl.Server(p)  # referenced until the module's tests are done: it stops with it
    yield str(server.listening_address) + "/v1"
    del server


@pytest.fixture(scope="module")
def real(llama_url: str) -> Iterator[OpenAIBackend]:
    with OpenAIBackend(base_url=llama_url, timeout=300) as be:
        yield be


@pytest.mark.slow
def test_real_model_is_detected(real: OpenAIBackend) -> None:
    assert real.model_id.endswith(".gguf")
    assert real.params_count > 100_000_000  # llama.cpp reports n_params


@pytest.mark.slow
def test_real_chat_n_and_seeds(real: OpenAIBackend) -> None:
    chat = Chat.user("Name a colour.")
    params = SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=7)
    out = real.generate([chat], params)
    gens = out.generations[0]
    assert len(gens) == 3 and all(g.text for g in gens)
    assert all(0 < g.completion_tokens <= 8 for g in gens)
    assert out.usage.calls == 1 and real.use_n is True
    assert out.usage.completion_tokens == sum(g.completion_tokens for g in gens)
    assert out.usage.prompt_tokens == 3 * gens[0].prompt_tokens
    assert out.usage.flops == 2.0 * real.params_count * out.usage.total_tokens
    # the prompt count is exact: it matches what the server charged
    assert real.count_tokens(chat) == gens[0].prompt_tokens
    # sample i of an n-request is the n=1 request with seed + i; same seed, same text
    again = real.generate([chat], params.with_(n=1))
    second = real.generate([chat], params.with_(n=1, seed=8))
    assert again.generations[0][0].text == gens[0].text
    assert second.generations[0][0].text == gens[1].text
    assert second.generations[0][0].completion_tokens == gens[1].completion_tokens


@pytest.mark.slow
def test_real_completion_with_logprobs(real: OpenAIBackend) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=6, logprobs=True, top_logprobs=2)
    out = real.generate(["The capital of France is", Chat.user("Hi!")], params)
    for (g,) in out.generations:
        assert g.text and g.logprobs is not None
        assert len(g.logprobs) == g.completion_tokens > 0
        assert all(t.logprob <= 0 and 1 <= len(t.top) <= 2 for t in g.logprobs)
    assert real.count_tokens("hello world") == 2


@pytest.mark.slow
def test_real_prefill_returns_only_the_continuation(real: OpenAIBackend) -> None:
    prefill = "Sure! Here is a poem about zebras:\n\n"
    chat = Chat(Chat.user("Write a poem.").messages, prefill=prefill)
    (g,) = real.generate([chat], SamplingParams(temperature=0.0, max_tokens=6)).generations[0]
    assert g.text.strip() and not g.text.startswith(prefill.strip())
    assert g.completion_tokens <= 6
    assert real.count_tokens(chat) == g.prompt_tokens


@pytest.mark.slow
def test_real_solve_majority_through_the_server(real: OpenAIBackend) -> None:
    from ttscale import Budget, solve

    r = solve("What is 3 + 4?", backend=real, strategy="majority", n=3, max_tokens=32,
              budget=Budget(max_tokens=2000))
    assert len(r.traces) == 3 and r.usage.calls == 1
    assert r.usage.completion_tokens == sum(t.completion_tokens for t in r.traces)
    assert r.usage.total_tokens <= 2000
    assert sum(c.votes for c in r.classes) == sum(t.answer is not None for t in r.traces)


@pytest.mark.slow
def test_real_streamed_samples_match_and_abort(real: OpenAIBackend) -> None:
    chat = Chat.user("Count from one to ten.")
    params = SamplingParams(n=2, temperature=0.0, max_tokens=12, seed=1, logprobs=True,
                            top_logprobs=3)
    whole = real.generate([chat], params).generations[0]
    out = real.generate_watched(chat, params, lambda i, t: i == 0 and False)
    assert [g.text for g in out.generations[0]] == [g.text for g in whole]
    assert [g.completion_tokens for g in out.generations[0]] == [
        g.completion_tokens for g in whole]
    cut = real.generate_watched(chat, params, lambda i, _t: i == 1)
    kept, aborted = cut.generations[0]
    assert aborted.finish_reason == "aborted" and aborted.completion_tokens == 1
    assert aborted.prompt_tokens == real.count_tokens(chat) == kept.prompt_tokens
    assert cut.usage.completion_tokens == kept.completion_tokens + 1


@pytest.mark.slow
def test_real_stream_tells_a_race_which_samples_ended(real: OpenAIBackend) -> None:
    from ttscale.strategies.short import Race

    race = Race(1)
    out = real.generate_watched(Chat.user("Name one colour, in one word."),
                                SamplingParams(n=3, temperature=1.0, max_tokens=64, seed=5),
                                race)
    gens = out.generations[0]
    ended = {i for i, g in enumerate(gens) if g.finish_reason != "aborted"}
    # every sample that ended on its own was reported; every other one was stopped
    assert ended and ended <= race.done
    assert all(g.finish_reason == "aborted" for i, g in enumerate(gens) if i not in race.done)
    assert out.usage.completion_tokens == sum(g.completion_tokens for g in gens)
