"""SPRM on the real 135M model: step features at the right tokens, and collect -> train ->
eval through the command line on a few GSM8K train questions."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from ttscale import models
from ttscale.verifiers.sprm.features import TorchFeatures, chat_text

pytestmark = pytest.mark.slow

TRACES = [
    "First, 3 + 4 = 7.\n\nThen 7 * 2 = 14.\n\nThe answer is \\boxed{14}.",
    "We need the total.\n\n\n\nIt is 5.   \n\nThe answer is \\boxed{5}.\n\n",
    "Just \\boxed{1}",
]


@pytest.fixture(scope="module")
def feats() -> Iterator[TorchFeatures]:
    path = models.resolve("smollm2-135m")[0]
    yield TorchFeatures.load(str(path), all_layers=True, threads=2)


def test_one_vector_per_step_at_the_token_that_ends_it(feats: TorchFeatures) -> None:
    prompt = chat_text(feats.tokenizer, "What is (3 + 4) * 2?")
    out = feats.extract(prompt, TRACES, "\n\n")
    assert [len(o.vectors) for o in out] == [3, 3, 1]
    for o, trace in zip(out, TRACES, strict=True):
        assert o.vectors.shape[1] == feats.hidden_size == 576
        ids = feats.tokenizer(prompt, add_special_tokens=True)["input_ids"] + \
            feats.tokenizer(trace, add_special_tokens=False)["input_ids"]
        assert o.tokens == len(ids)
        pieces = [feats.tokenizer.decode([ids[p]]) for p in o.positions]
        text_ends_with_step = not trace.rstrip().endswith("\n") and trace == trace.rstrip()
        # every step but a final one ending the text ends at a line break token
        breaks = pieces[:-1] if text_ends_with_step else pieces
        assert all("\n" in piece for piece in breaks), pieces
        if text_ends_with_step:
            assert o.positions[-1] == len(ids) - 1  # the last step: the trace's last token
        assert list(o.positions) == sorted(set(o.positions))


def test_features_do_not_depend_on_the_batch_and_a_shallower_layer_differs(
        feats: TorchFeatures) -> None:
    prompt = chat_text(feats.tokenizer, "What is (3 + 4) * 2?")
    together = feats.extract(prompt, TRACES, "\n\n")
    # the traces run shortest first, two at a time: results must come back in input order
    for i, trace in enumerate(TRACES):
        alone = feats.extract(prompt, [trace], "\n\n")
        assert alone[0].positions == together[i].positions
        np.testing.assert_allclose(alone[0].vectors, together[i].vectors, atol=2e-3, rtol=1e-3)
    half = feats.extract(prompt, TRACES[:1], "\n\n", layer=15)
    assert half[0].positions == together[0].positions
    assert not np.allclose(half[0].vectors, together[0].vectors, atol=1e-2)


def test_bfloat16_features_sit_at_the_same_tokens_close_to_float32(
        feats: TorchFeatures) -> None:
    path = models.resolve("smollm2-135m")[0]
    half = TorchFeatures.load(str(path), all_layers=True, threads=2, dtype="bfloat16")
    assert half.dtype == "bfloat16" and feats.dtype == "float32"
    prompt = chat_text(feats.tokenizer, "What is (3 + 4) * 2?")
    full, low = feats.extract(prompt, TRACES, "\n\n"), half.extract(prompt, TRACES, "\n\n")
    for a, b in zip(full, low, strict=True):
        assert a.positions == b.positions and b.vectors.dtype == np.float32
        # the direction of each step's state survives the lower precision
        cos = (a.vectors * b.vectors).sum(1) / (
            np.linalg.norm(a.vectors, axis=1) * np.linalg.norm(b.vectors, axis=1))
        assert cos.min() > 0.98, cos


def test_a_prefix_already_run_is_not_run_again(feats: TorchFeatures) -> None:
    from ttscale.verifiers.sprm.prefix import PrefixStore

    prompt = chat_text(feats.tokenizer, "What is (5 + 1) * 3?")
    n_prompt = len(feats.tokenizer(prompt, add_special_tokens=True)["input_ids"])
    steps = ["First, 5 + 1 = 6.", "Then 6 * 3 = 18.", "The answer is \\boxed{18}."]
    kept = feats.prefixes
    try:
        feats.prefixes = PrefixStore(0)  # nothing kept: every sequence runs whole
        cold = feats.extract(prompt, ["\n\n".join(steps)], "\n\n")[0]
        assert cold.evaluated == cold.tokens
        feats.prefixes = PrefixStore(4096)
        rounds = [feats.extract(prompt, ["\n\n".join(steps[:k]) + "\n\n"], "\n\n")[0]
                  for k in (1, 2)]
        warm = feats.extract(prompt, ["\n\n".join(steps)], "\n\n")[0]
    finally:
        feats.prefixes = kept
    assert rounds[0].evaluated == rounds[0].tokens  # the first sequence of the prompt
    # each round runs only what follows the last one (a token or two of the blank line may
    # merge with the next step's first word and run again)
    assert rounds[1].evaluated <= rounds[1].tokens - rounds[0].tokens + 2
    assert warm.evaluated <= warm.tokens - rounds[1].tokens + 2 < warm.tokens - n_prompt
    assert warm.positions == cold.positions and warm.tokens == cold.tokens
    np.testing.assert_allclose(warm.vectors, cold.vectors, atol=2e-3, rtol=1e-3)


def test_last_layer_features_equal_llama_cpp_embeddings(feats: TorchFeatures) -> None:
    """At full depth a feature is the LM head's input, which is what llama.cpp's per-token
    embeddings are: the same vectors at the same positions, from the quantised weights."""
    import httpx
    import xllamacpp as xl

    p = xl.CommonParams()
    p.model.path = str(models.resolve("smollm2-135m")[0])
    p.embedding = True
    p.pooling_type = xl.llama_pooling_type.LLAMA_POOLING_TYPE_NONE
    p.n_ctx = p.n_batch = p.n_ubatch = 1024
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 2
    p.warmup = False
    p.verbosity = -1
    server: Any = xl.Server(p)
    prompt = chat_text(feats.tokenizer, "What is (3 + 4) * 2?")
    ours = feats.extract(prompt, TRACES[:1], "\n\n")[0]
    rows = httpx.post(server.listening_address + "/embedding",
                      json={"content": prompt + TRACES[0]}, timeout=300).json()[0]["embedding"]
    assert len(rows) == ours.tokens  # the same tokens
    theirs = np.asarray(rows, dtype=np.float32)[list(ours.positions)]
    cos = (theirs * ours.vectors).sum(1) / (np.linalg.norm(theirs, axis=1)
                                           * np.linalg.norm(ours.vectors, axis=1))
    assert cos.min() > 0.98, cos


def test_the_verifier_scores_steps_and_counts_what_it_read(feats: TorchFeatures,
                                                            small_backend: Any,
                                                            tmp_path: Path) -> None:
    from ttscale.solve import solve
    from ttscale.verifiers.spec import build_verifier
    from ttscale.verifiers.sprm.head import HeadMeta, SPRMHead, SPRMVerifier, geometric_mean

    sha = models.CATALOG["smollm2-135m"].sha256
    head = SPRMHead.new(HeadMeta(sha, "smollm2-135m", 15, 30, 576, 16), seed=1)
    v = cast(SPRMVerifier, build_verifier(f"sprm:{head.save(tmp_path / 'h')}", small_backend))
    v._features = feats  # the module's model (30 layers); the head reads layer 15 of it
    out = v.score("What is (3 + 4) * 2?", TRACES)
    assert [len(s) for s in out.step_scores] == [3, 3, 1]
    assert all(0.0 < x < 1.0 for s in out.step_scores for x in s)
    prompt = chat_text(feats.tokenizer, "What is (3 + 4) * 2?")
    read = [f.tokens for f in feats.extract(prompt, TRACES, "\n\n", layer=15)]
    assert [u.prompt_tokens for u in out.per_trace] == read
    assert out.usage.prompt_tokens == sum(read) and out.usage.completion_tokens == 0
    assert out.usage.flops == pytest.approx(2.0 * small_backend.params_count * sum(read) / 2)
    assert out.notes == ()

    r = solve("What is (3 + 4) * 2?", backend=small_backend, strategy="best_of_n", n=2,
              verifier=v, max_tokens=48)
    assert len(r.traces) == 2
    for t in r.traces:
        assert t.step_scores is not None and t.score == pytest.approx(
            geometric_mean(t.step_scores))
    sampled = sum(t.completion_tokens for t in r.traces)
    assert r.usage.completion_tokens == sampled  # the verifier adds prompt tokens only
    from ttscale.answers import solve_prompt

    asked = small_backend.count_tokens(solve_prompt("What is (3 + 4) * 2?"))
    reread = sum(f.tokens for f in feats.extract(prompt, [t.text for t in r.traces], "\n\n",
                                                 layer=15))
    assert r.usage.prompt_tokens == 2 * asked + reread


def _ttscale(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ttscale", *args], capture_output=True,
                          text=True, env=env, timeout=1800, check=False)


def test_collect_train_eval_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ, COLUMNS="120")
    run = tmp_path / "train-run"
    collect = ("sprm", "collect", "--split", "train", "--ids", "0-2", "-n", "3",
               "--max-tokens", "128", "--model", "smollm2-135m", "--threads", "2",
               "--out", str(run))
    first = _ttscale(*collect, env=env)
    assert first.returncode == 0, first.stderr
    assert "step features of 9 traces extracted now" in first.stderr
    meta = json.loads((run / "sprm-features" / "layer15" / "meta.json").read_text())
    assert meta["model_sha256"] == models.CATALOG["smollm2-135m"].sha256
    assert (meta["layer"], meta["n_layers"], meta["hidden_size"]) == (15, 30, 576)
    again = _ttscale(*collect, env=env)  # resumable: nothing generated or extracted twice
    assert again.returncode == 0, again.stderr
    assert "0 samples generated now" in again.stderr
    assert "step features of 0 traces extracted now" in again.stderr

    head = tmp_path / "smollm2"
    trained = _ttscale("sprm", "train", str(run), "--out", str(head), "--folds", "3",
                       "--epochs", "60", "--threads", "1", env=env)
    assert trained.returncode == 0, trained.stderr
    info = json.loads((tmp_path / "smollm2.sprm.json").read_text())
    assert info["base_model_sha256"] == models.CATALOG["smollm2-135m"].sha256
    assert info["layer"] == 15 and info["step_delimiter"] == "\n\n"
    assert info["training"]["runs"][0]["question_ids"] == [
        "gsm8k-train-0", "gsm8k-train-1", "gsm8k-train-2"]
    # cross-validation over the 3 questions chose the epochs; the head trained on all 9 traces
    assert info["metrics"]["cross_validation"]["folds"] == 3
    assert info["metrics"]["train"]["traces"] == 9 and "5-fold" not in trained.stdout
    assert info["features"].startswith("transformers float32 from the GGUF")
    assert "3-fold CV" in trained.stdout and "epochs chosen by cross-validation" in trained.stderr

    scored = _ttscale("sprm", "eval", str(run), "--head", str(head), "-n", "3", "--json",
                      env=env)
    assert scored.returncode == 0, scored.stderr
    res = json.loads(scored.stdout)
    assert res["traces"] == 9 and res["extracted_now"] == 0  # the cached features
    assert res["dtype"] == "float32"
    # features of another dtype are never mixed into the cache: refused before any loading
    mixed = _ttscale("sprm", "eval", str(run), "--head", str(head), "--dtype", "bfloat16",
                     env=env)
    assert mixed.returncode != 0 and "pass --dtype float32 to use them" in mixed.stderr
    assert set(res["points"]) == {"majority", "best_of_n", "weighted_best_of_n"}
    assert res["scoring_seconds"] > 0 and res["generation_seconds"] > 0
    from ttscale.evaluation.runs.records import load_records

    _settings, records = load_records(run, "sprm")
    scores = [t.score for r in records for t in r.traces]
    assert len(scores) == 9 and all(s is not None and 0 < s < 1 for s in scores)
    replay = _ttscale("eval", "replay", str(run), "--strategies", "weighted_best_of_n",
                      "--n", "3", "--verifier", "sprm", "--json", env=env)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout.splitlines()[0])["strategy"] == "weighted_best_of_n"

    # more layers later: one pass through the deepest fills the missing layer's cache
    both = _ttscale(*collect[:-2], "--layer", "4,15", "--out", str(run), env=env)
    assert both.returncode == 0, both.stderr
    assert "0 samples generated now" in both.stderr
    assert "step features of 9 traces extracted now" in both.stderr
    assert json.loads((run / "sprm-features" / "layer4" / "meta.json").read_text())["layer"] == 4
    shallow = _ttscale("sprm", "train", str(run), "--layer", "4", "--out", str(tmp_path / "h4"),
                       "--folds", "0", "--holdout", "0.34", "--threads", "1", env=env)
    assert shallow.returncode == 0, shallow.stderr
    h4 = json.loads((tmp_path / "h4.sprm.json").read_text())
    assert h4["layer"] == 4 and "cross_validation" not in h4["metrics"]
    assert h4["metrics"]["train"]["traces"] + h4["metrics"]["held_out"]["traces"] == 9
    # a second head's scores stored under another name, beside the first head's
    other = _ttscale("sprm", "eval", str(run), "--head", str(tmp_path / "h4"), "-n", "3",
                     "--store-as", "sprm-l4", "--json", env=env)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["stored_as"] == "sprm-l4"
    shallow_scores = [t.score for r in load_records(run, "sprm-l4")[1] for t in r.traces]
    assert len(shallow_scores) == 9 and shallow_scores != scores
    assert [t.score for r in load_records(run, "sprm")[1] for t in r.traces] == scores
    # each name is bound to the head behind its scores, so a resumed eval cannot mix heads
    with sqlite3.connect(run / "run.sqlite") as db:
        bound = dict(db.execute("SELECT key, value FROM bindings").fetchall())
    assert bound["verifier:sprm"].startswith("SPRM head smollm2.sprm.safetensors (SHA-256 ")
    assert bound["verifier:sprm-l4"].startswith("SPRM head h4.sprm.safetensors (SHA-256 ")
    side = _ttscale("eval", "verifiers", str(run), "-n", "1,3", "--json", env=env)
    assert side.returncode == 0, side.stderr
    assert "sprm-l4" in side.stdout and '"sprm"' in side.stdout
    named = _ttscale("sprm", "eval", str(run), "--head", str(head), "--store-as", "a b", env=env)
    assert named.returncode != 0 and "is not a verifier name" in named.stderr
    bad = _ttscale(*collect[:-2], "--layer", "0,4", "--out", str(run), env=env)
    assert bad.returncode != 0 and "--layer takes positive layer numbers" in bad.stderr
