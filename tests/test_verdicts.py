"""A guided search resumed after an interruption replays its verifier calls from the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ttscale.backends.fake import FakeBackend
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig, Harness, run_settings
from ttscale.evaluation.runs.archive import export_run, restore_run
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.store import FILE_NAME, ResultRow, Store
from ttscale.evaluation.runs.verdicts import CachedVerifier
from ttscale.verifiers.self_judge import SelfJudge

PROBLEMS = [Problem(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(2)]
CFG = EvalConfig(strategies=("beam:width=2", "ab_mcts"), ns=(4,), verifier="self_judge",
                 concurrency=2)


def script(_prompt: object, i: int) -> str:
    return f"Step one.\n\nStep two.\n\nThe answer is \\boxed{{{i % 3 + 1}}}."


def run(run_dir: Path, fake: FakeBackend) -> list[ResultRow]:
    settings = run_settings(CFG, model="fake", model_sha256="f" * 64, dataset="t",
                            split="test")
    with Store.open(run_dir, settings) as store:
        Harness(CFG, CachedBackend(fake, store, "f" * 64), store).run(PROBLEMS)
        return sorted(store.results(), key=lambda r: (r.question_id, r.strategy))


def forget_results(run_dir: Path) -> None:
    """What a kill before a question's rows were written leaves: its generations and
    verdicts stored, no result rows and no trees."""
    with sqlite3.connect(run_dir / FILE_NAME) as conn:
        conn.execute("DELETE FROM results")
        conn.execute("DELETE FROM trees")


def test_a_resumed_search_calls_neither_model_nor_verifier_and_costs_the_same(
        tmp_path: Path) -> None:
    fake = FakeBackend(script=script, yes_logprob=-0.3)
    first = run(tmp_path, fake)
    calls = len(fake.calls)
    judged = sum(1 for _p, params in fake.calls if params.logprobs)
    assert judged > 0 and len(first) == 4
    forget_results(tmp_path)
    again = run(tmp_path, fake)
    assert len(fake.calls) == calls  # every generation and every verdict came from the store
    for a, b in zip(first, again, strict=True):
        assert (a.question_id, a.strategy, a.answer) == (b.question_id, b.strategy, b.answer)
        # tokens and FLOPs to the token; replayed calls count no call and no seconds
        assert (a.usage.prompt_tokens, a.usage.completion_tokens, a.usage.flops) == (
            b.usage.prompt_tokens, b.usage.completion_tokens, b.usage.flops)
        assert b.usage.calls == 0


def test_verdicts_travel_in_an_export(tmp_path: Path) -> None:
    fake = FakeBackend(script=script, yes_logprob=-0.3)
    first = run(tmp_path / "here", fake)
    forget_results(tmp_path / "here")
    export_run(tmp_path / "here", tmp_path / "run.jsonl")
    counts = restore_run(tmp_path / "run.jsonl", tmp_path / "there")
    assert counts["verdicts"] > 0
    elsewhere = FakeBackend(script=script, yes_logprob=-0.3)
    again = run(tmp_path / "there", elsewhere)
    assert elsewhere.calls == []
    assert [r.usage.total_tokens for r in again] == [r.usage.total_tokens for r in first]


def test_a_verdict_is_kept_per_verifier_identity_and_per_call(tmp_path: Path) -> None:
    fake = FakeBackend(yes_logprob=-0.3)
    store = Store.open(tmp_path, {})
    judge = CachedVerifier(SelfJudge(fake), store, "judge a")
    judge.score("2+2?", ["4", "5"])
    one_call = len(fake.calls)  # the fake counts each prompt of a call
    judge.score("2+2?", ["4", "5"])
    assert len(fake.calls) == one_call and judge.replayed_calls == 1
    judge.score("2+2?", ["5", "4"])  # another call: the traces in another order
    CachedVerifier(SelfJudge(fake), store, "judge b").score("2+2?", ["4", "5"])
    assert len(fake.calls) == 3 * one_call
    store.close()
