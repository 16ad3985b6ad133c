"""MCTS and AB-MCTS over whole answers, through Sakana AI's ``treequest``.

A node is a whole answer, not a step. AB-MCTS ("Wider or Deeper?", Inoue et al. 2025)
decides at each node between going wider (a new answer from scratch at the root, or a new
refinement of the same parent) and deeper (refining a child), by Thompson sampling over the
posteriors of the scores of complete answers; the score of a partial answer is a different,
noisier quantity, and step-level search is what ``beam`` and ``dvts`` do. So the root's
children are fresh answers to the question, and a child of an answer is the model's
revision of it (the parent answer and its score in the prompt). A node's score is its
verifier score in [0, 1], as treequest requires.

The search itself is treequest's, driven with ask/tell: each step asks for a batch of
expansions, generates them in one batched call per distinct number of siblings (``n``
samples of one prompt share its prefix), scores them in one verifier call and tells the
scores back. The budget ``n`` is the number of answers, honoured exactly: the last batch
asks only for what is left, and StandardMCTS is never asked for more expansions than it
queued (it would discard the surplus). The answer: all answers voted by ``aggregate``.
"""

from __future__ import annotations

import copy
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from ttscale.answers import solve_prompt
from ttscale.errors import BudgetExceeded, ConfigError, MissingExtra
from ttscale.strategies.base import Env, State
from ttscale.strategies.stepwise import (
    Node,
    SearchState,
    check_aggregate,
    finish_search,
    score,
    verification_reserve,
)
from ttscale.types import Prompt, Result
from ttscale.verifiers.steps import fill

T = TypeVar("T")
ACTION = "answer"
REFINE_TEMPLATE = (
    "Question:\n{question}\n\nA previous attempt{scored}:\n{answer}\n\nCheck the attempt "
    "step by step, fix any mistake, and write a complete, improved solution."
)
_INSTALL = "treequest is not installed: run pip install 'ttscale[search]'"


def treequest() -> Any:
    """The ``treequest`` module, or a ``MissingExtra`` with the install command.

    Example:
        >>> tq = treequest()  # MissingExtra when ttscale[search] is not installed
        >>> tq.__name__, hasattr(tq, "ABMCTSA"), hasattr(tq, "StandardMCTS")
        ('treequest', True, True)
    """
    try:
        import treequest as tq
    except ImportError as exc:
        raise MissingExtra(_INSTALL) from exc
    return tq


def refine_prompt(question: str, answer: str, score: float | None) -> Prompt:
    """The prompt that asks the model to revise one of its answers (a deeper node).

    Example:
        >>> p = refine_prompt("2+2?", "It is 5.", 0.25)
        >>> "scored 0.25 out of 1" in p.messages[1].content
        True
    """
    scored = "" if score is None else f", which a checker scored {score:.2f} out of 1"
    return solve_prompt(fill(REFINE_TEMPLATE, question=question.strip(), answer=answer.strip(),
                             scored=scored))


@dataclass(frozen=True, kw_only=True)
class _TreeSearch(ABC):
    n: int = 8
    aggregate: str = "weighted"
    name: str = "mcts"
    needs_verifier: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"{self.name} needs at least one answer, got n={self.n}")
        check_aggregate(self.aggregate)
        self.algorithm()  # a missing treequest or a bad option fails before any sampling

    @abstractmethod
    def algorithm(self) -> Any:
        """The treequest algorithm object (stateless; the tree state is passed to it)."""

    @abstractmethod
    def batch_size(self) -> int:
        """How many answers one round asks treequest for."""

    def start(self, question: str) -> SearchState:
        return SearchState(question, algo_state=self.algorithm().init_tree())

    def step(self, state: State, env: Env) -> State:
        s = cast(SearchState, state)
        algo = self.algorithm()
        want = min(self.batch_size(), self.n - len(s.nodes))
        tq_state = copy.deepcopy(s.algo_state)  # the state passed in stays as it was
        tq_state, trials = _seeded(lambda: algo.ask_batch(tq_state, want, [ACTION]),
                                   env.sampling.seed * 100_003 + len(s.nodes))
        parents = [cast(int | None, t.parent_state) for t in trials]
        s, new = _generate(env, s, parents)
        s = score(env, s, new)
        for trial, i in zip(trials, new, strict=False):
            node = s.nodes[i]
            tq_state = algo.tell(tq_state, trial.trial_id, (i, node.value or 0.0))
        if len(tq_state.tree) - 1 != len(s.nodes):  # every answer made is in the tree
            raise RuntimeError(f"treequest kept {len(tq_state.tree) - 1} of {len(s.nodes)} "
                               "answers: a bug in ttscale's batching")
        done = len(s.nodes) >= self.n or s.budget_limited or not new
        return replace(s, algo_state=tq_state, rounds=s.rounds + 1, done=done)

    def finish(self, state: State, env: Env) -> Result:
        s = cast(SearchState, state)
        return finish_search(replace(s, algo_state=None), env, self.name, self.aggregate,
                             None, n=self.n, rounds=s.rounds)


_RNG = threading.Lock()


def _seeded(call: Callable[[], T], seed: int) -> T:
    """``call()`` with numpy's global generator seeded, then restored: treequest's Thompson
    sampling draws from it, and a seeded draw makes a search reproducible like a sample."""
    import numpy as np

    with _RNG:
        saved = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            return call()
        finally:
            np.random.set_state(saved)


def _generate(env: Env, state: SearchState, parents: list[int | None]) -> tuple[
        SearchState, list[int]]:
    """One answer per entry of ``parents`` (None: a fresh answer, else a revision of that
    answer); the same parent's answers come from one prompt with ``n`` samples. Within the
    budget: fewer than asked fit, the first ones are made and the state is budget-limited."""
    nodes = state.nodes
    reserve = verification_reserve(env, state.question)
    prompts = {p: _prompt(state, p) for p in parents}
    counts_tokens = env.accountant.counts_tokens
    p_tokens = max(env.prompt_tokens(p) for p in prompts.values()) if counts_tokens else 0
    fits = env.accountant.affordable_samples(
        prompt_tokens=p_tokens, max_tokens=env.sampling.max_tokens + reserve,
        want=len(parents), params_count=env.backend.params_count)
    if fits <= 0 and env.accountant.spent.calls == 0:
        raise BudgetExceeded(f"the budget cannot pay for one answer (prompt {p_tokens} + up "
                             f"to {env.sampling.max_tokens + reserve} tokens): raise the "
                             "budget or lower max_tokens")
    limited = fits < len(parents)
    parents = parents[: max(fits, 0)]
    # siblings of one parent: one prompt with n samples; one call per distinct count
    order = list(dict.fromkeys(parents))
    sizes = {p: parents.count(p) for p in order}
    made: list[Node] = []
    for size in sorted(set(sizes.values()), reverse=True):
        group = [p for p in order if sizes[p] == size]
        params = env.sampling.with_(n=size, seed=env.sampling.seed + len(nodes) + len(made))
        env.progress(f"sampling {size * len(group)} answer{'s' if size * len(group) > 1 else ''}")
        out = env.backend.generate([prompts[p] for p in group], params)
        env.accountant.charge(out.usage)
        for parent, gens in zip(group, out.generations, strict=True):
            for g in gens:
                depth = 1 if parent is None else nodes[parent].depth + 1
                made.append(Node(len(nodes) + len(made), parent, g.text, g.text, depth,
                                 g.completion_tokens, g.completion_tokens, g.finish_reason,
                                 finished=True, delimited=False))
    # tell treequest in the order it asked
    by_parent: dict[int | None, list[int]] = {}
    for m in made:
        by_parent.setdefault(m.parent, []).append(m.id)
    ids = [by_parent[p].pop(0) for p in parents]
    return replace(state, nodes=nodes + tuple(made),
                   budget_limited=state.budget_limited or limited), ids


def _prompt(state: SearchState, parent: int | None) -> Prompt:
    if parent is None:
        return solve_prompt(state.question)
    node = state.nodes[parent]
    return refine_prompt(state.question, node.text, node.value)


@dataclass(frozen=True, kw_only=True)
class MCTS(_TreeSearch):
    """Standard MCTS (UCT) over whole answers: the selected leaf is expanded
    ``samples_per_action`` times, each expansion a revision of it (at the root: an answer).

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["\\\\boxed{4}"], yes_logprob=-0.1)
        >>> r = solve("2+2?", backend=fb, strategy="mcts", n=5, verifier="self_judge")
        >>> r.answer, len(r.traces), [len(c["children"]) for c in r.tree["children"]]
        ('4', 5, [2, 1])
    """

    samples_per_action: int = 2
    exploration_weight: float = 1.4142135623730951
    name: str = "mcts"

    def algorithm(self) -> Any:
        if self.samples_per_action < 1:
            raise ConfigError(f"samples_per_action must be at least 1, got "
                              f"{self.samples_per_action}")
        if not self.exploration_weight >= 0:  # NaN too
            raise ConfigError(f"exploration_weight must be at least 0 (0: no exploration), "
                              f"got {self.exploration_weight}")
        return treequest().StandardMCTS(samples_per_action=self.samples_per_action,
                                        exploration_weight=self.exploration_weight)

    def batch_size(self) -> int:
        return self.samples_per_action  # what one selection queues; more would be discarded


@dataclass(frozen=True, kw_only=True)
class ABMCTS(_TreeSearch):
    """AB-MCTS (adaptive branching): Thompson sampling decides, node by node, between a new
    answer and a revision. ``variant`` ``a`` (node aggregation, ``dist_type`` gaussian or
    beta) or ``m`` (mixed model; needs PyMC: ``pip install 'treequest[abmcts-m]'``);
    ``batch`` expansions are asked per step and generated together.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["\\\\boxed{4}"], yes_logprob=-0.1)
        >>> r = solve("2+2?", backend=fb, strategy="ab_mcts:batch=2", n=5,
        ...           verifier="self_judge")
        >>> r.answer, len(r.traces)
        ('4', 5)
    """

    variant: str = "a"
    dist_type: str = "gaussian"
    batch: int = 1
    name: str = "ab_mcts"

    def algorithm(self) -> Any:
        if self.batch < 1:
            raise ConfigError(f"batch must be at least 1 answer per step, got {self.batch}")
        if self.dist_type not in ("gaussian", "beta"):
            raise ConfigError(f"dist_type must be gaussian or beta, got {self.dist_type!r}")
        tq = treequest()
        if self.variant == "a":
            return tq.ABMCTSA(dist_type=self.dist_type)
        if self.variant == "m":
            try:
                from treequest.algos.ab_mcts_m._ab_mcts_m_imports import _import

                _import.check()
            except ImportError as exc:
                raise MissingExtra("AB-MCTS-M needs PyMC and NumPyro: run pip install "
                                   "'treequest[abmcts-m]'") from exc
            return tq.ABMCTSM()
        raise ConfigError(f"variant must be a or m, got {self.variant!r}: e.g. ab_mcts:variant=a")

    def batch_size(self) -> int:
        return self.batch
