"""The generation cache: only missing samples are generated, replays equal fresh samples,
usage counts new work only, and everything survives a reopen or a kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

import ttscale
from ttscale import solve
from ttscale.backends.fake import FakeBackend
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.store import FILE_NAME, Store
from ttscale.params import SamplingParams
from ttscale.types import Chat, GenerateOutput, Prompt, Usage

SHA = "0f" * 32


class CountingFake(FakeBackend):
    """A FakeBackend that also records each batched call: (prompts, n, seed)."""

    def __init__(self) -> None:
        super().__init__(script=lambda p, i: f"thinking about {p} ... \\boxed{{{i % 3}}}")
        self.batches: list[tuple[tuple[Prompt, ...], int, int]] = []

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        self.batches.append((tuple(prompts), params.n, params.seed))
        return super().generate(prompts, params)


def cached(tmp_path: Path, fake: FakeBackend | None = None) -> tuple[CachedBackend, FakeBackend]:
    fake = fake or CountingFake()
    return CachedBackend(fake, Store.open(tmp_path, {"model": "fake"}), SHA), fake


def tokens(u: Usage) -> tuple[int, int, float]:
    return u.prompt_tokens, u.completion_tokens, u.flops


def test_sixteen_after_eight_generates_only_the_new_eight(tmp_path: Path) -> None:
    cb, fake = cached(tmp_path)
    prompt = Chat.user("2+2?")
    cb.generate([prompt], SamplingParams(n=8, seed=0))
    assert [(p, params.n, params.seed) for p, params in fake.calls] == [(prompt, 8, 0)]
    out = cb.generate([prompt], SamplingParams(n=16, seed=0))
    assert [(p, params.n, params.seed) for p, params in fake.calls[1:]] == [(prompt, 8, 8)]
    assert [g.seed for g in out.generations[0]] == list(range(16))
    assert (cb.new_samples, cb.cached_samples) == (16, 8)
    # Everything stored: a third ask calls nothing and spends nothing.
    again = cb.generate([prompt], SamplingParams(n=16, seed=0))
    assert len(fake.calls) == 2 and again.usage == Usage()
    assert again.generations == out.generations


def test_results_equal_an_uncached_run(tmp_path: Path) -> None:
    prompts: list[Prompt] = [Chat.user("a"), "raw b", Chat.user("c", system="s")]
    for params in (SamplingParams(n=16, seed=3), SamplingParams(n=4, logprobs=True,
                                                                top_logprobs=2)):
        plain = CountingFake().generate(prompts, params)
        cb, _ = cached(tmp_path / str(params.logprobs))
        cb.generate(prompts[:2], params.with_(n=5))  # part of it stored first
        out = cb.generate(prompts, params)
        assert out.generations == plain.generations


def test_usage_counts_new_work_and_cached_usage_the_rest(tmp_path: Path) -> None:
    prompts = [Chat.user("x"), Chat.user("y")]
    full = CountingFake().generate(prompts, SamplingParams(n=12)).usage
    cb, _ = cached(tmp_path)
    first = cb.generate(prompts, SamplingParams(n=5))
    out, replayed = cb.generate_counted(prompts, SamplingParams(n=12))
    new_gens = [g for gens in out.generations for g in gens[5:]]
    assert out.usage.completion_tokens == sum(g.completion_tokens for g in new_gens)
    assert out.usage.calls == 2  # FakeBackend counts one call per prompt
    assert tokens(replayed) == tokens(first.usage) and replayed.calls == 0
    assert tokens(out.usage + replayed) == tokens(full)
    assert tokens(cb.cached_usage) == tokens(first.usage)


def test_missing_runs_are_batched_per_shape(tmp_path: Path) -> None:
    cb, fake = cached(tmp_path)
    assert isinstance(fake, CountingFake)
    a, b = Chat.user("a"), Chat.user("b")
    cb.generate([a, b], SamplingParams(n=2, seed=0))
    cb.generate([a], SamplingParams(n=1, seed=4))
    fake.batches.clear()
    out = cb.generate([a, b], SamplingParams(n=8, seed=0))
    # a misses 2-3 and 5-7; b misses 2-7: each hole is generated once, same holes together.
    assert sorted(fake.batches, key=lambda x: (x[2], x[1])) == [
        ((a,), 2, 2), ((b,), 6, 2), ((a,), 3, 5)]
    assert [[g.seed for g in gens] for gens in out.generations] == [list(range(8))] * 2
    # Two prompts missing the same run share one call.
    c, d = Chat.user("c"), Chat.user("d")
    fake.batches.clear()
    cb.generate([c, d], SamplingParams(n=3, seed=0))
    assert fake.batches == [((c, d), 3, 0)]


def test_a_prompt_repeated_in_one_call_is_generated_once(tmp_path: Path) -> None:
    cb, fake = cached(tmp_path)
    p = Chat.user("same")
    out, replayed = cb.generate_counted([p, p], SamplingParams(n=3))
    assert len(fake.calls) == 1 and out.generations[0] == out.generations[1]
    assert tokens(replayed) == tokens(out.usage)


def test_keys_separate_models_and_parameters(tmp_path: Path) -> None:
    cb, fake = cached(tmp_path)
    cb.generate(["q"], SamplingParams(n=2))
    cb.generate(["q"], SamplingParams(n=2, temperature=0.1))
    other = CachedBackend(fake, cb.store, "11" * 32)
    other.generate(["q"], SamplingParams(n=2))
    assert len(fake.calls) == 3 and cb.store.count("generations") == 6


def test_persists_across_store_reopen(tmp_path: Path) -> None:
    cb, _ = cached(tmp_path)
    first = cb.generate([Chat.user("q")], SamplingParams(n=6, seed=2))
    cb.store.close()
    cb2, fake2 = cached(tmp_path)
    again = cb2.generate([Chat.user("q")], SamplingParams(n=6, seed=2))
    assert fake2.calls == [] and again.generations == first.generations


def test_failed_samples_are_not_kept(tmp_path: Path) -> None:
    class Flaky(CountingFake):
        def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
            out = super().generate(prompts, params)
            gens = tuple(tuple(replace(g, finish_reason="error") for g in gs)
                         for gs in out.generations)
            return GenerateOutput(gens, out.usage)

    cb, fake = cached(tmp_path, Flaky())
    cb.generate(["q"], SamplingParams(n=2))
    cb.generate(["q"], SamplingParams(n=2))
    assert len(fake.calls) == 2 and cb.store.count("generations") == 0


def test_solve_through_the_cache_replays_the_same_result(tmp_path: Path) -> None:
    cb, fake = cached(tmp_path)
    r1 = solve("What is 2+2?", backend=cb, strategy="majority", n=6)
    r2 = solve("What is 2+2?", backend=cb, strategy="majority", n=6)
    assert len(fake.calls) == 1
    assert (r2.answer, r2.traces, r2.classes) == (r1.answer, r1.traces, r1.classes)
    assert r2.usage.total_tokens == 0 and r1.usage.total_tokens > 0


WRITER = """
import sys, time
from ttscale.backends.fake import FakeBackend
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.params import SamplingParams
from ttscale.evaluation.runs.store import Store

run_dir, delay = sys.argv[1], float(sys.argv[2])
store = Store.open(run_dir, {"model": "fake", "dataset": "synthetic"})
fake = FakeBackend(script=lambda p, i: f"about {p}: sample {i} gives \\\\boxed{{{i * 7}}}")
cb = CachedBackend(fake, store, "0" * 64)
for q in range(30):
    prompts = [f"question {q}-{k}" for k in range(3)]
    cb.generate(prompts, SamplingParams(n=4, seed=0))
    cb.generate(prompts, SamplingParams(n=8, seed=0))  # extends: samples 4..7 only
    print(f"batch {q}", flush=True)
    time.sleep(delay)
print(f"done {cb.new_samples} new", flush=True)
"""
TOTAL = 30 * 3 * 8
KEY = "model_sha256, prompt_hash, params_hash, sample_index"


def dump(run_dir: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(run_dir / FILE_NAME)
    try:
        return conn.execute(
            f"SELECT {KEY}, prompt, params, text, prompt_tokens, completion_tokens, "
            f"finish_reason, logprobs, token_logprobs, answer FROM generations ORDER BY {KEY}"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_kill_9_loses_at_most_a_batch_and_never_duplicates(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    src = str(Path(ttscale.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def run(run_dir: Path, delay: str) -> str:
        done = subprocess.run([sys.executable, str(script), str(run_dir), delay], env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        return done.stdout.strip().splitlines()[-1]

    assert run(tmp_path / "whole", "0") == f"done {TOTAL} new"
    reference = dump(tmp_path / "whole")
    assert len(reference) == TOTAL

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "0.1"], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "batch 5":
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    partial = dump(killed)
    assert 6 * 3 * 8 <= len(partial) < TOTAL  # killed mid-way, every reported batch kept
    assert set(partial) <= set(reference)

    # The rerun generates exactly what is missing and ends with the uninterrupted rows.
    assert run(killed, "0") == f"done {TOTAL - len(partial)} new"
    final = dump(killed)
    assert final == reference
    assert len({row[:4] for row in final}) == len(final) == TOTAL
