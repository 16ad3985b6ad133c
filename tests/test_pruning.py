"""DeepPrune: similarities, greedy clustering, calibration, the strategy's exact token
accounting with the fake backend, the replay, and the real 135M model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ttscale.aggregation.pruning import (
    PruneParams,
    calibrate,
    cluster,
    jaccard_matrix,
    ngrams,
    parse_prune,
)
from ttscale.answers import solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.prune import PruneQuestion, prepare_prune, pruned, replay_prune
from ttscale.evaluation.runs.records import QuestionRecord, TraceRecord
from ttscale.solve import solve
from ttscale.types import Chat, Prompt, TokenLogprob

QUESTION = "Tom has 3 apples and buys 4 more. How many?"


def test_ngrams_and_jaccard() -> None:
    assert ngrams("A, b", 1) == {("a",), (",",), ("b",)}
    assert ngrams("one two", 3) == {("one", "two")}
    m = jaccard_matrix(["add 3 and 4", "add 3 and 4", "multiply 3 by 4", ""], 2)
    assert m[0, 1] == 1.0 and m[0, 2] == 0.0 and m[3, 3] == 1.0
    assert m[0, 3] == 0.0 and np.allclose(m, m.T)


def test_greedy_clustering_follows_the_order_and_the_representative() -> None:
    # 2 is close to 1 but not to 0: in index order it cannot join 0's cluster through 1
    s = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.8], [0.3, 0.8, 1.0]])
    assert cluster(s, 0.7) == [[0, 1], [2]]
    assert cluster(s, 0.7, order=[1, 0, 2]) == [[1, 0, 2]]
    assert cluster(s, 0.0) == [[0, 1, 2]] and cluster(s, 0.81) == [[0], [1], [2]]


def test_calibration_is_the_lowest_threshold_with_the_precision() -> None:
    sims = [0.95, 0.9, 0.9, 0.7, 0.6, 0.3]
    same = [True, True, False, True, True, False]
    # precision by threshold: 0.95 -> 1, 0.9 -> 2/3, 0.7 -> 3/4, 0.6 -> 4/5, 0.3 -> 4/6
    assert calibrate(sims, same, 0.8) == 0.6
    assert calibrate(sims, same, 0.9) == 0.95
    assert calibrate(sims, same, 0.5) == 0.3
    with pytest.raises(ConfigError, match="precision"):
        calibrate(sims, same, 0.0)


def test_params_parse_and_validate() -> None:
    assert parse_prune("prefix=32,similarity=embedding").cut == 0.9
    assert parse_prune("threshold=0.3").cut == 0.3
    for bad, words in (("prefix=0", "prefix must be"), ("similarity=bleu", "unknown similarity"),
                       ("threshold=2", "threshold must be"), ("prefix=x", "must be a number")):
        with pytest.raises(ConfigError, match=words):
            parse_prune(bad)


PREFIX_TEXTS = ["add 3 and 4 to get 7 so \\boxed{7}", "add 3 and 4 so we get \\boxed{7}",
                "multiply 3 by 4 for 12 so \\boxed{12}", "add 3 and 4 to get 7 so \\boxed{7}"]


def scripted() -> FakeBackend:
    def script(p: Prompt, i: int) -> str:
        assert isinstance(p, Chat)
        if not p.prefill:
            return PREFIX_TEXTS[i % 4]
        # a continuation follows its prefix, with a few more words
        return "thus the total is \\boxed{12}" if "multiply" in p.prefill else "total \\boxed{7}"

    return FakeBackend(script=script)


def test_strategy_finishes_one_trace_per_cluster_and_counts_every_token() -> None:
    fb = scripted()
    r = solve(QUESTION, backend=fb, strategy="deepprune:prefix=4,threshold=0.5", n=4,
              max_tokens=50)
    # prefixes "add 3 and 4" x3 and "multiply 3 by 4": two clusters, two continuations
    assert r.answer == "7"
    assert [(c.answer, c.votes, c.traces) for c in r.classes] == [("7", 3, (0, 1, 3)),
                                                                  ("12", 1, (2,))]
    assert [t.finish_reason for t in r.traces] == ["stop", "aborted", "stop", "aborted"]
    base = solve_prompt(QUESTION)
    # one call of 4 prefixes of 4 words, then one call with 2 prompts that re-read the prompt
    # and the prefix, adding 2 and 5 words
    again = [Chat(base.messages, prefill=r.traces[i].text.split("total")[0].split("thus")[0])
             for i in (0, 2)]
    assert [p.prefill for p in again] == ["add 3 and 4", "multiply 3 by 4"]
    assert r.usage.prompt_tokens == 4 * fb.count_tokens(base) + sum(
        fb.count_tokens(p) for p in again)
    assert r.usage.completion_tokens == 4 * 4 + 2 + 5
    first, second = fb.calls[0][1], fb.calls[-1][1]
    assert (first.n, first.max_tokens) == (4, 4) and second.max_tokens == 46
    assert [p for p, _ in fb.calls[-2:]] == again  # both continuations in one call
    assert r.traces[0].text == "add 3 and 4total \\boxed{7}"
    assert r.traces[0].completion_tokens == 4 + 2


def test_prefixes_that_finish_need_no_continuation() -> None:
    fb = FakeBackend(responses=["\\boxed{7}", "\\boxed{7}", "so \\boxed{8}"])
    r = solve(QUESTION, backend=fb, strategy="deepprune:prefix=8,threshold=0.9", n=3)
    assert r.usage.calls == 1 and r.answer == "7"
    assert [(c.answer, c.votes) for c in r.classes] == [("7", 2), ("8", 1)]


def test_strategy_refuses_bad_options_before_sampling() -> None:
    fb = FakeBackend()
    with pytest.raises(ConfigError, match="DeepPrune has no option"):
        solve(QUESTION, backend=fb, strategy="deepprune:k=4")
    assert fb.calls == []


def stored(qid: str, gold: str, traces: list[tuple[str, str | None]],
           prompt: int = 10) -> QuestionRecord:
    out = []
    for i, (text, answer) in enumerate(traces):
        words = text.split(" ")
        toks = tuple(TokenLogprob(w if k == 0 else " " + w, -0.1) for k, w in enumerate(words))
        out.append(TraceRecord(0, i, text, answer, prompt, len(words), logprobs=toks))
    return QuestionRecord(qid, qid, gold, tuple(out))


def test_replay_charges_prefixes_and_representatives_exactly() -> None:
    rec = stored("q", "7", [("add 3 and 4 w w w w w 7", "7"), ("add 3 and 4 x x 7", "7"),
                            ("multiply 3 by 4 12", "12"), ("7", "7")])
    q = prepare_prune([rec], PruneParams(prefix=4, threshold=0.5))[0]
    out = pruned(q, [0, 1, 2, 3], PruneParams(prefix=4, threshold=0.5))
    # prefixes: 4 + 4 + 4 + 1 tokens; clusters {0, 1}, {2}, {3}: 0 continues (10 tokens
    # total), 2 continues (5), 3 had finished; each sample's prompt of 10, each continuation
    # re-reads prompt + prefix
    assert out.correct and out.winner == q.classes[0]
    assert out.tokens == (4 * 10 + 13) + (10 + 10) + (10 + 5)
    point, per = replay_prune([q], PruneParams(prefix=4, threshold=0.5), 4, orders=5)
    assert point.n == 4 and len(per) == 1 and point.accuracy == 1.0


def test_replay_of_unanimous_samples_costs_one_trace_plus_prefixes() -> None:
    q = PruneQuestion("q", (0,) * 8, (True,), (20,) * 8, (100,) * 8, np.ones((8, 8)))
    point, _ = replay_prune([q], PruneParams(prefix=16), 8, orders=5)
    assert point.mean_tokens == 8 * (20 + 16) + 20 + 100  # majority: 8 * 120 = 960
    assert point.accuracy == 1.0


def test_replay_refuses_runs_without_tokens() -> None:
    bare = QuestionRecord("q", "?", "1", (TraceRecord(0, 0, "1", "1", 3, 1),))
    with pytest.raises(ConfigError, match="without stored tokens"):
        prepare_prune([bare], PruneParams())


def test_cli_replay_deepprune(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ttscale.cli.main import app

    runner = CliRunner()
    out = tmp_path / "run"
    done = runner.invoke(app, ["eval", "--dataset", "gsm8k", "--limit", "2", "--backend",
                               "fake", "--n", "4", "--out", str(out)])
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["eval", "replay", str(out), "--strategies",
                               "majority,deepprune", "--n", "4", "--json", "--resamples", "5",
                               "--prune", "prefix=2", "--prune", "prefix=8,threshold=1"])
    assert done.exit_code == 0, done.output
    points = {json.loads(x)["strategy"]: json.loads(x) for x in done.stdout.splitlines()}
    assert set(points) == {"majority", "deepprune[jaccard,prefix=2]",
                           "deepprune[jaccard,prefix=8,threshold=1]"}
    # the fake's samples are all "The answer is 42." (4 tokens): majority pays 4 x (p + 4)
    prompt = points["majority"]["mean_tokens"] / 4 - 4
    # identical prefixes: one cluster; 4 prefixes of 2 tokens, one continuation
    assert points["deepprune[jaccard,prefix=2]"]["mean_tokens"] == 4 * (prompt + 2) + (
        prompt + 4)
    # a prefix longer than every sample: nothing is left to continue
    assert points["deepprune[jaccard,prefix=8,threshold=1]"]["mean_tokens"] == points[
        "majority"]["mean_tokens"]
    bad = runner.invoke(app, ["eval", "replay", str(out), "--strategies", "deepprune",
                              "--prune", "similarity=bleu"])
    assert bad.exit_code == 2 and "unknown similarity 'bleu'" in bad.output


@pytest.mark.slow
def test_embedding_similarity_from_the_packaged_model() -> None:
    from ttscale.aggregation.pruning import embedding_matrix

    m = embedding_matrix(["Add 3 and 4 to get 7.", "Adding 3 and 4 gives 7.",
                          "The cat sleeps on the sofa."])
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1.0, atol=1e-5)
    assert m[0, 1] > 0.7 > m[0, 2]


@pytest.mark.slow
def test_real_deepprune_continues_representatives(small_backend: object) -> None:
    from ttscale.backends.base import Backend

    assert isinstance(small_backend, Backend)
    r = solve("What is 12 + 30?", backend=small_backend,
              strategy="deepprune:prefix=8,threshold=0.3", n=4, max_tokens=40, seed=2)
    assert len(r.traces) == 4
    assert r.usage.completion_tokens == sum(t.completion_tokens for t in r.traces)
    reps = [t for t in r.traces if t.finish_reason != "aborted"]
    members = [t for t in r.traces if t.finish_reason == "aborted"]
    assert reps and all(t.completion_tokens <= 8 for t in members)
    assert sum(c.votes for c in r.classes) <= 4
    assert all(t.completion_tokens <= 40 for t in r.traces)
