"""``solve``: one question in, the best answer the strategy can buy, every token counted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ttscale.backends.base import Backend, load_backend
from ttscale.budget import Accountant, Budget
from ttscale.cancel import Cancel
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.planner.effort import effort_strategy
from ttscale.strategies.base import Env, Progress, TraceText, run
from ttscale.strategies.rounds import PROMPT_ALLOWANCE
from ttscale.strategies.spec import make_strategy
from ttscale.types import Result
from ttscale.verifiers.base import Verifier
from ttscale.verifiers.spec import build_verifier, check_verifier


def make_verifier(name: str | Verifier | None, backend: Backend) -> Verifier | None:
    """A verifier by spec (``self_judge``, ``hf_prm:MODEL``, ``llm_judge,k=8``), built on
    ``backend``; instances pass through.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> judge = make_verifier("self_judge", FakeBackend())
        >>> type(judge).__name__, make_verifier(judge, FakeBackend()) is judge
        ('SelfJudge', True)
        >>> make_verifier(None, FakeBackend()) is None
        True
    """
    if name is None:
        return None
    return build_verifier(name, backend)


def context_tokens(strategy: Any, max_tokens: int) -> int:
    """Context tokens one request of ``strategy`` may need (prompt and completion), so that
    a backend with a context per slot (llama.cpp) can be built large enough: what the
    strategy says when its prompts show earlier traces, else the prompt and ``max_tokens``.

    Example:
        >>> context_tokens(make_strategy("majority", 8), 1024)
        1536
        >>> context_tokens(make_strategy("rsa", 8), 1024)
        5632
    """
    own = getattr(strategy, "context_tokens", None)
    if callable(own):
        return int(own(max_tokens))
    return max_tokens + PROMPT_ALLOWANCE


def check(question: str, *, strategy: str, verifier: str | Verifier | None, n: int,
          temperature: float, max_tokens: int, seed: int, top_p: float = 1.0,
          stop: Sequence[str] = ()) -> tuple[SamplingParams, Any]:
    """Validate a solve request before anything is loaded: the sampling parameters and the
    strategy object (``strategy`` is a spec, ``NAME[:KEY=VALUE,...]``), or a ``ConfigError``
    naming the fix.

    Example:
        >>> check("2+2?", strategy="majority", verifier=None, n=4, temperature=0.7,
        ...       max_tokens=64, seed=0)[0].n
        4
    """
    if not question or not question.strip():
        raise ConfigError("the question is empty: give the question text to solve")
    params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed,
                            top_p=top_p,
                            stop=(stop,) if isinstance(stop, str) else tuple(stop))
    strat = make_strategy(strategy, n)
    check_sampling = getattr(strat, "check_sampling", None)
    if callable(check_sampling):  # a strategy whose options depend on the sampling ones
        check_sampling(params)
    if isinstance(verifier, str):
        check_verifier(verifier)  # unknown names and options fail here, listing the choices
    if strat.needs_verifier and verifier is None:
        raise ConfigError(f"strategy {strat.name} needs a verifier: pass --verifier self_judge")
    return params, strat


def solve(
    question: str,
    *,
    model: str | None = None,
    backend: Backend | str = "llamacpp",
    strategy: str | None = None,
    n: int | None = None,
    budget: Budget | int | None = None,
    verifier: str | Verifier | None = None,
    temperature: float = 0.7,
    max_tokens: int = 1024,
    seed: int = 0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    backend_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    effort: str | None = None,
    cancel: Cancel | None = None,
    on_text: TraceText | None = None,
) -> Result:
    """Answer ``question`` with a test-time scaling ``strategy``.

    ``strategy`` is a spec: a name, or a name with options (``beam:width=4,max_steps=8``).
    ``backend`` is a backend instance (reuse it across questions) or a registered name built
    with ``model`` and ``backend_options``. ``budget`` is a ``Budget`` or a token cap.
    ``top_p`` and ``stop`` (one string or several) go to every sample, like
    ``temperature``. ``progress`` is called with a short message as each phase begins
    (``sampling 8 traces``); an exception it
    raises stops the solve there, which is how a caller cancels one between phases.
    ``cancel`` (a :class:`ttscale.cancel.Cancel`) stops the solve when set, also in the
    middle of a backend call (llama.cpp and OpenAI-compatible servers stop decoding):
    ``Cancelled`` is raised. ``on_text(trace, piece)`` sees the text of sampled traces as
    it is decoded (llama.cpp streams it; other backends give each trace whole).
    ``strategy`` and ``n`` default to majority of 8. ``effort`` (``low`` / ``medium`` /
    ``high``) picks them instead: three budgets of the plan fitted for the model (the
    ``auto`` strategy), else adaptive majority over at most 2 / 8 / 32 samples, said in the
    result's notes (:mod:`ttscale.planner.effort`).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["so \\\\boxed{4}", "so \\\\boxed{5}", "\\\\boxed{4.0}"])
        >>> r = solve("What is 2+2?", backend=fb, strategy="majority", n=3)
        >>> r.answer, r.classes[0].votes, r.usage.calls
        ('4', 2, 1)
    """
    if effort is not None:
        spec = effort_strategy(effort)  # an unknown level fails here, naming the levels
        if strategy is not None or n is not None or verifier is not None:
            raise ConfigError("an effort level picks the strategy, samples and verifier "
                              "itself: give effort alone, or strategy and n without effort")
        strategy = spec
    strategy = strategy or "majority"
    given = n is not None
    n = 8 if n is None else n
    params, strat = check(question, strategy=strategy, verifier=verifier, n=n,
                          temperature=temperature, max_tokens=max_tokens, seed=seed,
                          top_p=top_p, stop=stop)
    unused = given and effort is None and not hasattr(strat, "n")
    if isinstance(budget, int) and not isinstance(budget, bool):
        budget = Budget(max_tokens=budget)
    elif budget is not None and not isinstance(budget, Budget):
        raise ConfigError(f"budget must be a whole number of tokens or a Budget, got "
                          f"{budget!r}: e.g. budget=4000 or Budget(max_flops=1e13)")
    owned = isinstance(backend, str)
    if isinstance(backend, str):
        opts = dict(backend_options or {})
        if model is not None:
            opts["model"] = model
        backend = load_backend(backend, **opts)
    try:
        token = cancel or Cancel()
        shown = progress or (lambda _m: None)

        def phase(message: str) -> None:
            token.check()  # a cancelled solve stops before its next phase at the latest
            shown(message)

        env = Env(backend, Accountant(budget or Budget()), params,
                  make_verifier(verifier, backend), phase, on_text)
        with token.scope():
            result = run(strat, question, env)
        if unused:  # said, not refused: a caller looping over strategies passes one n
            name = getattr(strat, "name", strategy)
            hint = " (its plan picks the samples: cap them with auto:n_max=N)" \
                if name == "auto" else ""
            result = replace(result, notes=(*result.notes, f"{name} takes no sample count: "
                                            f"n={n} was not used{hint}"))
        return result
    finally:
        if owned:
            backend.close()
