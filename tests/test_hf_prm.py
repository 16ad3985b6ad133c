"""Hugging Face PRMs on tiny random models built here, saved and loaded by path (offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.solve import solve
from ttscale.verifiers.hf_prm import HFProcessRewardModel
from ttscale.verifiers.spec import build_verifier, check_verifier

QUESTION = "What is 2 + 2 ?"
TRACES = ["We add 2 and 2 .\n\nSo it is 4 .", "It is 5 .", "First 2 .\n\nThen 2 more .\n\n4"]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}")
WORDS = (f"{QUESTION} {' '.join(TRACES)} + - Please reason step by step , and put your final "
         "answer within \\ boxed {} . <| system |> user assistant Q")


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([WORDS], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.add_special_tokens({"additional_special_tokens": ["<extra_0>", "ки"]})
    fast.chat_template = CHAT
    return fast


def _config(vocab: int) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, intermediate_size=64, vocab_size=vocab,
                       num_labels=2, max_position_embeddings=256)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A reward-head model (Qwen2ForTokenClassification, 2 labels) and a step-tag model
    (Qwen2ForCausalLM), randomly initialised, each saved with the tiny tokenizer."""
    import torch
    from transformers import Qwen2ForCausalLM, Qwen2ForTokenClassification

    torch.manual_seed(0)
    tok = _tokenizer()
    out = {}
    for kind, cls in (("reward_head", Qwen2ForTokenClassification),
                      ("step_tag", Qwen2ForCausalLM)):
        path = tmp_path_factory.mktemp(kind)
        cls(_config(len(tok))).save_pretrained(path)
        tok.save_pretrained(path)
        out[kind] = path
    return out


def _logits(prm: HFProcessRewardModel, text: str) -> Any:
    import torch

    ids = torch.tensor([prm.tokenizer.encode(text)])
    with torch.inference_mode():
        return ids[0], prm.model(input_ids=ids).logits[0]


def test_reward_head_matches_the_model_card_recipe(models: dict[str, Path]) -> None:
    import torch

    prm = HFProcessRewardModel(str(models["reward_head"]), "reward_head")
    out = prm.score(QUESTION, TRACES)
    assert [len(s) for s in out.step_scores] == [2, 1, 3]  # one score per step
    assert all(0.0 < p < 1.0 for s in out.step_scores for p in s)
    # the card: steps joined by <extra_0> (one after the last too) in the chat template,
    # softmax of the 2-way head, class 1 at every separator
    text = prm.tokenizer.apply_chat_template(
        [{"role": "system", "content": "Please reason step by step, and put your final answer "
          "within \\boxed{}."}, {"role": "user", "content": QUESTION},
         {"role": "assistant", "content": "First 2 .<extra_0>Then 2 more .<extra_0>4<extra_0>"}],
        tokenize=False)
    ids, logits = _logits(prm, text)
    want = torch.softmax(logits, -1)[ids == prm.separator_id][:, 1].tolist()
    assert out.step_scores[2] == pytest.approx(want, abs=1e-5)


def test_step_tag_is_p_good_over_good_plus_bad_at_each_tag(models: dict[str, Path]) -> None:
    import torch

    prm = HFProcessRewardModel(str(models["step_tag"]), "step_tag")
    out = prm.score(QUESTION, TRACES)
    assert [len(s) for s in out.step_scores] == [2, 1, 3]
    # Math-Shepherd's card: "question step ки\n\nstep ки", logits at the tag of "+" and "-"
    ids, logits = _logits(prm, f"{QUESTION} We add 2 and 2 . ки\n\nSo it is 4 . ки")
    good, bad = prm.tokenizer.encode("+ -", add_special_tokens=False)
    at = logits[ids == prm.tokenizer.convert_tokens_to_ids("ки")]
    want = (at[:, good].exp() / (at[:, good].exp() + at[:, bad].exp())).tolist()
    assert out.step_scores[0] == pytest.approx(want, abs=1e-5)
    assert torch.all(torch.tensor(out.step_scores[0]) > 0)


@pytest.mark.parametrize("kind", ["reward_head", "step_tag"])
def test_batches_score_as_one_by_one(models: dict[str, Path], kind: str) -> None:
    batched = HFProcessRewardModel(str(models[kind]), kind, batch_size=8)
    single = HFProcessRewardModel(str(models[kind]), kind, batch_size=1)
    together = batched.score(QUESTION, TRACES)
    alone = single.score(QUESTION, TRACES)
    for a, b in zip(together.step_scores, alone.step_scores, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert (together.usage.calls, alone.usage.calls) == (1, 3)


def test_usage_counts_every_token_fed(models: dict[str, Path]) -> None:
    prm = HFProcessRewardModel(str(models["reward_head"]), "reward_head", batch_size=2,
                               template="Q {question} {solution}")
    out = prm.score(QUESTION, TRACES)
    texts = ["Q What is 2 + 2 ? We add 2 and 2 .<extra_0>So it is 4 .<extra_0>",
             "Q What is 2 + 2 ? It is 5 .<extra_0>",
             "Q What is 2 + 2 ? First 2 .<extra_0>Then 2 more .<extra_0>4<extra_0>"]
    lengths = [len(prm.tokenizer.encode(t)) for t in texts]
    params = sum(p.numel() for p in prm.model.parameters())
    assert out.usage.prompt_tokens == sum(lengths)
    assert out.usage.completion_tokens == 0
    assert out.usage.calls == 2  # 3 traces in batches of 2
    assert out.usage.flops == 2 * params * sum(lengths)
    assert out.usage.seconds > 0
    assert [u.prompt_tokens for u in out.per_trace] == lengths
    assert sum(u.flops for u in out.per_trace) == out.usage.flops
    assert prm.reserve_tokens(100) >= 100


def test_step_delimiter_and_reductions(models: dict[str, Path]) -> None:
    path = str(models["reward_head"])
    lines = HFProcessRewardModel(path, "reward_head", step_delimiter="\n", reduction="prod")
    out = lines.score(QUESTION, ["a\nb\n\nc", ""])
    assert [len(s) for s in out.step_scores] == [3, 1]  # an empty trace is one step
    steps = out.step_scores[0]
    assert lines.reduce(steps) == pytest.approx(steps[0] * steps[1] * steps[2])
    assert HFProcessRewardModel(path, "reward_head").reduce(steps) == min(steps)
    assert HFProcessRewardModel(path, "reward_head", reduction="last").reduce(steps) == steps[2]


def test_kind_is_read_from_the_config(models: dict[str, Path]) -> None:
    assert HFProcessRewardModel(str(models["step_tag"])).kind == "step_tag"
    assert HFProcessRewardModel(str(models["reward_head"])).kind == "reward_head"


def test_bad_settings_fail_with_the_fix(models: dict[str, Path], tmp_path: Path) -> None:
    path = str(models["reward_head"])
    with pytest.raises(ConfigError, match="reward_head .* step_tag"):
        HFProcessRewardModel(path, "value_head")
    with pytest.raises(ConfigError, match="separator '<nope>' is not one token"):
        HFProcessRewardModel(path, "reward_head", separator="<nope>")
    with pytest.raises(ConfigError, match="good_token"):
        HFProcessRewardModel(str(models["step_tag"]), "step_tag", good_token="<absent>")
    with pytest.raises(ConfigError, match="unknown reduction"):
        HFProcessRewardModel(path, "reward_head", reduction="median")
    with pytest.raises(ConfigError, match="batch_size"):
        HFProcessRewardModel(path, "reward_head", batch_size=0)
    with pytest.raises(ConfigError, match=r"\{solution\}"):
        HFProcessRewardModel(path, "reward_head", template="{question}")
    with pytest.raises(ConfigError, match="delimiter"):
        HFProcessRewardModel(path, "reward_head", step_delimiter="")
    # a model that ships its own code runs only when asked to
    own = tmp_path / "own"
    shutil.copytree(path, own)
    config = json.loads((own / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_prm.Qwen2ForProcessRewardModel"}
    (own / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="trust_remote_code=true"):
        HFProcessRewardModel(str(own), "reward_head")


def test_spec_loads_it_by_path_and_solve_uses_it(models: dict[str, Path]) -> None:
    spec = f"hf_prm:{models['step_tag']},batch_size=2,reduction=\"last\""
    assert check_verifier(spec).options == (("batch_size", 2), ("reduction", "last"))
    prm = build_verifier(spec, FakeBackend())
    assert isinstance(prm, HFProcessRewardModel) and prm.batch_size == 2
    with pytest.raises(ConfigError, match="needs an argument"):
        check_verifier("hf_prm")
    # the fake backend joins words with spaces: its steps end with ";"
    fb = FakeBackend(responses=["2 + 2 ; So \\boxed{4}", "\\boxed{5}"])
    r = solve(QUESTION, backend=fb, strategy="weighted_best_of_n", n=2,
              verifier=f'hf_prm:{models["reward_head"]},step_delimiter=";"')
    assert [len(t.step_scores or ()) for t in r.traces] == [2, 1]
    assert all(t.score == min(t.step_scores or (0,)) for t in r.traces)
    assert r.usage.prompt_tokens > fb.count_tokens(QUESTION)  # the PRM's tokens are counted
