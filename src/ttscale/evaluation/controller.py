"""The evaluation controller for many requests in flight: one event loop, one store writer.

The threaded harness runs a thread per question and per request of samples, each committing
its own transaction: right for a handful of llama.cpp slots, wrong for a fleet of GPU
servers that wants hundreds to thousands of requests in flight. Where the run only samples
(every strategy is replayed from stored samples: majority, best-of-n, weighted best-of-n)
and the backend can start a request without waiting on it (an OpenAI-compatible server,
``backends.openai_async``), :meth:`Harness.run` hands the run to :func:`run_async`:

- questions are tasks on one asyncio loop, at most ``concurrency`` in flight (a semaphore
  taken before a question's task is created, so memory is bounded by what is in flight,
  not by the dataset);
- each question's missing samples go out as requests of a few samples (the same ranges and
  seeds as the threaded path, so the stored samples are the same), awaited together;
- every sample and result row goes to the store through one :class:`StoreWriter`, which
  commits whatever is queued as one transaction; its bounded queue is the back-pressure;
- stored samples are read back as :class:`SampleBrief` (answer and token counts, no text or
  log-probabilities): a vote needs nothing else;
- progress is reported at most every ``TICK_SECONDS`` (and at the end), so it stays cheap
  at thousands of questions a second.

A verifier's scores are computed in a worker thread after the question's samples are
committed (its calls are the verifier's, usually slower than sampling). Resuming, ids,
seeds and the result rows are those of the threaded path.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ttscale.answers import extract_answer, solve_prompt
from ttscale.backends.base import wait_for
from ttscale.backends.openai_async import can_submit, submit
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.runs.cache import missing_runs
from ttscale.evaluation.runs.store import (
    NewGeneration,
    QuestionRow,
    ResultRow,
    SampleBrief,
    ScoreRow,
    StoredGeneration,
)
from ttscale.evaluation.runs.writer import StoreWriter
from ttscale.types import Generation, Usage

if TYPE_CHECKING:
    from ttscale.evaluation.harness import EvalOutcome, Harness

TICK_SECONDS = 0.2


def usable(harness: Harness) -> bool:
    """Whether ``harness`` can run on the controller: only replayed strategies, and a
    backend that starts requests without blocking.

    Example:
        >>> import tempfile
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.evaluation.harness import EvalConfig, Harness
        >>> from ttscale.evaluation.runs.cache import CachedBackend
        >>> from ttscale.evaluation.runs.store import Store
        >>> store = Store.open(tempfile.mkdtemp(), {})
        >>> usable(Harness(EvalConfig(), CachedBackend(FakeBackend(), store, "sha"), store))
        False
    """
    return not harness.cfg.solved and can_submit(harness.backend.backend)


@dataclass
class _Counts:
    done: int = 0
    new_samples: int = 0
    replayed: int = 0
    new_usage: Usage = field(default_factory=Usage)
    last_tick: float = 0.0


def run_async(harness: Harness, problems: Sequence[Problem]) -> EvalOutcome:
    """Generate, score and record every question with many requests in flight; the same
    rows as ``Harness.run``'s threaded path, resumable at any point.

    Example:
        >>> from ttscale.backends.openai import OpenAIBackend
        >>> from ttscale.evaluation.harness import EvalConfig, Harness
        >>> from ttscale.evaluation.runs.cache import CachedBackend
        >>> from ttscale.evaluation.runs.store import Store
        >>> store = Store.open("runs/sums", {"kind": "eval"})  # doctest: +SKIP
        >>> server = CachedBackend(OpenAIBackend(base_url="http://127.0.0.1:8000"), store, "sha")
        ... # doctest: +SKIP
        >>> problems = [Problem(f"q{i}", f"{i} + 1?", str(i + 1)) for i in range(40)]
        >>> run_async(Harness(EvalConfig(ns=(1, 4)), server, store), problems).new_samples
        ... # doctest: +SKIP
        160
    """
    from ttscale.evaluation.harness import EvalOutcome

    harness.store.put_questions([QuestionRow(p.id, p.question, p.gold, dict(p.meta))
                                 for p in problems])
    start = time.perf_counter()
    counts = _Counts()
    with StoreWriter(harness.store) as writer:
        work = _Run(harness, writer, counts, len(problems)).all(problems)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no loop in this thread
            _run_interruptible(work)
        else:  # called from a notebook or an async app: a loop of its own, in a thread
            with ThreadPoolExecutor(1, thread_name_prefix="ttscale-controller") as pool:
                wait_for(pool.submit(asyncio.run, work))
    return EvalOutcome(len(problems), counts.new_samples, counts.replayed, counts.new_usage,
                       time.perf_counter() - start)


def _run_interruptible(work: Any) -> None:
    """``asyncio.run(work)`` where Ctrl-C always ends in ``KeyboardInterrupt``: asyncio's
    own handler only cancels the main task, and a signal that lands as that task finishes
    was lost, so the run went on to exit 0 as if never interrupted."""
    if threading.current_thread() is not threading.main_thread():
        asyncio.run(work)
        return

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, stop)
    try:
        asyncio.run(work)
    finally:
        signal.signal(signal.SIGINT, previous)


class _Run:
    def __init__(self, harness: Harness, writer: StoreWriter, counts: _Counts,
                 total: int) -> None:
        self.h = harness
        self.writer = writer
        self.counts = counts
        self.total = total

    async def all(self, problems: Sequence[Problem]) -> None:
        slots = asyncio.Semaphore(self.h.cfg.concurrency)
        running: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]

        try:
            for p in problems:
                await slots.acquire()
                if failed:
                    break
                task = asyncio.create_task(self.question(p))
                running.add(task)
                task.add_done_callback(finished)
            while running and not failed:
                await asyncio.wait(set(running), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in running:  # a failure or Ctrl-C: stop the requests still out
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if failed:
            raise failed[0]
        self.tick(problems[-1].id if problems else "", force=True)

    def tick(self, question_id: str, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.counts.last_tick >= TICK_SECONDS:
            from ttscale.evaluation.harness import Tick

            self.counts.last_tick = now
            self.h.on_tick(Tick(self.counts.done, self.total,
                                self.counts.new_usage.total_tokens, question_id))

    async def question(self, problem: Problem) -> None:
        rows: list[ResultRow] = []
        for seed in range(self.h.cfg.seeds):
            began = time.perf_counter()
            stored = await self.samples(problem, seed)
            rows.extend(self.h._replay_rows(problem, seed, stored, time.perf_counter() - began))
        # after the samples in the writer's order: a question's rows never precede them
        self.writer.submit(results=rows)
        self.counts.done += 1
        self.tick(problem.id)

    async def samples(self, problem: Problem,
                      seed: int) -> list[tuple[StoredGeneration, ScoreRow | None]]:
        """The seed's ``n_max`` samples (generated if missing), in index order, with scores."""
        from ttscale.evaluation.harness import SAMPLES_PER_REQUEST, _seed_params

        cached, cfg = self.h.backend, self.h.cfg
        prompt = solve_prompt(problem.question)
        params = _seed_params(cfg, seed, cfg.n_max)
        first, stop = params.seed, params.seed + params.n
        have = self.h.store.sample_briefs(cached.model_sha256, prompt, params, first, stop)
        self.counts.replayed += len(have)
        chunks = [(start + k, min(SAMPLES_PER_REQUEST, length - k))
                  for start, length in missing_runs(set(have), first, stop)
                  for k in range(0, length, SAMPLES_PER_REQUEST)]
        outs = await asyncio.gather(*(
            # packed: the log-probabilities go to the store as the decoder packed them
            asyncio.wrap_future(submit(cached.backend, [prompt],  # type: ignore[arg-type]
                                       params.with_(n=size, seed=at), packed=True))
            for at, size in chunks))
        fresh: dict[int, NewGeneration] = {}
        for (at, _size), out in zip(chunks, outs, strict=True):
            self.counts.new_usage = self.counts.new_usage + out.usage
            for j, g in enumerate(out.generations[0]):
                self.counts.new_samples += 1
                if g.finish_reason == "error":
                    continue  # not kept: generated again on the next run
                fresh[at + j] = NewGeneration(cached.model_sha256, prompt, params, at + j, g,
                                              extract_answer(g.text))
        rows = list(fresh.values())
        committed = self.writer.submit(generations=rows) if rows else None
        if self.h.verifier is not None:
            # the scores point at generation ids: the samples must be committed first
            if committed is not None:
                await asyncio.wrap_future(committed)
            stored, used = await asyncio.to_thread(self.h._samples, problem, seed)
            self.counts.new_usage = self.counts.new_usage + used
            return stored
        return [(_brief(have[i]), None) if i in have
                else (StoredGeneration(-1, i, fresh[i].generation, fresh[i].answer), None)
                for i in range(first, stop) if i in have or i in fresh]


def _brief(b: SampleBrief) -> StoredGeneration:
    # a vote reads the answer and the token counts only
    gen = Generation("", b.prompt_tokens, b.completion_tokens, "stop", None, b.sample_index)
    return StoredGeneration(b.id, b.sample_index, gen, b.answer)
