"""SPRM: the loss, the trace score, head files, the model check, training, AUROC, usage."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import cast

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from ttscale.backends.fake import FakeBackend  # noqa: E402
from ttscale.errors import ConfigError  # noqa: E402
from ttscale.stats import auroc  # noqa: E402
from ttscale.verifiers.spec import build_verifier, check_verifier  # noqa: E402
from ttscale.verifiers.sprm.features import end_tokens, step_ends  # noqa: E402
from ttscale.verifiers.sprm.head import (  # noqa: E402
    HeadMeta,
    SPRMHead,
    SPRMVerifier,
    geometric_mean,
    head_paths,
    shipped_head,
    sprm_loss,
)
from ttscale.verifiers.sprm.train import (  # noqa: E402
    Example,
    Schedule,
    out_of_fold_scores,
    train_head,
)
from ttscale.verifiers.steps import split_steps  # noqa: E402

SHA = "ab" * 32
OTHER = "cd" * 32


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_loss_counts_only_steps_whose_prediction_agrees_with_the_label() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0], requires_grad=True)
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # agree: step 0 (0.88 > 0.5, y=1) and step 3 (0.05 < 0.5, y=0); steps 1 and 2 disagree
    loss = sprm_loss(logits, labels)
    loss.backward()
    expected = (softplus(-2.0) + softplus(-3.0)) / 2  # BCE: -log s for y=1, -log(1-s) for y=0
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    grad = logits.grad.tolist()
    assert grad[1] == 0.0 and grad[2] == 0.0  # filtered steps get no gradient
    assert grad[0] < 0.0 and grad[3] > 0.0  # agreeing steps are pushed further towards y


def test_loss_is_zero_when_no_step_agrees() -> None:
    loss = sprm_loss(torch.tensor([-1.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert float(loss) == 0.0


def test_loss_at_exactly_one_half_agrees_with_label_zero() -> None:
    # score 0.5 is not > 0.5, so it agrees with y = 0 and disagrees with y = 1
    assert float(sprm_loss(torch.tensor([0.0]), torch.tensor([0.0]))) == pytest.approx(
        math.log(2.0))
    assert float(sprm_loss(torch.tensor([0.0]), torch.tensor([1.0]))) == 0.0


def test_geometric_mean_of_step_scores() -> None:
    assert geometric_mean([0.5, 0.125]) == pytest.approx(0.25)
    assert geometric_mean([0.9, 0.9, 0.9]) == pytest.approx(0.9)
    assert geometric_mean([0.8, 0.2]) == pytest.approx(0.4)
    assert geometric_mean([]) == 0.5


def _meta(**kw: object) -> HeadMeta:
    base = dict(base_model_sha256=SHA, model="tiny", layer=2, n_layers=4, hidden_size=6,
                width=5, training={"dataset": "gsm8k", "split": "train"},
                metrics={"held_out": {"auroc": 0.7}})
    base.update(kw)
    return HeadMeta(**base)  # type: ignore[arg-type]


def test_head_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    head = SPRMHead.new(_meta(), seed=3, mean=rng.normal(size=6).astype(np.float32),
                        scale=rng.uniform(0.5, 2, size=6).astype(np.float32))
    weights = head.save(tmp_path / "tiny")
    assert weights.name == "tiny.sprm.safetensors"
    assert (tmp_path / "tiny.sprm.json").is_file()
    x = rng.normal(size=(4, 6)).astype(np.float32)
    for path in (weights, tmp_path / "tiny.sprm.json", tmp_path / "tiny"):
        again = SPRMHead.load(path)
        assert again.meta == head.meta
        assert again.step_scores(x) == pytest.approx(head.step_scores(x), abs=1e-7)
    assert all(0.0 < s < 1.0 for s in head.step_scores(x))


def test_a_missing_head_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no SPRM head at"):
        SPRMHead.load(tmp_path / "nothing")


def test_head_refuses_another_model_naming_both() -> None:
    head = SPRMHead.new(_meta())
    head.check_model(SHA, "tiny")  # the model it was trained on passes
    with pytest.raises(ConfigError) as err:
        head.check_model(OTHER, "bigger")
    text = str(err.value)
    assert "tiny" in text and "bigger" in text and SHA[:12] in text and OTHER[:12] in text
    assert text.count(". ") == 0  # one sentence


def _fake_with_model(sha: str, path: Path) -> FakeBackend:
    fb = FakeBackend(model_id="tiny-model")
    fb.sha256 = sha  # type: ignore[attr-defined]
    fb.model_path = path  # type: ignore[attr-defined]
    return fb


def test_verifier_spec_loads_a_head_and_refuses_a_mismatch(tmp_path: Path) -> None:
    head = SPRMHead.new(_meta())
    weights = head.save(tmp_path / "h")
    check_verifier(f"sprm:{weights}")  # the spec binds without loading anything
    v = build_verifier(f"sprm:{weights},reuse_tokens=0", _fake_with_model(SHA, tmp_path))
    assert v.name == "sprm" and v.reduce([0.25, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="reuse_tokens must be a number of tokens"):
        build_verifier(f"sprm:{weights},reuse_tokens=-1", _fake_with_model(SHA, tmp_path))
    v32 = cast(SPRMVerifier, build_verifier(f"sprm:{weights},dtype=float32",
                                            _fake_with_model(SHA, tmp_path)))
    assert v32.dtype == "float32"
    with pytest.raises(ConfigError, match="dtype must be auto, float32 or bfloat16, got 'fp8'"):
        build_verifier(f"sprm:{weights},dtype=fp8", _fake_with_model(SHA, tmp_path))
    with pytest.raises(ConfigError, match="not on the loaded model tiny-model"):
        build_verifier(f"sprm:{weights}", _fake_with_model(OTHER, tmp_path))


def test_verifier_picks_a_shipped_head_by_layer(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import ttscale.verifiers.sprm.head as sprm_module

    monkeypatch.setattr(sprm_module, "HEADS_DIR", tmp_path / "heads")
    deep = SPRMHead.new(_meta(layer=3)).save(tmp_path / "heads" / "deep")
    shallow = SPRMHead.new(_meta(layer=1)).save(tmp_path / "heads" / "shallow")
    fb = _fake_with_model(SHA, tmp_path)
    assert cast(SPRMVerifier, build_verifier("sprm", fb)).head_path == deep
    assert cast(SPRMVerifier, build_verifier("sprm,layer=1", fb)).head_path == shallow
    with pytest.raises(ConfigError, match="at layer 2: the shipped heads read layer 1, 3"):
        build_verifier("sprm,layer=2", fb)
    with pytest.raises(ConfigError, match="a head file or a layer of a shipped head, not both"):
        build_verifier(f"sprm:{deep},layer=3", fb)
    with pytest.raises(ConfigError, match="verifier sprm option layer must be a whole number, "
                                          "got four"):
        build_verifier("sprm,layer=\"four\"", fb)
    with pytest.raises(ConfigError, match="layer must be the positive layer"):
        build_verifier("sprm,layer=0", fb)


def test_verifier_needs_a_model_file_and_a_head(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use the llamacpp backend"):
        build_verifier("sprm", FakeBackend())
    with pytest.raises(ConfigError, match="no SPRM head ships for tiny-model"):
        build_verifier("sprm", _fake_with_model("ee" * 32, tmp_path))


def test_verifier_usage_counts_reread_tokens_and_scales_flops_by_depth(tmp_path: Path) -> None:
    weights = SPRMHead.new(_meta(layer=1, n_layers=4)).save(tmp_path / "h")
    fb = _fake_with_model(SHA, tmp_path)
    v = cast(SPRMVerifier, build_verifier(f"sprm:{weights}", fb))
    total, per = v.usage([100, 50, 30], 3.0)  # prompt + trace tokens of three traces
    assert total.prompt_tokens == 180 and total.completion_tokens == 0
    assert total.calls == 3  # one forward pass per trace
    assert total.flops == pytest.approx(2.0 * fb.params_count * 180 / 4)
    assert [u.prompt_tokens for u in per] == [100, 50, 30]
    assert sum(u.seconds for u in per) == pytest.approx(3.0)
    assert sum(u.flops for u in per) == pytest.approx(total.flops)


def test_questions_in_flight_share_one_loaded_extractor(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent first scores (eval runs several questions at once) load the model once."""
    import threading
    import time

    from ttscale.verifiers.sprm import features as sprm_features

    loads: list[int] = []

    def slow_load(*_a: object, **_k: object) -> object:
        loads.append(1)
        time.sleep(0.2)  # long enough for every thread to arrive while it loads
        return object()

    monkeypatch.setattr(sprm_features.TorchFeatures, "load", staticmethod(slow_load))
    v = cast(SPRMVerifier, build_verifier(f"sprm:{SPRMHead.new(_meta()).save(tmp_path / 'h')}",
                                          _fake_with_model(SHA, tmp_path)))
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(v.features)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(got) == 4 and len({id(g) for g in got}) == 1


def test_shipped_head_is_found_by_sha(tmp_path: Path) -> None:
    SPRMHead.new(_meta()).save(tmp_path / "tiny")
    SPRMHead.new(_meta(base_model_sha256=OTHER, model="other")).save(tmp_path / "other")
    assert shipped_head(SHA, tmp_path) == tmp_path / "tiny.sprm.safetensors"
    assert shipped_head(OTHER, tmp_path) == tmp_path / "other.sprm.safetensors"
    assert shipped_head("ff" * 32, tmp_path) is None
    SPRMHead.new(_meta(layer=1)).save(tmp_path / "a-shallow")  # sorts first, reads layer 1
    assert shipped_head(SHA, tmp_path) == tmp_path / "tiny.sprm.safetensors"  # the deepest
    assert shipped_head(SHA, tmp_path, layer=1) == tmp_path / "a-shallow.sprm.safetensors"
    assert shipped_head(SHA, tmp_path, layer=3) is None
    assert head_paths(tmp_path / "x.sprm.safetensors")[1].name == "x.sprm.json"


@pytest.mark.parametrize("text", [
    "a\n\nb", "  a \n\n\n\n b\n\n", "", "one step", "x\n\ny\n\n\n\nz\n\n  \n\nw",
    "trailing\n\n", "\n\nleading",
])
def test_step_ends_match_split_steps(text: str) -> None:
    ends = step_ends(text, "\n\n")
    steps = split_steps(text, "\n\n")
    assert len(ends) == len(steps)
    for end, step in zip(ends, steps, strict=True):
        if step:
            assert text[:end].rstrip().endswith(step)
            assert text.startswith("\n\n", end) or not text[end:].strip()


def test_end_tokens_pick_the_break_token_or_the_last() -> None:
    text = "ab.\n\ncd"
    # tokens: "ab", ".\n\n" (a merge of the step's end and the delimiter), "cd"
    offsets = [(0, 2), (2, 5), (5, 7)]
    assert end_tokens(offsets, step_ends(text, "\n\n")) == [1, 2]


def test_auroc_equals_pairwise_count() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    labels = rng.integers(0, 2, size=40)
    rows = list(zip(scores, labels, strict=True))
    pairs = [(s, t) for (s, a), (t, b) in itertools.product(rows, rows) if a == 1 and b == 0]
    brute = sum(1.0 if s > t else 0.5 if s == t else 0.0 for s, t in pairs) / len(pairs)
    assert auroc(scores.tolist(), labels.tolist()) == pytest.approx(brute)
    assert auroc([0.3, 0.2], [1, 1]) is None


def test_training_learns_a_separable_signal_and_records_metrics() -> None:
    rng = np.random.default_rng(0)
    examples = []
    for q in range(30):
        for s in range(4):
            label = int(rng.random() < 0.5)
            steps = int(rng.integers(1, 5))
            x = rng.normal(size=(steps, 6)).astype(np.float32)
            x[:, 2] += 2.0 if label else -2.0  # the correctness signal, in one direction
            examples.append(Example(f"q{q}", s, x, label, 100, 0.1))
    head = train_head(examples, _meta(), holdout=0.3, seed=0, threads=1)
    m = head.meta.metrics
    assert m["held_out"]["questions"] == 9 and m["train"]["questions"] == 21
    assert m["held_out"]["traces"] + m["train"]["traces"] == len(examples)
    assert m["held_out"]["auroc"] > 0.9
    assert 1 <= m["best_epoch"] <= m["epochs_run"] <= 300 and m["warmup_epochs"] == 25
    assert head.meta.created


def test_cross_validation_picks_the_epoch_count_then_trains_on_every_question() -> None:
    rng = np.random.default_rng(1)
    examples = []
    for q in range(20):
        for s in range(3):
            label = int(rng.random() < 0.5)
            x = rng.normal(size=(int(rng.integers(1, 4)), 6)).astype(np.float32)
            x[:, 1] += 1.5 if label else -1.5
            examples.append(Example(f"q{q}", s, x, label, 100, 0.1))
    ticks: list[tuple[int, int]] = []
    head = train_head(examples, _meta(), folds=4, epochs=40, warmup=10, lr=0.02, threads=1,
                      on_epoch=lambda done, total: ticks.append((done, total)))
    m = head.meta.metrics
    cv = m["cross_validation"]
    assert cv["folds"] == 4 and 1 <= cv["best_epoch"] <= 40 and cv["auroc"] > 0.8
    # the final head trains on every question for exactly the chosen number of epochs
    assert m["train"]["questions"] == 20 and m["held_out"]["traces"] == 0
    assert m["best_epoch"] == m["epochs_run"] == cv["best_epoch"]
    assert m["loss"].startswith("cross-entropy on every step")
    assert ("SPRM loss" in m["loss"]) == (cv["best_epoch"] > 10)
    assert len(ticks) == 4 * 40 + cv["best_epoch"] and ticks[-1][0] == ticks[-1][1]


def test_out_of_fold_scores_never_see_their_own_labels() -> None:
    rng = np.random.default_rng(2)
    examples = []
    for q in range(12):
        for s in range(3):
            label = int(rng.random() < 0.5)
            x = rng.normal(size=(2, 6)).astype(np.float32)
            x[:, 3] += 1.5 if label else -1.5
            examples.append(Example(f"q{q}", s, x, label, 100, 0.1))
    fit = Schedule(lr=0.02, epochs=30, warmup=10)
    scores = out_of_fold_scores(examples, _meta(), fit, folds=3)
    auc = auroc(scores, [e.label for e in examples])
    assert auc is not None and auc > 0.8
    # flipping q0's labels changes the heads that trained on q0, never the one that scored it
    flipped = [Example(e.question_id, e.sample, e.vectors, 1 - e.label, 100, 0.1)
               if e.question_id == "q0" else e for e in examples]
    again = out_of_fold_scores(flipped, _meta(), fit, folds=3)
    own = [i for i, e in enumerate(examples) if e.question_id == "q0"]
    assert [again[i] for i in own] == pytest.approx([scores[i] for i in own], abs=1e-6)
    assert again != pytest.approx(scores, abs=1e-6)


def test_cross_validation_refuses_too_few_questions() -> None:
    x = np.ones((1, 6), np.float32)
    examples = [Example("q0", 0, x, 1, 10, 0.1), Example("q1", 0, x, 0, 10, 0.1)]
    with pytest.raises(ConfigError, match="lower --folds"):
        train_head(examples, _meta(), folds=5, epochs=3, threads=1)


def test_standardised_features_are_clipped() -> None:
    """A coordinate far outside its training range counts as CLIP deviations, no more."""
    head = SPRMHead.new(_meta(), seed=0, mean=np.zeros(6, np.float32),
                        scale=np.full(6, 1e-3, np.float32))
    near, far = np.zeros((1, 6), np.float32), np.zeros((1, 6), np.float32)
    near[0, 2], far[0, 2] = 1.0, 1e6  # 1,000 and 10^9 deviations: both clipped to CLIP
    assert head.step_scores(near) == head.step_scores(far)
    inside = np.zeros((1, 6), np.float32)
    inside[0, 2] = 1e-3  # one deviation: not clipped, so it scores differently
    assert head.step_scores(inside) != head.step_scores(near)


def test_train_refuses_a_test_split_run_in_one_sentence(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, COLUMNS="120")
    run = tmp_path / "test-run"
    made = subprocess.run([sys.executable, "-m", "ttscale", "eval", "--backend", "fake",
                           "--dataset", "gsm8k", "--split", "test", "--ids", "0", "--n", "1",
                           "--out", str(run)], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert made.returncode == 0, made.stderr
    proc = subprocess.run([sys.executable, "-m", "ttscale", "sprm", "train", str(run), "--out",
                           str(tmp_path / "head")], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == (f"error: {run} holds gsm8k test traces, and an SPRM head "
                                   "trains on gsm8k train only: collect with ttscale sprm "
                                   "collect --split train")
    assert not (tmp_path / "head.sprm.safetensors").exists()


def test_the_default_model_ships_a_head_trained_on_gsm8k_train() -> None:
    from ttscale import models

    spec = models.CATALOG[models.DEFAULT_MODEL]
    path = shipped_head(spec.sha256)
    assert path is not None and path.parent.name == "heads"
    head = SPRMHead.load(path)
    assert head.meta.base_model_sha256 == spec.sha256 and head.meta.model == spec.name
    assert (head.meta.training["dataset"], head.meta.training["split"]) == ("gsm8k", "train")
    cv = head.meta.metrics["cross_validation"]
    assert head.meta.layer < head.meta.n_layers and cv["folds"] >= 2 and cv["auroc"] > 0.5
    assert head.meta.metrics["best_epoch"] == cv["best_epoch"]
    scores = head.step_scores(np.zeros((3, head.meta.hidden_size), np.float32))
    assert len(scores) == 3 and all(0.0 < s < 1.0 for s in scores)
