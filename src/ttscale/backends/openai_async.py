"""Requests to an OpenAI-compatible server without a thread waiting on each.

``OpenAIBackend.generate`` blocks its caller until the answer is back, which is right for a
strategy and wrong for a controller with a thousand requests in flight: a thousand threads
each waiting on one. :func:`submit` starts the same batched call on the backend's own event
loop and returns a future at once; the evaluation controller awaits many of them from one
event loop of its own (``asyncio.wrap_future``). Requests, retries, ``n`` handling, seeds and
accounting are the backend's, unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from ttscale.backends.openai import OpenAIBackend
from ttscale.backends.openai_wire import RequestStats
from ttscale.errors import BackendError
from ttscale.params import SamplingParams
from ttscale.types import GenerateOutput, Generation, Prompt, Usage


def can_submit(backend: Any) -> bool:
    """Whether :func:`submit` can drive ``backend``.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> can_submit(FakeBackend())
        False
    """
    return isinstance(backend, OpenAIBackend)


def submit(backend: OpenAIBackend, prompts: Sequence[Prompt], params: SamplingParams, *,
           packed: bool = False) -> concurrent.futures.Future[GenerateOutput]:
    """``backend.generate(prompts, params)`` started now, its output in the future returned;
    cancelling the future cancels the requests (the server sees the client go).

    ``packed``: each generation with log-probabilities is a ``PackedGeneration`` holding
    them as the run store keeps them (``logprobs`` None), which spares a controller a
    Python object per token.

    Example:
        >>> fut = submit(be, [Chat.user("2+2?")], SamplingParams(n=4))  # doctest: +SKIP
        >>> len(fut.result().generations[0])  # doctest: +SKIP
        4
    """
    if backend._closed:
        raise BackendError("this OpenAIBackend is closed: create a new one to keep sampling")
    start = time.perf_counter()

    async def call() -> GenerateOutput:
        stats = RequestStats()
        results = await backend._generate(prompts, params, stats, packed)
        return _output(backend, results, stats, time.perf_counter() - start)

    # asyncio.run_coroutine_threadsafe, but the task's outcome is always read: a caller
    # that cancels as the task fails (a controller stopping on the first failure) left
    # asyncio to log "Task exception was never retrieved" for every other failed request
    out: concurrent.futures.Future[GenerateOutput] = concurrent.futures.Future()
    loop = backend._loop

    def settle(task: asyncio.Task[GenerateOutput]) -> None:
        if task.cancelled():
            out.cancel()
            return
        failure = task.exception()
        if not out.set_running_or_notify_cancel():
            return  # cancelled by the caller: nobody waits for the outcome
        if failure is not None:
            out.set_exception(failure)
        else:
            out.set_result(task.result())

    def begin() -> None:
        if out.cancelled():
            return
        task = loop.create_task(call())
        task.add_done_callback(settle)

        def stop(f: concurrent.futures.Future[GenerateOutput]) -> None:
            if f.cancelled():
                _cancel(loop, task)

        out.add_done_callback(stop)

    loop.call_soon_threadsafe(begin)
    return out


def _cancel(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to stop
        loop.call_soon_threadsafe(task.cancel)


def _output(backend: OpenAIBackend, results: list[list[Generation]], stats: RequestStats,
            seconds: float) -> GenerateOutput:
    # the same accounting as OpenAIBackend.generate
    prompt = completion = 0
    for gens in results:
        for g in gens:
            prompt += g.prompt_tokens
            completion += g.completion_tokens
    usage = Usage(calls=stats.requests, seconds=seconds) + Usage.of(
        prompt, completion, backend.params_count, 0.0, calls=0)
    return GenerateOutput(tuple(tuple(g) for g in results), usage)
