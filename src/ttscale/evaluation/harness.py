"""``ttscale eval``: generate a run's samples once, store them as they arrive, replay curves.

A run is defined by what its samples depend on (model weights, dataset split, prompt and
sampling parameters); everything else (strategies, sample counts, how many questions or
seeds) can change between invocations of the same run directory, because every sample is
cached by (model SHA-256, prompt, parameters, sample index): asking for N=16 after N=8
generates samples 8..15 only, and a killed run resumes where it stopped.

Seed ``k`` owns sample indices ``k * SEED_STRIDE + i``. Strategies that need only independent
samples (``REPLAYED``) are never run sample by sample: each question gets ``max(ns)`` samples
per seed, the verifier scores them once, and every ``n`` is replayed from the store. Other
registered strategies run through :func:`ttscale.solve.solve` on the cached backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ttscale.answers import equivalent, solve_prompt
from ttscale.backends.base import wait_for
from ttscale.errors import ConfigError

# the run's settings live in config.py; these names stay importable from here
from ttscale.evaluation.config import (
    KIND,
    REPLAYED,
    RUN_LABEL,
    SAMPLES_PER_REQUEST,
    VERIFIED,
    EvalConfig,
    run_settings,
)
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.runs.cache import CachedBackend, missing_runs
from ttscale.evaluation.runs.records import SEED_STRIDE
from ttscale.evaluation.runs.store import (
    QuestionRow,
    ResultRow,
    ScoreRow,
    Store,
    StoredGeneration,
)
from ttscale.evaluation.runs.verdicts import CachedVerifier
from ttscale.params import SamplingParams
from ttscale.strategies.spec import make_strategy
from ttscale.types import GenerateOutput, Usage
from ttscale.verifiers.base import Verifier
from ttscale.verifiers.spec import build_verifier, verifier_identity

__all__ = ["KIND", "REPLAYED", "RUN_LABEL", "SAMPLES_PER_REQUEST", "VERIFIED", "EvalConfig",
           "EvalOutcome", "Harness", "Tick", "bind_verifier", "check_same_questions",
           "run_settings", "vote"]


@dataclass(frozen=True)
class Tick:
    """Progress after one question: questions done, total, tokens generated so far."""

    done: int
    total: int
    new_tokens: int
    question_id: str


@dataclass
class _Counter:
    done: int = 0
    new_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class EvalOutcome:
    """What one invocation did: questions, samples generated now and replayed from the
    store, the compute spent now, wall seconds."""

    questions: int
    new_samples: int
    cached_samples: int
    new_usage: Usage
    seconds: float


def _seed_params(cfg: EvalConfig, seed: int, n: int) -> SamplingParams:
    return cfg.sampling.with_(n=n, seed=seed * SEED_STRIDE)


class Harness:
    """Runs an evaluation over a cached backend and records everything in the store.

    Example:
        >>> import tempfile
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(script=lambda _p, i: f"\\\\boxed{{{i % 2}}}")
        >>> cfg = EvalConfig(ns=(1, 3))
        >>> store = Store.open(tempfile.mkdtemp(), {"kind": "eval"})
        >>> h = Harness(cfg, CachedBackend(fb, store, "sha"), store)
        >>> h.run([Problem("q0", "1-1?", "0")]).new_samples
        3
        >>> [(r.n, r.answer, r.correct) for r in store.results()]
        [(1, '0', True), (3, '0', True)]
    """

    def __init__(self, cfg: EvalConfig, backend: CachedBackend, store: Store,
                 on_tick: Callable[[Tick], None] | None = None, *,
                 verifier: Verifier | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self.store = store
        self.on_tick = on_tick or (lambda _t: None)
        self.verifier: Verifier | None = None
        self.guide: CachedVerifier | None = None  # the verifier searches call, remembered
        self._samples_pool: ThreadPoolExecutor | None = None
        self._replayed = 0  # samples read back from the store instead of generated
        self._lock = threading.Lock()
        if cfg.verifier is not None:
            # The verifier calls the backend itself: its scores are stored, not its samples.
            # A Ray worker passes the one it built once for all its questions.
            self.verifier = verifier or build_verifier(cfg.verifier, backend.backend)
            bind_verifier(store, cfg, self.verifier)
            self.guide = CachedVerifier(self.verifier, store,
                                        verifier_identity(self.verifier, cfg.verifier))

    def run(self, problems: Sequence[Problem]) -> EvalOutcome:
        """Generate, score and record every question; resumable at any point."""
        from ttscale.evaluation.controller import run_async, usable

        if usable(self):  # many requests in flight from one event loop, one store writer
            return run_async(self, problems)
        self.store.put_questions([QuestionRow(p.id, p.question, p.gold, dict(p.meta))
                                  for p in problems])
        start = time.perf_counter()
        counter = _Counter()
        before = (self.backend.new_samples, self.backend.cached_samples + self._replayed)
        new_usage = Usage()
        usage_lock = threading.Lock()

        def one(problem: Problem) -> None:
            nonlocal new_usage
            spent = self._question(problem)
            with usage_lock:
                new_usage = new_usage + spent
            with counter.lock:
                counter.done += 1
                counter.new_tokens += spent.total_tokens
                tick = Tick(counter.done, len(problems), counter.new_tokens, problem.id)
            self.on_tick(tick)

        with ThreadPoolExecutor(max(1, self.cfg.concurrency * self.cfg.n_max),
                                thread_name_prefix="sample") as samples:
            self._samples_pool = samples
            if self.cfg.concurrency == 1 or len(problems) <= 1:
                for p in problems:
                    one(p)
            else:
                with ThreadPoolExecutor(self.cfg.concurrency) as pool:
                    jobs = [pool.submit(one, p) for p in problems]
                    try:  # re-raise the first failure here, after the others stop
                        for job in jobs:
                            wait_for(job)  # wakes for a Ctrl-C the OS gave a worker
                    except BaseException:
                        for job in jobs:
                            job.cancel()
                        raise
        return EvalOutcome(len(problems), self.backend.new_samples - before[0],
                           self.backend.cached_samples + self._replayed - before[1], new_usage,
                           time.perf_counter() - start)

    def _fanout(self, call: Callable[[tuple[int, int]], GenerateOutput],
                chunks: Sequence[tuple[int, int]]) -> list[GenerateOutput]:
        """``call`` for every (first sample index, count), concurrently on the sample pool."""
        if len(chunks) <= 1 or self._samples_pool is None:
            return [call(c) for c in chunks]
        return list(self._samples_pool.map(call, chunks))

    def _question(self, problem: Problem) -> Usage:
        spent = Usage()
        rows: list[ResultRow] = []
        trees: list[tuple[str, dict[str, Any]]] = []
        for seed in range(self.cfg.seeds):
            if self.cfg.replayed:
                began = time.perf_counter()
                stored, used = self._samples(problem, seed)
                spent = spent + used
                rows.extend(self._replay_rows(problem, seed, stored,
                                              time.perf_counter() - began))
            for name in self.cfg.solved:
                row, used = self._solve(problem, name, seed, trees)
                spent = spent + used
                rows.extend(row)
        # Written just before the result rows: a question whose rows exist is not solved
        # again, so its trees are not written twice.
        for label, tree in trees:
            self.store.put_tree(problem.id, label, tree)
        self.store.put_results(rows)
        return spent

    def _samples(self, problem: Problem,
                 seed: int) -> tuple[list[tuple[StoredGeneration, ScoreRow | None]], Usage]:
        """The question's ``n_max`` samples of one seed (generated if missing) with scores."""
        prompt = solve_prompt(problem.question)
        params = _seed_params(self.cfg, seed, self.cfg.n_max)
        first = params.seed
        have = self.store.get_generations(self.backend.model_sha256, prompt, params, first,
                                          first + params.n)
        with self._lock:
            self._replayed += len(have)
        # Requests of a few samples each (sample i of seed s is the sample of seed s + i
        # either way): each group is stored the moment it finishes, so a kill loses only
        # unfinished groups, and free slots take the next question's groups meanwhile. Not
        # one sample per request: the samples of a request share one prompt evaluation, and
        # on a CPU a prompt token costs about what a generated one does.
        chunks = [(start + k, min(SAMPLES_PER_REQUEST, length - k))
                  for start, length in missing_runs(set(have), first, first + params.n)
                  for k in range(0, length, SAMPLES_PER_REQUEST)]
        outs = self._fanout(lambda c: self.backend.generate(
            [prompt], params.with_(n=c[1], seed=c[0])), chunks)
        spent = Usage()
        for out in outs:
            spent = spent + out.usage
        stored = self.store.get_generations(self.backend.model_sha256, prompt, params, first,
                                            first + params.n)
        # A failed sample is not stored: it is generated again on the next run.
        gens = [stored[i] for i in sorted(stored)]
        scores: dict[int, ScoreRow] = {}
        if self.verifier is not None:
            name = self.cfg.verifier or ""
            scores = self.store.get_scores(name, [g.id for g in gens])
            todo = [g for g in gens if g.id not in scores]
            if todo:
                verdict = self.verifier.score(problem.question, [g.generation.text for g in todo])
                spent = spent + verdict.usage
                per = _per_trace(verdict.usage, verdict.per_trace, len(todo))
                new = [ScoreRow(g.id, name, steps, self.verifier.reduce(steps), u)
                       for g, steps, u in zip(todo, verdict.step_scores, per, strict=True)]
                self.store.put_scores(new)
                scores.update({r.generation_id: r for r in new})
        return [(g, scores.get(g.id)) for g in gens], spent

    def _replay_rows(self, problem: Problem, seed: int,
                     stored: list[tuple[StoredGeneration, ScoreRow | None]],
                     seconds: float) -> list[ResultRow]:
        """Each replayed strategy at each n: the vote of the seed's first n samples. Its
        seconds are the n/N share of the wall time the question's samples took now (the
        first row stored for a key is kept, so a later replay does not overwrite them)."""
        rows = []
        for name in self.cfg.replayed:
            for n in self.cfg.ns:
                first = stored[:n]
                if len(first) < n:
                    continue  # some samples failed; a rerun completes them
                answer = vote([(g.answer, None if s is None else s.score) for g, s in first],
                              REPLAYED[name])
                usage = Usage(seconds=seconds * n / self.cfg.n_max)
                for g, s in first:
                    usage = usage + Usage.of(g.generation.prompt_tokens,
                                             g.generation.completion_tokens,
                                             self.backend.params_count, 0.0)
                    if name in VERIFIED and s is not None:
                        usage = usage + s.usage
                correct = answer is not None and equivalent(problem.gold, answer)
                rows.append(ResultRow(RUN_LABEL, problem.id, name, n, seed, answer, correct,
                                      usage))
        return rows

    def _solve(self, problem: Problem, name: str, seed: int,
               trees: list[tuple[str, dict[str, Any]]]) -> tuple[list[ResultRow], Usage]:
        """Each ``n`` of a strategy run through ``solve``; the trees it records go into
        ``trees`` as (``NAME, n=N, seed=S``, tree)."""
        from ttscale.solve import solve

        done = {(r.strategy, r.n, r.seed) for r in self.store.results(RUN_LABEL)
                if r.question_id == problem.id}
        rows, spent = [], Usage()
        for n in self.cfg.ns_of(name):
            if (name, n, seed) in done:
                continue
            # this thread's replays only: the question beside it replays into the same cache
            cached_before = self.backend.replayed_here()
            judged_before = self.guide.replayed_here() if self.guide else Usage()
            # the run's one verifier instance: built per call, a model-reading verifier
            # (sprm, hf_prm) would load its model again for every question and n
            r = solve(problem.question, backend=self.backend, strategy=name, n=n,
                      verifier=self.guide, temperature=self.cfg.temperature,
                      top_p=self.cfg.top_p, max_tokens=self.cfg.max_tokens,
                      seed=seed * SEED_STRIDE)
            # replayed verdicts are in r.usage (the strategy charged them) but not spent now
            spent = spent + _minus(r.usage, _minus(
                self.guide.replayed_here() if self.guide else Usage(), judged_before))
            # the full cost: what was generated now plus what the cache replayed
            full = r.usage + _minus(self.backend.replayed_here(), cached_before)
            correct = r.answer is not None and equivalent(problem.gold, r.answer)
            rows.append(ResultRow(RUN_LABEL, problem.id, name, n, seed, r.answer, correct, full))
            if r.tree is not None:
                trees.append((f"{name}, n={n}, seed={seed}", r.tree))
        return rows, spent


def bind_verifier(store: Store, cfg: EvalConfig, verifier: Verifier) -> None:
    """Refuse to mix two verifiers in rows a resumed run skips: scores are kept per verifier
    name, so a name must keep meaning one verifier (``sprm`` once picked another shipped
    head); a verifier-guided strategy's rows are kept per (strategy, n, seed), so its
    verifier must stay the one they ran with (under any name that means it).

    Example:
        >>> import tempfile
        >>> from ttscale.backends.fake import FakeBackend
        >>> store = Store.open(tempfile.mkdtemp(), {"kind": "eval"})
        >>> cfg = EvalConfig(strategies=("beam:width=2",), ns=(4,), verifier="self_judge")
        >>> bind_verifier(store, cfg, build_verifier("self_judge", FakeBackend()))
        >>> other = EvalConfig(strategies=("beam:width=2",), ns=(4,), verifier="llm_judge")
        >>> bind_verifier(store, other, build_verifier("llm_judge", FakeBackend()))
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: the verifier-guided strategies stored in ... ran with \
--verifier self_judge, not llm_judge: pass --verifier self_judge to go on, or give llm_judge \
its own --out directory
    """
    name = cfg.verifier or ""
    where = store.path.parent
    identity = verifier_identity(verifier, name)
    had = store.bind(f"verifier:{name}", identity)
    if had != identity:
        raise ConfigError(f"the scores stored in {where} as verifier {name} came from {had}, "
                          f"but {name} now means {identity}: give this verifier its own --out "
                          "directory (ttscale sprm eval RUN --head PATH --store-as NAME "
                          "re-scores a run's samples under a new name)")
    guided = [s for s in cfg.solved
              if any(make_strategy(s, n).needs_verifier for n in cfg.ns_of(s))]
    if guided:
        had = store.bind("guided_by", name)
        # another spelling of the same verifier (sprm:PATH for the head sprm once meant) goes on
        if had != name and store.bound("guided_by_identity") != identity:
            raise ConfigError(f"the verifier-guided strategies stored in {where} ran with "
                              f"--verifier {had}, not {name}: pass --verifier {had} to go on, "
                              f"or give {name} its own --out directory")
        # the name may have been rebound since (sprm eval --store-as re-scores under it)
        had = store.bind("guided_by_identity", identity)
        if had != identity:
            raise ConfigError(f"the verifier-guided strategies stored in {where} ran with "
                              f"{name} as {had}, but {name} now means {identity}: give it its "
                              "own --out directory")


def _minus(a: Usage, b: Usage) -> Usage:
    return Usage(a.prompt_tokens - b.prompt_tokens, a.completion_tokens - b.completion_tokens,
                 a.calls - b.calls, a.seconds - b.seconds, a.flops - b.flops)


def _per_trace(total: Usage, per: Sequence[Usage], count: int) -> list[Usage]:
    """Each trace's share of a verifier call: its own usage when the verifier reports it."""
    if len(per) == count:
        return list(per)
    share = 1.0 / max(count, 1)
    return [Usage(round(total.prompt_tokens * share), round(total.completion_tokens * share),
                  0, total.seconds * share, total.flops * share)] * count


def vote(samples: Sequence[tuple[str | None, float | None]], aggregate: str) -> str | None:
    """The answer ``aggregate`` picks from ``(answer, score)`` samples, in sampling order.

    ``majority`` counts votes per equivalence class, ``weighted`` sums scores, ``best`` takes
    the best-scored sample; ties go to the class seen first.

    Example:
        >>> vote([("1", 0.9), ("2", 0.4), ("2.0", 0.4)], "majority")
        '2'
        >>> vote([("1", 0.9), ("2", 0.4), ("2.0", 0.4)], "best")
        '1'
        >>> vote([(None, 0.9)], "weighted") is None
        True
    """
    from ttscale.answers import group_answers

    answered = [(a, s) for a, s in samples if a is not None]
    if not answered:
        return None
    groups = group_answers([a for a, _ in answered])
    best_key: tuple[float, int] | None = None
    winner = None
    for order, group in enumerate(sorted(groups, key=min)):
        scores = [answered[i][1] or 0.0 for i in group]
        weight = {"majority": float(len(group)), "weighted": sum(scores),
                  "best": max(scores)}[aggregate]
        key = (weight, -order)
        if best_key is None or key > best_key:
            best_key, winner = key, answered[min(group)][0]
    return winner


def check_same_questions(store: Store, problems: Sequence[Problem]) -> None:
    """Refuse a run whose stored question of an id differs (another file under one name).

    Example:
        >>> import tempfile
        >>> store = Store.open(tempfile.mkdtemp(), {"kind": "eval"})
        >>> _ = store.put_questions([QuestionRow("q0", "1+1?", "2", {})])
        >>> check_same_questions(store, [Problem("q0", "1+1?", "2")])  # the same question: fine
        >>> check_same_questions(store, [Problem("q0", "1+2?", "3")])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: question q0 in ... differs from the one in the dataset now: ...
    """
    stored: Mapping[str, QuestionRow] = {q.id: q for q in store.questions()}
    for p in problems:
        q = stored.get(p.id)
        if q is not None and (q.question != p.question or q.gold != p.gold):
            raise ConfigError(f"question {p.id} in {store.path.parent} differs from the one in "
                              "the dataset now: use a new --out name")
