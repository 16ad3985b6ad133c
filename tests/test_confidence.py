"""DeepConf: confidence measures, offline and online strategies (exact token accounting with
the fake backend, streaming through llama.cpp with the 135M model), and the replay."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pytest

from ttscale.aggregation.confidence import (
    ConfidenceParams,
    GroupMonitor,
    abort_after,
    group_confidences,
    parse_confidence,
    select,
    threshold,
    token_confidences,
    trace_confidence,
)
from ttscale.answers import solve_prompt
from ttscale.backends.fake import FakeBackend
from ttscale.backends.streaming import StreamedSample, generate_watched
from ttscale.budget import Budget
from ttscale.errors import ConfigError
from ttscale.evaluation.replay.confidence import (
    ConfQuestion,
    offline,
    online,
    prepare_confidence,
    replay_confidence,
)
from ttscale.evaluation.runs.records import QuestionRecord, TraceRecord
from ttscale.params import SamplingParams
from ttscale.solve import solve
from ttscale.types import GenerateOutput, Prompt, TokenLogprob

QUESTION = "What is 2+2?"


def test_token_confidence_is_minus_mean_top_k_logprob() -> None:
    t = TokenLogprob("a", -0.2, (("a", -0.2), ("b", -2.0), ("c", -4.0), ("d", -9.0)))
    assert token_confidences([t], top_k=3)[0] == pytest.approx((0.2 + 2.0 + 4.0) / 3)
    assert token_confidences([t], top_k=20)[0] == pytest.approx((0.2 + 2 + 4 + 9) / 4)
    # a peaked distribution (unlikely alternatives) is more confident than a flat one
    flat = TokenLogprob("a", -0.7, (("a", -0.7), ("b", -0.7)))
    assert token_confidences([t], 2)[0] > token_confidences([flat], 2)[0]


def test_group_and_trace_measures() -> None:
    conf = np.array([4.0, 4.0, 4.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0, 2.0])
    assert group_confidences(conf, 3).tolist() == pytest.approx(
        [4, 3, 2, 2, 3, 4, 4, 10 / 3])
    p = ConfidenceParams(window=3, tail=2)
    assert trace_confidence(conf, p, "lowest") == 2.0
    assert trace_confidence(conf, p, "tail") == 3.0
    assert trace_confidence(conf, p, "bottom10") == 2.0  # ceil(10% of 8 groups) = 1 group
    assert trace_confidence(conf, p, "mean") == pytest.approx(3.2)


def test_monitor_aborts_where_the_replay_cuts() -> None:
    rng = random.Random(3)
    for _ in range(200):
        conf = np.array([rng.uniform(0.5, 3.0) for _ in range(rng.randint(1, 40))])
        window, bar = rng.randint(1, 8), rng.uniform(1.2, 2.2)
        m = GroupMonitor(bar, window, top_k=1)
        first = next((i + 1 for i, c in enumerate(conf)
                      if m.push(TokenLogprob("x", -float(c)))), None)
        assert first == abort_after(conf, window, bar)


def test_selection_threshold_and_params() -> None:
    assert select([1.0, 5.0, 3.0, 4.0, 2.0], 0.4) == [False, True, False, True, False]
    assert sum(select([1.0] * 16, 0.1)) == 2 and sum(select([1.0] * 16, 0.9)) == 15
    assert threshold([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.1) == pytest.approx(9.1)
    assert threshold([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == pytest.approx(1.9)
    assert parse_confidence("eta=0.1,warmup=8,measure=tail") == ConfidenceParams(
        eta=0.1, warmup=8, measure="tail")
    for bad, words in (("eta=0", "eta must be in (0, 1]"), ("window=0", "window and tail"),
                       ("measure=max", "unknown confidence measure"), ("eta", "KEY=VALUE"),
                       ("eta=x", "must be a number")):
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_confidence(bad)


# -- strategies with the fake backend ---------------------------------------------------------

def lps_by_seed(unsure: Collection[int]) -> FakeBackend:
    """Answers cycle 4, 5, 4, 5...; samples whose seed is in ``unsure`` have flat tokens."""
    return FakeBackend(
        script=lambda _p, i: f"so it is \\boxed{{{4 + i % 2}}}",
        token_logprobs=lambda _p, seed, _pos, _s: ([-0.7, -0.8, -0.9] if seed in unsure
                                                   else [-0.01, -6.0, -7.0]))


def test_offline_keeps_the_confident_share_and_weights_votes() -> None:
    fb = lps_by_seed(unsure={0, 2, 4})  # every "4" is unsure, every "5" sure
    r = solve(QUESTION, backend=fb, strategy="deepconf:eta=0.5", n=6)
    assert r.answer == "5"
    assert [(c.answer, c.votes) for c in r.classes] == [("5", 3)]
    assert r.usage.completion_tokens == 6 * 4  # offline: every sample is whole
    assert fb.calls[0][1].logprobs and fb.calls[0][1].top_logprobs == 5
    # with eta=1 every trace votes, but weighted: three sure 5s beat three unsure 4s
    r = solve(QUESTION, backend=lps_by_seed({0, 2, 4}), strategy="deepconf:eta=1", n=6)
    assert r.answer == "5" and sum(c.votes for c in r.classes) == 6


def test_online_aborts_and_charges_tokens_up_to_the_abort() -> None:
    words = " ".join(f"w{k}" for k in range(20))
    # warm-up (seeds 0-3) sure and split 4/5; later samples sure for 5 tokens, then flat
    fb = FakeBackend(responses=[words + " \\boxed{4}", words + " \\boxed{5}"],
                     token_logprobs=lambda _p, seed, pos, _s: (
                         [-0.01, -6.0] if seed < 4 or pos < 5 else [-0.7, -0.7]))
    r = solve(QUESTION, backend=fb, strategy="deepconf_online:window=4,warmup=4,batch=3",
              n=10)
    finishes = [t.finish_reason for t in r.traces]
    assert finishes == ["stop"] * 4 + ["aborted"] * 6
    # an aborted sample keeps its tokens up to the first window below the bar (every
    # warm-up trace has confidence 3.005, so the bar is 3.005): the window of positions 2-5
    # holds one flat token, (3 * 3.005 + 0.7) / 4 < 3.005, so positions 0-5 are kept
    assert [t.completion_tokens for t in r.traces] == [21] * 4 + [6] * 6
    prompt = fb.count_tokens(solve_prompt(QUESTION))
    assert r.usage.completion_tokens == 4 * 21 + 6 * 6
    assert r.usage.prompt_tokens == 10 * prompt
    assert r.usage.calls == 1 + 6  # the warm-up in one call, then one stream per sample
    # aborted samples never vote: 2 against 2, the tie goes to the class seen first
    assert r.answer == "4" and [c.votes for c in r.classes] == [2, 2]


def test_online_stops_at_consensus_after_the_warmup() -> None:
    fb = FakeBackend(responses=["so \\boxed{4}"])
    r = solve(QUESTION, backend=fb, strategy="deepconf_online:warmup=3", n=16)
    assert len(r.traces) == 3 and r.answer == "4"


def test_online_keeps_sampling_until_n_when_split() -> None:
    fb = lps_by_seed(unsure=set())
    r = solve(QUESTION, backend=fb, strategy="deepconf_online:warmup=2,batch=4,window=2", n=9)
    assert len(r.traces) == 9  # 2 + 4 + 3: the last batch is cut to n
    assert [c.votes for c in r.classes] == [5, 4]


class NoStream:
    """A backend without streaming: the online strategy must fall back and say so."""

    def __init__(self, inner: FakeBackend) -> None:
        self.inner, self.name, self.model_id = inner, "nostream", "x"
        self.params_count = inner.params_count

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        return self.inner.generate(prompts, params)

    def count_tokens(self, prompt: Prompt) -> int:
        return self.inner.count_tokens(prompt)

    def close(self) -> None:
        pass


def test_online_without_streaming_cuts_afterwards_and_charges_everything() -> None:
    words = " ".join(f"w{k}" for k in range(20)) + " \\boxed{4}"
    inner = FakeBackend(responses=[words, words.replace("{4}", "{5}")],
                        token_logprobs=lambda _p, seed, pos, _s: (
                            [-0.01, -6.0] if seed < 4 or pos < 5 else [-0.7, -0.7]))
    r = solve(QUESTION, backend=NoStream(inner),
              strategy="deepconf_online:window=4", n=6)
    assert [t.finish_reason for t in r.traces] == ["stop"] * 4 + ["aborted"] * 2
    assert r.usage.completion_tokens == 6 * 21  # every generated token was spent
    assert any("cannot stream" in note for note in r.notes)


def test_online_respects_a_token_budget() -> None:
    fb = lps_by_seed(unsure=set())
    prompt = fb.count_tokens(solve_prompt(QUESTION))
    cap = 5 * (prompt + 8)
    r = solve(QUESTION, backend=fb, strategy="deepconf_online:warmup=2,batch=2,tau=1", n=16,
              max_tokens=8, budget=Budget(max_tokens=cap))
    assert r.budget_limited and 2 < len(r.traces) < 16
    # it stopped when one more sample could no longer be paid at its worst case
    assert r.usage.total_tokens <= cap < r.usage.total_tokens + prompt + 8


def test_bad_strategy_options_fail_before_sampling() -> None:
    fb = FakeBackend()
    with pytest.raises(ConfigError, match="DeepConf has no option 'x'"):
        solve(QUESTION, backend=fb, strategy="deepconf_online:x=1")
    with pytest.raises(ConfigError, match="strategy majority has no option eta: its options "
                                          "are vote"):
        solve(QUESTION, backend=fb, strategy="majority:eta=0.1")
    assert fb.calls == []


def test_streamed_chunks_error_and_usage() -> None:
    s = StreamedSample(1, 9, lambda _i, _t: False, top_k=2)
    tok = {"token": "x", "logprob": -0.5, "top_logprobs": [{"token": "x", "logprob": -0.5}]}
    s.feed({"choices": [{"delta": {"content": "x"}, "logprobs": {"content": [tok]},
                         "finish_reason": "length"}]})
    s.feed({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 1}})
    g = s.generation(prompt_tokens=99)
    assert (g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason, g.seed) == (
        "x", 12, 1, "length", 9)
    assert g.logprobs is not None and g.logprobs[0].top == (("x", -0.5),)
    bad = StreamedSample(0, 0, lambda _i, _t: False)
    assert bad.feed({"error": {"message": "context full"}}) and bad.error == "context full"


def test_generate_watched_streams_the_fake_side_by_side() -> None:
    fb = FakeBackend(responses=["a b c d", "e f"])
    seen: list[tuple[int, str]] = []

    def watch(i: int, t: TokenLogprob) -> bool:
        seen.append((i, t.token))
        return i == 0 and t.token == " b"

    out, streamed = generate_watched(fb, "q", SamplingParams(n=2, seed=0), watch)
    assert streamed
    assert [g.text for g in out.generations[0]] == ["a b", "e f"]
    assert out.usage.completion_tokens == 4 and out.usage.prompt_tokens == 2
    # a token of each sample in turn, as a batched server streams them
    assert seen == [(0, "a"), (1, "e"), (0, " b"), (1, " f")]


# -- replay ------------------------------------------------------------------------------------

def record(qid: str, gold: str, samples: Sequence[tuple[str | None, Sequence[float]]],
           prompt: int = 10) -> QuestionRecord:
    """A stored question: each sample an answer and its tokens' sampled log-probabilities."""
    traces = []
    for i, (answer, lps) in enumerate(samples):
        # the runner-up takes the rest of the mass: a likelier sampled token, more confidence
        toks = tuple(TokenLogprob(f"t{k}", lp, (("a", lp), ("b", math.log1p(-math.exp(lp)))))
                     for k, lp in enumerate(lps))
        traces.append(TraceRecord(0, i, "", answer, prompt, len(lps), logprobs=toks))
    return QuestionRecord(qid, qid, gold, tuple(traces))


def test_replay_offline_and_online_count_exact_tokens() -> None:
    sure, flat = [-0.01] * 6, [-0.01, -0.01, -3.0, -3.0, -3.0, -3.0]
    q = prepare_confidence([record("q", "4", [("4", sure), ("4", sure), ("5", flat),
                                               ("5", flat), ("5", flat)])])[0]
    p = ConfidenceParams(eta=0.4, window=2, warmup=2, batch=1)
    out = offline(q, range(5), p)
    assert out.correct and out.tokens == 5 * 16  # majority would pick 5
    o = online(q, [0, 1, 2, 3, 4], p, 5)
    # warm-up unanimous for 4 (share 1 >= 0.95): nothing more is drawn
    assert (o.drawn, o.tokens, o.correct) == (2, 32, True)
    o = online(q, [0, 2, 1, 3, 4], ConfidenceParams(eta=0.9, window=2, warmup=2, batch=2,
                                                    tau=1.0), 5)
    # sure tokens have confidence 2.305, flat ones 1.525; the bar is the 10th percentile of
    # the warm-up's (2.305, 1.525): 1.603. Sample 1 runs whole; 3 and 4 are cut when their
    # second window, (2.305 + 1.525) / 2 then 1.525, falls below it: 4 tokens each.
    assert (o.drawn, o.correct) == (5, True)
    assert o.tokens == 3 * 16 + 2 * (10 + 4)


def test_replay_orders_are_reproducible_and_averaged() -> None:
    qs = [ConfQuestion(f"q{k}", (0, 1, 0, 1, 0), (True, False), (5,) * 5, (8,) * 5,
                       tuple(np.full(8, c) for c in (3.0, 1.0, 2.5, 2.0, 0.5)))
          for k in range(3)]
    p = ConfidenceParams(warmup=2, window=4, batch=1)
    a, per_a = replay_confidence(qs, p, 5, mode="online", orders=7, seed=4)
    b, _ = replay_confidence(qs, p, 5, mode="online", orders=7, seed=4)
    assert a == b and len(per_a) == 3
    assert a.strategy == "deepconf_online[window=4,warmup=2,batch=1]"
    assert 0 <= a.accuracy <= 1 and a.mean_tokens <= 5 * 13
    with pytest.raises(ConfigError, match="fewer than n=6"):
        replay_confidence(qs, p, 6)


def test_replay_refuses_samples_without_logprobs() -> None:
    bare = QuestionRecord("q", "?", "1", (TraceRecord(0, 0, "1", "1", 3, 1),))
    with pytest.raises(ConfigError, match="without token log-probabilities"):
        prepare_confidence([bare])


def test_cli_eval_and_replay_with_deepconf(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ttscale.cli.main import app

    runner = CliRunner()
    out = tmp_path / "run"
    done = runner.invoke(app, ["eval", "--dataset", "gsm8k", "--limit", "2", "--backend",
                               "fake", "--strategies", "majority,deepconf,deepconf_online",
                               "--n", "1,4", "--out", str(out), "--json"])
    assert done.exit_code == 0, done.output
    names = {json.loads(line)["strategy"] for line in done.stdout.splitlines()}
    assert {"majority", "deepconf", "deepconf_online"} <= names
    done = runner.invoke(app, ["eval", "replay", str(out), "--strategies",
                               "majority,deepconf,deepconf_online", "--n", "4",
                               "--resamples", "5", "--json", "--confidence", "eta=0.5",
                               "--confidence", "eta=0.9,warmup=2"])
    assert done.exit_code == 0, done.output
    points = {json.loads(line)["strategy"]: json.loads(line) for line in
              done.stdout.splitlines()}
    assert set(points) == {"majority", "deepconf[eta=0.5]", "deepconf[warmup=2]",
                           "deepconf_online[eta=0.5]", "deepconf_online[warmup=2]"}
    # the fake always answers 42 (wrong for GSM8K) and unanimously: online stops at warm-up
    assert points["deepconf_online[warmup=2]"]["mean_tokens"] == pytest.approx(
        points["majority"]["mean_tokens"] / 2)
    bad = runner.invoke(app, ["eval", "replay", str(out), "--strategies", "deepconf",
                              "--confidence", "eta=2"])
    assert bad.exit_code == 2 and "eta must be in (0, 1]" in bad.output


@pytest.mark.slow
def test_real_online_deepconf_streams_and_aborts(small_backend: object) -> None:
    from ttscale.backends.llamacpp import LlamaCppBackend

    assert isinstance(small_backend, LlamaCppBackend)
    # a bar no window of real text reaches: every streamed sample is cut at its first window
    cut = small_backend.generate_watched(
        solve_prompt(QUESTION), SamplingParams(n=2, max_tokens=64, seed=3, logprobs=True,
                                               top_logprobs=5),
        lambda i, t: GroupMonitor(math.inf, 1, 5).push(t))
    gens = cut.generations[0]
    assert [g.finish_reason for g in gens] == ["aborted", "aborted"]
    assert [g.completion_tokens for g in gens] == [1, 1]
    prompt = small_backend.count_tokens(solve_prompt(QUESTION))
    assert cut.usage.prompt_tokens == 2 * prompt and cut.usage.completion_tokens == 2
    r = solve(QUESTION, backend=small_backend, strategy="deepconf_online:warmup=2,batch=2,"
              "window=8,eta=0.1,tau=1", n=4, max_tokens=48, seed=1)
    assert len(r.traces) == 4
    assert r.usage.completion_tokens == sum(t.completion_tokens for t in r.traces)
    assert r.usage.prompt_tokens == 4 * prompt
    for t in r.traces[2:]:
        assert t.finish_reason in ("stop", "length", "aborted")
        assert t.finish_reason != "aborted" or 8 <= t.completion_tokens < 48
    whole = solve(QUESTION, backend=small_backend, strategy="deepconf", n=2, max_tokens=24)
    assert all(t.score is not None and t.score > 0 for t in whole.traces)
