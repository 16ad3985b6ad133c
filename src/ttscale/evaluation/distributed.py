"""An evaluation run on a Ray cluster: questions are the unit of work, the driver the only
writer of the run store.

Each Ray actor (:class:`QuestionWorker`) builds its backend once (llama.cpp in-process on a
CPU node, vLLM in-process on a GPU node, or an OpenAI-compatible URL) and its verifier once,
then evaluates whole questions with the same :class:`~ttscale.evaluation.harness.Harness` a
plain run uses (sampled strategies, searches and sequential ones alike) against a private
run store of its own in a temporary directory. The driver seeds that store with what the
run already holds for the question (its samples, scores, result rows and trees), so a
resumed question continues instead of starting over, and merges back every row the actor
returns, by the rows' unique keys (``runs.archive``), in one transaction per question.

Resumable as a plain run is: a question whose result rows are all stored is not sent; a
question in flight when the driver stops is sent again on the next run; merging is
``INSERT OR IGNORE``, so nothing is stored twice. A worker process that dies mid-question
(killed, out of memory, its node lost) loses only that question's work in progress: the
driver starts a new actor in its place and sends the question again, up to
``MAX_ATTEMPTS`` times.

With ``verifier_workers`` the verifier is an actor pool of its own instead
(:mod:`ttscale.evaluation.verifier_pool`): question actors score through its handles, so
they hold no copy of a PRM or an SPRM head, and the pool gets its own GPUs.

Example (a local cluster; needs ``pip install 'ttscale[ray]'``):
    >>> import ttscale  # doctest: +SKIP
    >>> ttscale.evaluate("gsm8k", "runs/g", limit=20, model="smollm2-135m",
    ...                  ray=True)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ttscale.errors import BackendError, ConfigError, MissingExtra, TtscaleError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import RUN_LABEL, EvalConfig, EvalOutcome, Harness, Tick
from ttscale.evaluation.runs.archive import merge_rows, question_rows, rows_of
from ttscale.evaluation.runs.store import QuestionRow, Store
from ttscale.evaluation.verifier_pool import start_pool, wait_started
from ttscale.types import Usage

MAX_ATTEMPTS = 3  # a question whose worker dies this many times stops the run
PROBE_SECONDS = 5.0
INSTALL = "pip install 'ttscale[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtra(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


class QuestionWorker:
    """A Ray actor's state: one backend and one verifier, built once, for many questions.
    Given ``verifiers`` (:class:`~ttscale.evaluation.verifier_pool.VerifierWorker` actor
    handles), it scores through them instead of building a verifier.

    Example (without Ray, as the actor runs it):
        >>> w = QuestionWorker({"kind": "eval"}, EvalConfig(ns=(1, 2)), "fake", {}, "sha")
        >>> rows = w.question(Problem("q0", "1+1?", "2"), [])
        >>> sorted({r["table"] for r in rows})
        ['generations', 'questions', 'results']
    """

    def __init__(self, settings: dict[str, Any], cfg: EvalConfig, backend: str,
                 options: dict[str, Any], sha: str, verifiers: Sequence[Any] = ()) -> None:
        from ttscale.backends.base import load_backend
        from ttscale.evaluation.verifier_pool import VerifierPool
        from ttscale.verifiers.base import Verifier
        from ttscale.verifiers.spec import build_verifier

        self.settings, self.cfg, self.sha = settings, cfg, sha
        self.backend = load_backend(backend, **options)
        self.verifier: Verifier | None = None
        if cfg.verifier is not None:
            self.verifier = (VerifierPool(verifiers) if verifiers
                             else build_verifier(cfg.verifier, self.backend))

    def pid(self) -> int:
        """The worker's process id (where a test or an operator finds it)."""
        return os.getpid()

    def scorer(self) -> str:
        """What scores this worker's samples: its verifier's class (``VerifierPool`` when an
        actor pool does), or ``""`` without one."""
        return "" if self.verifier is None else type(self.verifier).__name__

    def question(self, problem: Problem, seed_rows: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
        """Evaluate one question over a private store seeded with ``seed_rows``; every row
        it then holds (the driver merges them)."""
        from ttscale.evaluation.runs.cache import CachedBackend

        with tempfile.TemporaryDirectory(prefix="ttscale-worker-") as d, \
                Store.open(d, self.settings) as store:
            merge_rows(store, seed_rows)
            cached = CachedBackend(self.backend, store, self.sha)
            Harness(self.cfg, cached, store, verifier=self.verifier).run([problem])
            return rows_of(store)

    def close(self) -> None:
        self.backend.close()


def _complete(store: Store, cfg: EvalConfig) -> set[str]:
    """The questions whose every result row the run asks for is stored."""
    have: dict[str, set[tuple[str, int, int]]] = {}
    for r in store.results(RUN_LABEL):
        have.setdefault(r.question_id, set()).add((r.strategy, r.n, r.seed))
    want = {(s, n, seed) for s in cfg.strategies for n in cfg.ns_of(s)
            for seed in range(cfg.seeds)}
    return {q for q, rows in have.items() if want <= rows}


def connect(address: str | bool, workers: int | None) -> Any:
    """Join the Ray cluster at ``address`` (``True``: start a local one with this machine's
    CPUs); the ``ray`` module, initialised. One clear sentence when it cannot.

    Example:
        >>> ray = connect(True, workers=4)  # doctest: +SKIP
        >>> ray.is_initialized(), ray.cluster_resources()["CPU"] >= 4  # doctest: +SKIP
        (True, True)
    """
    ray = _ray()
    if ray.is_initialized():
        return ray
    local = address is True or address in ("local", "")
    if not local and str(address) != "auto":
        _probe(str(address))
    try:
        if local:
            ray.init(num_cpus=max(os.cpu_count() or 1, workers or 1), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=str(address), log_to_driver=False, configure_logging=False)
    except Exception as exc:
        where = "a local Ray cluster" if local else f"the Ray cluster at {address}"
        raise BackendError(f"could not start or reach {where} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}): start "
                           "it with ray start --head, or fix --ray-address") from None
    return ray


def _probe(address: str) -> None:
    """Refuse an address nothing answers at within seconds: Ray itself retries for
    minutes before it gives up."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got "
                          f"{address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise BackendError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): "
                           "start it with ray start --head, or fix --ray-address") from None


def run_on_ray(address: str | bool, cfg: EvalConfig, store: Store,
               problems: Sequence[Problem], *, backend: str, options: dict[str, Any],
               sha: str, workers: int | None = None, verifier_workers: int = 0,
               verifier_gpus: float = 0,
               on_tick: Callable[[Tick], None] | None = None,
               on_start: Callable[[list[Any]], None] | None = None,
               on_lost: Callable[[str], None] | None = None) -> EvalOutcome:
    """Evaluate ``problems`` on Ray actors into ``store`` (see the module's docstring).
    ``on_start`` gets the actor handles once they exist (their ``pid()`` included),
    ``on_lost`` the id of each question sent again because its worker died.
    ``verifier_workers`` actors (``verifier_gpus`` each) run the verifier for all of them.

    Example (a local cluster; the verifier in two actors of its own):
        >>> run_on_ray(True, EvalConfig(verifier="self_judge"), store, problems,
        ...            backend="llamacpp", options=options, sha=sha,
        ...            verifier_workers=2)  # doctest: +SKIP
    """
    pool_size = verifier_workers if cfg.verifier is not None else 0
    # a local cluster needs a CPU for each verifier actor beside the question actors'
    ray = connect(address, (workers or 1) + pool_size if pool_size else workers)
    tick = on_tick or (lambda _t: None)
    store.put_questions([QuestionRow(p.id, p.question, p.gold, dict(p.meta))
                         for p in problems])
    start = time.perf_counter()
    before = store.count("generations")
    complete = _complete(store, cfg)
    todo = deque(p for p in problems if p.id not in complete)
    done = len(problems) - len(todo)
    tick(Tick(done, len(problems), 0, ""))
    # by default the question actors take the CPUs the verifier actors leave
    count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) - pool_size)
    count = min(count, max(1, len(todo)))
    # an in-process vLLM worker takes a GPU of its own where the cluster has them
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    # GPUs the verifier actors hold; one they cannot get would leave them pending forever
    left = cluster_gpus - pool_size * verifier_gpus
    if left < 0:
        raise ConfigError(f"--ray-verifiers {pool_size} x --ray-verifier-gpus {verifier_gpus} "
                          f"asks for more GPUs than the Ray cluster has ({cluster_gpus:g})")
    gpus = 1 if backend == "vllm" and left >= 1 else 0
    if gpus:
        count = min(count, int(left))
    actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(QuestionWorker)
    settings = dict(store.settings)

    pool = (start_pool(ray, pool_size, verifier_gpus, cfg.verifier or "", backend, options)
            if todo and pool_size else [])

    def spawn() -> Any:
        return actor.remote(settings, cfg, backend, options, sha, pool)

    idle = [spawn() for _ in range(count)] if todo else []
    if on_start is not None and idle:
        on_start(list(idle))
    running: dict[Any, tuple[Any, Problem]] = {}
    attempts: dict[str, int] = {}
    try:
        wait_started(ray, pool)
        while todo or running:
            while idle and todo:
                worker, problem = idle.pop(), todo.popleft()
                ref = worker.question.remote(problem, question_rows(store, problem.id,
                                                                      problem.question))
                running[ref] = (worker, problem)
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                worker, problem = running.pop(ref)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayActorError:
                    # the process is gone with the question's work in progress: a new
                    # actor takes its place and the question goes again
                    attempts[problem.id] = attempts.get(problem.id, 0) + 1
                    if attempts[problem.id] >= MAX_ATTEMPTS:
                        raise BackendError(
                            f"question {problem.id} lost its Ray worker {MAX_ATTEMPTS} times: "
                            "check the workers' memory and logs (ray logs), then run the "
                            "same command again to resume") from None
                    todo.appendleft(problem)
                    idle.append(spawn())
                    if on_lost is not None:
                        on_lost(problem.id)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, TtscaleError):
                        raise cause from None
                    raise BackendError(f"a Ray worker failed on question {problem.id} "
                                       f"({str(exc).splitlines()[0]}): see ray logs") from None
                merge_rows(store, rows)
                done += 1
                tick(Tick(done, len(problems), 0, problem.id))
                idle.append(worker)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        for worker in idle + [w for w, _ in running.values()] + pool:
            ray.kill(worker)
    new = store.count("generations") - before
    return EvalOutcome(len(problems), new, 0, Usage(), time.perf_counter() - start)
