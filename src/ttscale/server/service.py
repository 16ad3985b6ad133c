"""Serving logic without HTTP: a request becomes a ``Plan`` (the arguments of ``solve``),
and a ``Service`` runs plans on the one shared backend under a concurrency limit.

Choosing the strategy, most specific first:

1. the ``ttscale`` object (``extra_body={"ttscale": {"strategy": "majority", "n": 8}}``);
2. the model name, ``STRATEGY[@N][:KEY=VALUE,...]/MODEL`` (``majority@8/qwen2.5-coder-1.5b``,
   ``beam@8:width=4/qwen2.5-coder-1.5b``) or the same without ``/MODEL`` for the served
   model;
3. ``reasoning_effort``: ``none``/``minimal`` greedy; ``low`` / ``medium`` / ``high`` are
   three budgets of the ``auto`` strategy: the plan shipped for the served model, or adaptive
   majority over at most 2 / 8 / 32 samples without one (capped at ``max_n``);
4. the server's default (``--default-strategy``, majority@8).

``solve`` runs in a worker thread; its progress messages and the text of the traces as
they are decoded come back to the event loop as ``Event``s, which is what lets a stream
show the work while the samples are drawn. Each job has a cancel token
(``ttscale.cancel``): a client that leaves, a deadline or a shutdown sets it, and the
backend stops the generation in flight at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from ttscale.backends.base import Backend
from ttscale.budget import Budget
from ttscale.cancel import Cancel
from ttscale.errors import ConfigError, TtscaleError
from ttscale.planner.effort import EFFORT_SAMPLES, effort_strategy
from ttscale.registry import strategies
from ttscale.solve import check, solve
from ttscale.strategies.spec import check_strategy, make_strategy, takes_samples
from ttscale.types import Result

EFFORT = {"none": "greedy", "minimal": "greedy"}
DEFAULT_N = 8  # solve's own default number of samples


def effort_spec(effort: str, settings: Settings) -> str:
    """The strategy spec of a ``reasoning_effort`` level on this server.

    Example:
        >>> effort_spec("medium", Settings()), effort_spec("none", Settings())
        ('auto:effort=medium,n_max=32', 'greedy')
    """
    if effort in EFFORT_SAMPLES:
        return effort_strategy(effort, settings.max_n)
    return EFFORT[effort]


class ApiError(TtscaleError):
    """An error with its HTTP status and OpenAI error type and code."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None


class ModelNotFound(ApiError):
    status = 404
    code = "model_not_found"


class QueueFull(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class RequestTimeout(ApiError):
    status = 504
    type = "timeout_error"
    code = "timeout"


class ShuttingDown(ApiError):
    status = 503
    type = "server_error"
    code = "shutting_down"


@dataclass(frozen=True)
class Settings:
    """Server-wide defaults and limits; every field is checked when it is built.

    Example:
        >>> Settings(max_concurrency=2, max_queue=8).capacity
        10
        >>> Settings(max_n=0)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: max_n must be a positive number, got 0
    """

    default_strategy: str = "majority@8"
    default_verifier: str = "self_judge"
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never printed
    aliases: tuple[str, ...] = ()  # other names the served model answers to
    max_concurrency: int = 4
    max_queue: int = 32
    max_n: int = 32
    max_tokens: int = 4096
    default_max_tokens: int = 1024
    max_budget: int | None = None
    timeout: float = 600.0
    max_body_bytes: int = 1_000_000
    # on shutdown, the longest the requests of clients still connected may take to finish;
    # then they are cancelled (those of clients gone were cancelled when they left)
    shutdown_timeout: float = 30.0
    temperature: float = 0.7

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "max_n", "max_tokens", "default_max_tokens",
                     "max_budget", "timeout", "max_body_bytes", "shutdown_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # ``not >``: NaN is refused too
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(f"default_max_tokens {self.default_max_tokens} is above "
                              f"max_tokens {self.max_tokens}: lower it or raise max_tokens")
        if any(not k for k in self.api_keys):
            raise ConfigError("an API key is empty: give non-empty keys")
        name, count = parse_spec(self.default_strategy)
        check_strategy(name)  # an unknown default or option fails at startup, not per request
        if count is not None:
            check_count(name)
        if (count or DEFAULT_N) > self.max_n:
            raise ConfigError(f"the default strategy {self.default_strategy} draws more "
                              f"samples than max_n {self.max_n}: lower one or raise the other")

    @property
    def capacity(self) -> int:
        """Requests admitted at once: running plus waiting; one more is refused with 429."""
        return self.max_concurrency + self.max_queue


@dataclass(frozen=True)
class Plan:
    """One request, as the arguments of ``solve`` plus what the response needs."""

    question: str
    model: str  # the canonical STRATEGY@N/MODEL echoed in responses
    strategy: str
    n: int
    verifier: str | None
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop: tuple[str, ...] = ()
    budget: int | None = None
    choices: int = 1
    traces: bool = False


def check_count(name: str) -> None:
    """Refuse a sample count (``@N``, or ``n`` in the ``ttscale`` object) for a strategy
    that chooses its own (greedy, auto): it would be ignored.

    Example:
        >>> check_count("majority")
        >>> check_count("auto:effort=high")
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: auto chooses its own number of samples: drop the @N (or \
n), or cap them with auto:n_max=N
    """
    if takes_samples(name):
        return
    base = name.partition(":")[0].strip()
    if base == "greedy":
        raise ConfigError("greedy draws one sample: drop the @N (or n)")
    raise ConfigError(f"{base} chooses its own number of samples: drop the @N (or n), or cap "
                      f"them with {base}:n_max=N")


def parse_spec(spec: str) -> tuple[str, int | None]:
    """``majority@8`` -> ``("majority", 8)``; ``greedy`` -> ``("greedy", None)``; options
    follow the count: ``beam@8:width=4`` -> ``("beam:width=4", 8)``.

    Example:
        >>> parse_spec("majority@8")
        ('majority', 8)
        >>> parse_spec("beam@8:width=4,max_steps=6")
        ('beam:width=4,max_steps=6', 8)
        >>> parse_spec("majority@lots")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: strategy 'majority@lots': the number after @ must be ...
    """
    head, colon, options = spec.strip().partition(":")
    name, at, count = head.partition("@")
    if colon:
        name = f"{name}:{options}"
    if not at:
        return name, None
    if not count.isdigit() or int(count) <= 0:
        raise ConfigError(f"strategy {spec!r}: the number after @ must be a positive whole "
                          f"number of samples, e.g. {head.partition('@')[0] or 'majority'}@8")
    return name, int(count)


def canonical(spec: str, count: int) -> str:
    """The spec with its sample count, as a model name: ``beam:width=4``, 8 -> ``beam@8:width=4``.

    Example:
        >>> canonical("beam:width=4", 8), canonical("majority", 2)
        ('beam@8:width=4', 'majority@2')
    """
    name, colon, options = spec.partition(":")
    return f"{name}@{count}{colon}{options}"


def split_model(name: str, served: Sequence[str]) -> tuple[str | None, str]:
    """Split a requested model name into (strategy spec or None, served model id).

    Example:
        >>> split_model("majority@8/qwen", ["qwen"])
        ('majority@8', 'qwen')
        >>> split_model("greedy", ["qwen"])
        ('greedy', 'qwen')
        >>> split_model("Qwen/Qwen2.5-1.5B", ["Qwen/Qwen2.5-1.5B"])
        (None, 'Qwen/Qwen2.5-1.5B')
    """
    if name in served:  # served names may contain "/" themselves (Hugging Face ids)
        return None, name
    head, slash, rest = name.partition("/")
    spec: str | None = None
    model = name
    if "@" in head or head.partition(":")[0] in strategies.names():
        spec, model = head, (rest if slash else "")
    if not model:
        return spec, served[0]
    if model not in served:
        raise ModelNotFound(f"model {model!r} is not served here: use {served[0]!r}, "
                            f"optionally as STRATEGY@N/{served[0]} (e.g. majority@8)")
    return spec, model


def _text(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"the {what} is not valid Unicode text: send UTF-8") from None
    return value


def plan(*, question: str, model: str, served: Sequence[str], settings: Settings,
         strategy: str | None = None, n: int | None = None, verifier: str | None = None,
         budget: int | None = None, effort: str | None = None, max_tokens: int | None = None,
         temperature: float | None = None, top_p: float | None = None,
         seed: int | None = None, stop: str | Sequence[str] | None = None,
         choices: int | None = None, traces: bool = False) -> Plan:
    """Turn the fields of one request into a checked ``Plan``, or raise the ``ConfigError``
    (or ``ModelNotFound``) that says what to change.

    Example:
        >>> p = plan(question="2+2?", model="majority@4", served=["fake"], settings=Settings())
        >>> p.strategy, p.n, p.model
        ('majority', 4, 'majority@4/fake')
    """
    question = _text(question, "question")
    from_model, model_id = split_model(_text(model, "model name"), served)
    by_effort = effort_spec(effort, settings) if effort else None
    spec = strategy or from_model or by_effort or settings.default_strategy
    name, spec_n = parse_spec(spec)
    count = n if n is not None else spec_n or DEFAULT_N
    if not (strategy or from_model) and n is None:
        count = min(count, settings.max_n)  # an effort level asks for "more", not a number
    strat = make_strategy(name, max(count, 1))  # unknown names fail here, listing choices
    if n is not None or (spec_n is not None and (strategy or from_model)):
        check_count(name)
    if verifier is None and strat.needs_verifier:
        verifier = settings.default_verifier
    samples = count if hasattr(strat, "n") else 1
    if samples > settings.max_n:
        raise ConfigError(f"{samples} samples is above this server's limit of "
                          f"{settings.max_n}: ask for at most {settings.max_n}, e.g. "
                          f"{name}@{settings.max_n}")
    max_tokens = settings.default_max_tokens if max_tokens is None else max_tokens
    if max_tokens > settings.max_tokens:
        raise ConfigError(f"max_tokens {max_tokens} is above this server's limit of "
                          f"{settings.max_tokens} per sample: ask for fewer")
    if settings.max_budget is not None:
        if budget is None:
            budget = settings.max_budget
        elif budget > settings.max_budget:
            raise ConfigError(f"budget {budget} is above this server's limit of "
                              f"{settings.max_budget} tokens per request: ask for less")
    if budget is not None:
        Budget(max_tokens=budget)  # non-positive budgets fail here with the fix
    choices = 1 if choices is None else choices
    if not 1 <= choices <= settings.max_n:
        raise ConfigError(f"n must be between 1 and {settings.max_n} choices (the top answer "
                          f"classes), got {choices}: set the samples in the model name, "
                          "e.g. majority@8")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    temperature = settings.temperature if temperature is None else temperature
    top_p = 1.0 if top_p is None else top_p
    seed = 0 if seed is None else seed
    check(question, strategy=name, verifier=verifier, n=count, temperature=temperature,
          max_tokens=max_tokens, seed=seed, top_p=top_p, stop=stops)
    shown = canonical(name, count) if hasattr(strat, "n") else name
    return Plan(question=question, model=f"{shown}/{model_id}", strategy=name, n=count,
                verifier=verifier, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                seed=seed, stop=stops, budget=budget, choices=choices, traces=traces)


@dataclass(frozen=True)
class Event:
    """Something a job reports: ``queued``, ``started``, ``progress`` and ``text`` (a piece
    of trace ``trace`` as it is decoded, in ``message``), then ``result`` or ``error``
    (always last)."""

    kind: Literal["queued", "started", "progress", "text", "result", "error"]
    message: str = ""
    result: Result | None = None
    error: BaseException | None = None
    trace: int = 0


class Job:
    """One admitted request: its events arrive on the event loop in order."""

    def __init__(self, plan: Plan, deadline: float, timeout: float, progress: bool) -> None:
        self.plan = plan
        self.deadline = deadline
        self.timeout = timeout
        self.progress = progress  # whether anyone reads queued / started / progress events
        self.started = False
        self.token = Cancel()  # read by the worker thread and the backend
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        if self.progress or event.kind in ("result", "error"):
            self._events.put_nowait(event)

    def cancel(self, reason: str = "nobody waits for the answer") -> None:
        """Nobody waits any more: stop waiting for a slot, or stop the generation in
        flight at its next token."""
        self.token.set(reason)
        if not self.started and self._task is not None:
            self._task.cancel()

    async def next(self) -> Event:
        """The next event; past the deadline the job is cancelled and ``RequestTimeout``
        raised."""
        try:
            async with asyncio.timeout_at(self.deadline):  # no task per wait, unlike wait_for
                return await self._events.get()
        except TimeoutError:
            self.cancel()
            raise RequestTimeout(
                f"the request took longer than this server's limit of {self.timeout:g} s: "
                "ask for fewer samples or tokens, or raise --timeout") from None

    async def result(self) -> Result:
        """Wait for the result; the job's error is raised as is."""
        while True:
            event = await self.next()
            if event.kind == "result" and event.result is not None:
                return event.result
            if event.kind == "error" and event.error is not None:
                raise event.error


class Service:
    """Runs plans on one shared backend: at most ``max_concurrency`` at once, at most
    ``max_queue`` waiting; one more is refused with ``QueueFull``.

    A cancelled request (timed out, its client gone) keeps its slot until its worker stops
    (the backend stops at the next token; a backend that cannot, at the next phase of the
    strategy), so the backend never holds more than ``max_concurrency`` solves.
    """

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.served = tuple(dict.fromkeys(x for x in (backend.model_id, *settings.aliases) if x))
        if not self.served:
            raise ConfigError("the backend has no model name: pass --model")
        self.admitted = 0  # running + waiting; touched on the event loop only
        self.running = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._sem = asyncio.Semaphore(settings.max_concurrency)
        self._pool = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="solve")
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: set[Job] = set()

    @property
    def queued(self) -> int:
        return self.admitted - self.running

    def submit(self, plan: Plan, progress: bool = False) -> Job:
        """Admit a plan or raise ``QueueFull``; call from the event loop. With ``progress``
        the job also reports ``queued``, ``started`` and ``progress`` events."""
        if self.admitted >= self.settings.capacity:
            raise QueueFull(f"the server is busy ({self.running} requests running, "
                            f"{self.queued} waiting): retry in a moment")
        loop = asyncio.get_running_loop()
        job = Job(plan, loop.time() + self.settings.timeout, self.settings.timeout, progress)
        self.admitted += 1
        task = loop.create_task(self._start(job))
        job._task = task
        self._tasks.add(task)  # the loop keeps only a weak reference to tasks
        self._jobs.add(job)
        task.add_done_callback(lambda t: self._started(job, t))
        return job

    def _started(self, job: Job, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not job.started:  # cancelled while waiting (or before it ran): never held a slot
            self.admitted -= 1
            self._jobs.discard(job)

    async def _start(self, job: Job) -> None:
        if self._sem.locked():
            job.emit(Event("queued", f"waiting for a free slot, {self.queued - 1} ahead"))
        await self._sem.acquire()
        job.started = True
        self.running += 1
        job.emit(Event("started", f"solving with {job.plan.model}"))
        loop = asyncio.get_running_loop()
        try:
            future = self._pool.submit(self._solve, job, loop)
        except RuntimeError:  # the workers are gone: the server is stopping
            self._release()
            job.emit(Event("error", error=ShuttingDown(
                "the server is shutting down: retry in a moment")))
            return
        future.add_done_callback(lambda f: _call_soon(loop, self._settle, job, f))

    def _solve(self, job: Job, loop: asyncio.AbstractEventLoop) -> Result:
        p = job.plan

        def progress(message: str) -> None:
            if job.progress:  # waking the event loop costs time when nobody reads it
                _call_soon(loop, job.emit, Event("progress", message))

        def text(trace: int, piece: str) -> None:
            _call_soon(loop, job.emit, Event("text", piece, trace=trace))

        return solve(p.question, backend=self.backend, strategy=p.strategy, n=p.n,
                     budget=p.budget, verifier=p.verifier, temperature=p.temperature,
                     top_p=p.top_p, max_tokens=p.max_tokens, seed=p.seed, stop=p.stop,
                     progress=progress, cancel=job.token,
                     on_text=text if job.progress else None)

    def _release(self) -> None:
        self._sem.release()
        self.running -= 1
        self.admitted -= 1

    def _settle(self, job: Job, future: Future[Result]) -> None:
        self._release()
        self._jobs.discard(job)
        exc = future.exception()
        if exc is None:
            result = future.result()
            self.prompt_tokens += result.usage.prompt_tokens
            self.completion_tokens += result.usage.completion_tokens
            job.emit(Event("result", result=result))
        else:
            job.emit(Event("error", str(exc), error=exc))

    def cancel_all(self, reason: str = "the server is shutting down") -> None:
        """Cancel every admitted job (call on the event loop)."""
        for job in list(self._jobs):
            job.cancel(reason)

    def close(self) -> None:
        """Wait for the workers still running: cancelled ones stop at the backend's next
        token (or the strategy's next phase)."""
        self._pool.shutdown(wait=True)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., object],
               *args: object) -> None:
    # From a worker thread; a loop already closed (the process is exiting) drops the call.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)
