"""The verifier of a ``--ray`` run as an actor pool of its own (``--ray-verifiers N``).

Without a pool, each question actor builds the verifier beside its backend, so N actors
hold N copies of a PRM or an SPRM head. With one, :class:`VerifierWorker` actors (with
their own ``--ray-verifier-gpus``) each build the verifier once, and every question actor
scores through a :class:`VerifierPool`: the verifier protocol, each call sent to the next
actor in turn. The pool returns the verifier's own ``VerifierOutput`` (its scores and its
usage), so the rows a run stores are the ones an in-process verifier would have stored.

Example (the pool's logic without Ray: a handle whose ``.remote`` calls run here):
    >>> worker = VerifierWorker("self_judge", "fake", {"yes_logprob": -0.5})
    >>> pool = VerifierPool([Local(worker)], get=lambda ref: ref)
    >>> pool.name, pool.identity
    ('self_judge', 'self_judge')
    >>> pool.score("2+2?", ["4"]).step_scores == worker.score("2+2?", ["4"]).step_scores
    True
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ttscale.errors import BackendError, ConfigError
from ttscale.verifiers.base import VerifierOutput


class VerifierWorker:
    """A Ray actor's state: the verifier ``spec`` names, built once on the run's backend
    (``backend`` and ``options``, as the question actors get them). A verifier with a model
    of its own (``hf_prm``) loads no backend.

    Example:
        >>> w = VerifierWorker("self_judge", "fake", {})
        >>> w.describe(), w.reserve_tokens(100) > 0
        (('self_judge', 'self_judge'), True)
    """

    def __init__(self, spec: str, backend: str, options: dict[str, Any]) -> None:
        from ttscale.backends.base import load_backend
        from ttscale.registry import verifiers
        from ttscale.verifiers.spec import VerifierSpec, build_verifier, verifier_identity

        factory = verifiers.get(VerifierSpec.parse(spec).name)
        # a PRM brings its own model: loading the run's backend too would waste the memory
        # the pool exists to save
        self.backend = (load_backend(backend, **options)
                        if getattr(factory, "uses_backend", True) else None)
        self.verifier = build_verifier(spec, self.backend)
        self.identity = verifier_identity(self.verifier, spec)

    def describe(self) -> tuple[str, str]:
        """The verifier's name and the identity a run store binds its scores to."""
        return self.verifier.name, self.identity

    def pid(self) -> int:
        """The worker's process id (where a test or an operator finds it)."""
        return os.getpid()

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        return self.verifier.score(question, list(traces))

    def reduce(self, steps: Sequence[float]) -> float:
        return self.verifier.reduce(list(steps))

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        return self.verifier.reserve_tokens(trace_max_tokens)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


class Local:
    """A stand-in for a Ray actor handle over an object in this process: ``method.remote``
    calls the method. For tests and doctests of the pool without Ray.

    Example:
        >>> Local("abc").upper.remote()
        'ABC'
    """

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.target, name)

        class _Remote:
            remote = staticmethod(method)

        return _Remote


class VerifierPool:
    """The verifier protocol over :class:`VerifierWorker` actor ``handles``: each call goes
    to the next handle in turn, and ``get`` (``ray.get`` by default) waits for its result.

    Example:
        >>> pool = VerifierPool([Local(VerifierWorker("self_judge", "fake", {}))],
        ...                     get=lambda ref: ref)
        >>> pool.reduce([0.2, 0.9])
        0.9
        >>> from ttscale.verifiers.base import Verifier
        >>> isinstance(pool, Verifier)
        True
    """

    def __init__(self, handles: Sequence[Any],
                 get: Callable[[Any], Any] | None = None) -> None:
        if not handles:
            raise ValueError("a verifier pool needs at least one actor")
        if get is None:
            import ray

            get = ray.get
        self.handles = list(handles)
        self._get = get
        self._turn = itertools.cycle(self.handles)
        self._lock = threading.Lock()  # a question's strategies score from several threads
        self.name, self.identity = self._get(self.handles[0].describe.remote())
        self._reserved: dict[int, int] = {}

    def _next(self) -> Any:
        with self._lock:
            return next(self._turn)

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        out: VerifierOutput = self._get(self._next().score.remote(question, list(traces)))
        return out

    def reduce(self, steps: Sequence[float]) -> float:
        return float(self._get(self._next().reduce.remote(list(steps))))

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        # asked before every call of a budgeted strategy, and the answer never changes
        if trace_max_tokens not in self._reserved:
            self._reserved[trace_max_tokens] = int(
                self._get(self._next().reserve_tokens.remote(trace_max_tokens)))
        return self._reserved[trace_max_tokens]


def check_pool(verifier: str | None, ray: str | bool | None, count: int, gpus: float) -> None:
    """One sentence for a verifier pool the run cannot have (``verifier``: the run's spec,
    ``ray``: its cluster, ``count`` and ``gpus``: the pool's actors and their GPUs each).

    Example:
        >>> check_pool("self_judge", None, 2, 0)
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: --ray-verifiers runs the verifier on Ray actors: add --ray
    """
    if count < 0 or gpus < 0:
        raise ConfigError(f"--ray-verifiers and --ray-verifier-gpus cannot be negative, got "
                          f"{count} and {gpus}")
    if gpus and not count:
        raise ConfigError("--ray-verifier-gpus is for the verifier actors: add "
                          "--ray-verifiers N")
    if count and not ray:
        raise ConfigError("--ray-verifiers runs the verifier on Ray actors: add --ray")
    if count and verifier is None:
        raise ConfigError("--ray-verifiers needs a verifier to run: add --verifier (e.g. "
                          "self_judge) or a strategy that scores its samples")


def start_pool(ray: Any, count: int, gpus: float, spec: str, backend: str,
               options: dict[str, Any]) -> list[Any]:
    """``count`` :class:`VerifierWorker` actors (one CPU and ``gpus`` GPUs each).

    Example:
        >>> handles = start_pool(ray, 2, 0.5, "hf_prm:Qwen/Qwen2.5-Math-PRM-7B",
        ...                      "llamacpp", {})  # doctest: +SKIP
    """
    # Scoring is a pure function of its arguments: an actor that dies is started again and
    # the calls it held are retried, so a lost verifier process costs no question.
    actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=3,
                       max_task_retries=3)(VerifierWorker)
    return [actor.remote(spec, backend, options) for _ in range(count)]


def wait_started(ray: Any, handles: Sequence[Any]) -> None:
    """Wait until every verifier actor has built its verifier; when one could not, the
    verifier's own error (a question actor would only see the actor die).

    Example:
        >>> wait_started(ray, start_pool(ray, 1, 0, "sprm", "fake", {}))  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: the sprm verifier reads the policy's hidden states from \
its GGUF file, which the fake backend does not have: use the llamacpp backend
    """
    try:
        ray.get([h.describe.remote() for h in handles])
    except ray.exceptions.RayActorError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        last = lines[-1] if lines else "no detail"
        # the traceback's last line is "module.ErrorClass: message": keep the message
        head, sep, message = last.partition(": ")
        if head == "ttscale.errors.ConfigError" and sep:
            raise ConfigError(message) from None
        reason = message if sep and "." in head and " " not in head else last
        raise BackendError(f"a Ray verifier actor could not build its verifier: {reason}"
                           ) from None
