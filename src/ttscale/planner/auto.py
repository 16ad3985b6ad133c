"""``auto``: the strategy a fitted plan chooses per question, at a mean budget.

The first stage's samples are the probe (they also vote). After each stage the plan's policy
reads the probe's signals and says what to do: answer now (by majority, by the vote weighted
toward shorter samples, or weighted by the verifier's scores), verify what was drawn, or
sample up to the next stage. A plan's point may instead be a race: ``k`` samples start
together and the first ``m`` to finish vote (:mod:`ttscale.strategies.short`). Every sample
and every verification goes through
:func:`ttscale.strategies.base.sample` / ``verify`` and the one Accountant, so every token is
counted and a hard cap (``solve(budget=...)``) is never exceeded: a verification that does
not fit is skipped, a stage that does not fit ends it.

``budget`` is the *mean* cost per question the plan aims at (in ``unit``: tokens by default,
or FLOPs, or seconds): easy questions stop after the probe, the tokens go where the plan
expects them to pay. ``effort`` (low / medium / high) names one of the plan's three budgets.
The plan is ``plan`` (a JSON file) or the one shipped for the loaded model (found by its
SHA-256, as SPRM heads are). A model without one falls back to adaptive majority
(:class:`ttscale.strategies.adaptive_majority.AdaptiveMajority`) at three budgets, and the
result's notes say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ttscale.answers import solve_prompt
from ttscale.errors import ConfigError
from ttscale.planner.effort import EFFORT_SAMPLES, backend_sha256, check_effort
from ttscale.planner.plan import (
    ANSWERS,
    CURRENCIES,
    Plan,
    Point,
    check_model,
    load_plan,
    shipped_plan,
)
from ttscale.planner.policy import decide, probe_of
from ttscale.strategies.adaptive_majority import AdaptiveMajority
from ttscale.strategies.base import Env, State, classes_of, pick, result, sample, verify
from ttscale.strategies.short import race, race_classes
from ttscale.types import Result

FALLBACK_RULE = "budgeted"


def _auto(state: State) -> AutoState:
    """``sample`` and ``verify`` keep the state's class; this says so to the type checker."""
    assert isinstance(state, AutoState)
    return state


@dataclass(frozen=True)
class AutoState(State):
    """``State`` plus where the plan stands: the stage reached (-1: none yet), the track
    (``U`` before verification, ``V`` after), the plan and point in use, the verifier it
    built, how it answers, and the actions taken (for the notes)."""

    stage: int = -1
    track: str = "U"
    plan: Plan | None = field(default=None, repr=False)
    point: Point | None = field(default=None, repr=False)
    verifier: Any = field(default=None, repr=False)
    fallback_n: int = 0
    answer_by: str = "majority"
    actions: tuple[str, ...] = ()
    probe_bin: int | None = None
    race_m: int = 0  # a race's voters (0: no race)


@dataclass(frozen=True, kw_only=True)
class Auto:
    """The planner's strategy: ``budget`` (mean per question, in ``unit``) or ``effort``;
    ``plan`` a plan file (default: the one shipped for the model).

    Example (no plan ships for the fake model: adaptive majority, said in the notes):
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> r = solve("?", backend=FakeBackend(responses=["\\\\boxed{7}"]), strategy="auto")
        >>> r.answer, len(r.traces), r.notes[0].startswith("no plan ships for fake")
        ('7', 4, True)
    """

    budget: float | None = None
    unit: str = "tokens"
    effort: str | None = None
    plan: str | None = None
    n_max: int | None = None
    name: str = "auto"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.unit not in CURRENCIES:
            raise ConfigError(f"auto's unit must be one of {', '.join(CURRENCIES)}, got "
                              f"{self.unit!r}")
        if self.budget is not None and not self.budget > 0:
            raise ConfigError(f"auto's budget must be a positive mean cost per question, got "
                              f"{self.budget}")
        if self.effort is not None:
            check_effort(self.effort)
            if self.budget is not None:
                raise ConfigError("give auto a budget or an effort level, not both")
        if self.n_max is not None and self.n_max < 1:
            raise ConfigError(f"auto's n_max must be a positive number of samples, got "
                              f"{self.n_max}")
        if self.plan is not None:
            load_plan(self.plan)  # a missing or foreign file fails before any model loads

    def start(self, question: str) -> AutoState:
        return AutoState(question)

    # -- resolving the plan once the backend (and so the model's SHA-256) is known -------

    def _resolve(self, state: AutoState, env: Env) -> AutoState:
        sha = backend_sha256(env.backend)
        model = env.backend.model_id
        path = self.plan or shipped_plan(sha)
        if path is None:
            return self._fallback(state, env, model)
        plan = load_plan(path)
        check_model(plan, sha, model, f"the plan {path}")
        name = getattr(env.verifier, "name", None)
        if env.verifier is not None and name != plan.verifier:
            fitted = plan.verifier or "no verifier"
            raise ConfigError(f"the plan {path} was fitted with {fitted}, not the {name} "
                              f"verifier: drop the verifier, or fit a plan on runs scored by "
                              f"{name} with ttscale plan fit")
        if self.budget is not None:
            point = plan.select(self.budget, self.unit)
            asked = f"a mean budget of {self.budget:g} {self.unit}"
        else:
            effort = self.effort or "medium"
            point = plan.select(plan.effort_budget(effort), plan.currency)
            asked = f"effort {effort}"
        note = (f"auto: plan for {plan.model} ({plan.verifier or 'no verifier'}) at {asked}: "
                f"expects {point.accuracy:.1%} at {point.tokens:,.0f} tokens a question")
        return replace(state, plan=plan, point=point, verifier=env.verifier,
                       notes=(*state.notes, note))

    def _fallback(self, state: AutoState, env: Env, model: str) -> AutoState:
        if self.budget is not None:
            # samples the mean budget pays for, priced after the first sample is seen
            note = (f"no plan ships for {model}, so auto is adaptive majority "
                    f"({FALLBACK_RULE}) within about {self.budget:g} {self.unit}")
            return replace(state, fallback_n=-1, notes=(*state.notes, note))
        effort = self.effort or "medium"
        n = min(EFFORT_SAMPLES[effort], self.n_max or EFFORT_SAMPLES[effort])
        note = (f"no plan ships for {model}, so effort {effort} is adaptive majority "
                f"({FALLBACK_RULE}) over at most {n} samples")
        return replace(state, fallback_n=n, notes=(*state.notes, note))

    # -- stepping --------------------------------------------------------------------------

    def step(self, state: State, env: Env) -> State:
        assert isinstance(state, AutoState)
        if state.plan is None and state.fallback_n == 0:
            state = self._resolve(state, env)
        if state.fallback_n:
            return self._fallback_step(state, env)
        assert state.plan is not None and state.point is not None
        plan = state.plan
        if state.point.race:
            return self._race(state, env)
        if state.stage < 0:  # the probe
            state = replace(_auto(sample(env, state, plan.stages[0])), stage=0)
            return state if state.done else self._decide(state, env)
        return self._decide(state, env)

    def _race(self, state: AutoState, env: Env) -> State:
        assert state.point is not None
        k, m = state.point.race
        k = min(k, self.n_max or k)
        m = min(m, k)
        state = _auto(race(env, state, k, m))
        return replace(state, done=True, race_m=m, answer_by="race",
                       actions=(f"race {k}, first {m} to finish vote",))

    def _fallback_step(self, state: AutoState, env: Env) -> State:
        n = state.fallback_n
        if n < 0:  # a budget: one sample first, to price the rest
            state = _auto(sample(env, state, 1))
            if state.done or not state.traces:
                return state
            per = self._sample_cost(state, env)
            n = max(1, min(self.n_max or 256, math.floor((self.budget or 0) / per))) \
                if per > 0 else 1
            state = replace(state, fallback_n=n)
        return AdaptiveMajority(n=n, rule=FALLBACK_RULE).step(state, env)

    def _sample_cost(self, state: AutoState, env: Env) -> float:
        spent = env.accountant.spent
        k = len(state.traces)
        return {"tokens": spent.total_tokens, "flops": spent.flops,
                "seconds": spent.seconds}[self.unit] / k

    def _env(self, state: AutoState, env: Env) -> tuple[AutoState, Env]:
        """The environment with the plan's verifier, built on first use."""
        assert state.plan is not None
        if state.verifier is None:
            if state.plan.verifier is None:
                raise ConfigError("the plan has no verifier but asks to verify: refit it")
            from ttscale.verifiers.spec import build_verifier

            state = replace(state, verifier=build_verifier(state.plan.verifier, env.backend))
        return state, replace(env, verifier=state.verifier)

    def _verify_fits(self, state: AutoState, env: Env, todo: int) -> bool:
        """Whether verifying ``todo`` more traces fits what is left of a hard cap (each at
        its prompt and the most tokens it can have, priced as the policy's tokens)."""
        acc = env.accountant
        if not acc.counts_tokens:
            return True
        per = env.prompt_tokens(solve_prompt(state.question)) + env.sampling.max_tokens + 1
        need = per * todo
        b = acc.budget
        if b.max_tokens is not None and acc.spent.total_tokens + need > b.max_tokens:
            return False
        flops = 2.0 * env.backend.params_count * need
        return b.max_flops is None or acc.spent.flops + flops <= b.max_flops

    def _decide(self, state: AutoState, env: Env) -> State:
        assert state.plan is not None and state.point is not None
        plan = state.plan
        prompt_tokens = env.prompt_tokens(solve_prompt(state.question))
        probe = probe_of(state.traces, prompt_tokens, verified=state.track == "V")
        nxt = state.stage + 1
        can = nxt < len(plan.stages) and plan.stages[nxt] <= (self.n_max or plan.stages[-1])
        d = decide(plan, state.point, state.track, state.stage, probe, can_sample=can)
        if state.probe_bin is None:
            state = replace(state, probe_bin=d.difficulty)
        actions = (*state.actions, d.action)
        if d.action in ANSWERS:
            return replace(state, done=True, answer_by=d.action, actions=actions)
        if d.action == "verify":
            if not self._verify_fits(state, env, len(state.traces)):
                return replace(state, done=True, budget_limited=True, actions=actions)
            state, venv = self._env(state, env)
            return replace(_auto(verify(venv, state)), track="V", actions=actions)
        want = plan.stages[state.stage + 1] - len(state.traces)
        extra = 0
        if state.track == "V":
            extra = prompt_tokens + env.sampling.max_tokens + 1  # each new sample's scoring
        before = len(state.traces)
        sampled = sample(env, state, want, extra_per_sample=extra if env.accountant.counts_tokens
                         else 0)
        state = replace(_auto(sampled), actions=actions)
        if state.track == "V" and len(state.traces) > before:
            state, venv = self._env(state, env)
            state = _auto(verify(venv, state))
        if state.done or state.budget_limited:  # the budget stopped it: answer what is here
            assert state.point is not None
            forced = decide(plan, state.point, state.track, min(state.stage + 1,
                            len(plan.stages) - 1), probe_of(state.traces, prompt_tokens,
                            verified=state.track == "V"), can_sample=False)
            by = forced.action if forced.action in ANSWERS else "majority"
            return replace(state, done=True, answer_by=by)
        return replace(state, stage=state.stage + 1)

    def finish(self, state: State, env: Env) -> Result:
        assert isinstance(state, AutoState)
        weight = {"weighted": "sum", "brevity": "brevity"}.get(state.answer_by, "count")
        classes = race_classes(state.traces, state.race_m) if state.race_m else \
            classes_of(state.traces, weight)
        notes = state.notes
        if state.race_m:
            stopped = sum(t.finish_reason == "aborted" for t in state.traces)
            notes += (f"auto: {state.actions[0]}; {stopped} of {len(state.traces)} samples "
                      "stopped early",)
        elif state.plan is not None:
            notes += (f"auto: predicted difficulty bin {state.probe_bin} of "
                      f"{len(state.plan.predictor('U', 0).edges) + 1} (0 hardest) after the "
                      f"probe; {' -> '.join(state.actions) or 'answered'}; "
                      f"{len(state.traces)} samples, answered by {state.answer_by}",)
        by = "votes" if state.answer_by in ("majority", "race") else "score"
        return replace(result(state, env, self.name, classes, pick(classes, by)), notes=notes)
