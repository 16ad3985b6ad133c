"""Step-level generation and scoring for tree search, shared by beam search, DVTS and MCTS.

A search node is one reasoning step: the model continues the partial answer of its parent
(a chat prompt whose ``prefill`` is that answer) and stops at the step delimiter. Every open
branch of a round goes out in one batched ``generate`` call (the same prefix once, with
``n`` samples), so a backend with prefix caching re-evaluates only the new step; usage still
counts each sample's whole prompt, so the partial answer re-read each round is charged as
prompt tokens every round. The verifier then scores every new partial answer in one call:
a node's ``score`` is the verifier's score of its own step (the last step score), and its
``value``, which ranks it, is the verifier's reduction of all its step scores.

Sample seeds never repeat within a search: a call's first seed is the configured seed plus
the number of nodes made before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ttscale.answers import extract_answer, last_boxed, solve_prompt
from ttscale.errors import BudgetExceeded, ConfigError
from ttscale.strategies.base import Env, State, classes_of, pick, result
from ttscale.types import FinishReason, Generation, Prompt, Result, Trace

AGGREGATES = {"weighted": ("sum", "score"), "best": ("max", "score"),
              "majority": ("count", "votes")}


def check_aggregate(how: str) -> str:
    """``how`` if it names a final aggregation, else a ``ConfigError`` listing them.

    Example:
        >>> check_aggregate("best")
        'best'
    """
    if how not in AGGREGATES:
        raise ConfigError(f"unknown aggregate {how!r}: choose one of {', '.join(AGGREGATES)}")
    return how


@dataclass(frozen=True)
class Node:
    """One step (or, in MCTS, one whole answer) of a search tree.

    ``prefix`` is the whole answer up to and including this step, as the next step
    continues it (the delimiter included when the step ended at it); ``tokens`` are this
    step's completion tokens and ``path_tokens`` the answer's so far.
    """

    id: int
    parent: int | None  # None: a child of the question
    text: str
    prefix: str
    depth: int
    tokens: int
    path_tokens: int
    finish_reason: FinishReason
    finished: bool  # the answer is complete: no step follows
    delimited: bool  # the step ended at the step delimiter
    group: int = 0  # the independent subtree (DVTS) it belongs to
    step_scores: tuple[float, ...] | None = None
    score: float | None = None
    value: float | None = None
    pruned: bool = False
    tail: str = ""  # the delimiter ending ``prefix``, if any

    @property
    def answer_text(self) -> str:
        """The answer so far, without the trailing delimiter."""
        return self.prefix[: len(self.prefix) - len(self.tail)]


@dataclass(frozen=True)
class SearchState(State):
    """A search in progress: every node made so far (in order of creation), the nodes to
    expand next, and the rounds done."""

    nodes: tuple[Node, ...] = ()
    frontier: tuple[int, ...] = ()
    rounds: int = 0
    algo_state: Any = None  # the tree-search library's own state (MCTS)


def step_prompt(question: str, prefix: str) -> Prompt:
    """The solve prompt continuing a partial answer.

    Example:
        >>> step_prompt("2+2?", "First, 2+2.\\n\\n").prefill
        'First, 2+2.\\n\\n'
    """
    return replace(solve_prompt(question), prefill=prefix)


def verification_reserve(env: Env, question: str) -> int:
    """Worst-case tokens verifying one partial answer costs (0 when no cap counts tokens).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant, Budget
        >>> from ttscale.params import SamplingParams
        >>> from ttscale.verifiers.self_judge import SelfJudge
        >>> fb, capped = FakeBackend(), Accountant(Budget(max_tokens=9000))  # a cap counts tokens
        >>> [verification_reserve(Env(fb, acc, SamplingParams(), SelfJudge(fb)), "2+2?")
        ...  for acc in (Accountant(), capped)]
        [0, 1140]
    """
    if env.verifier is None or not env.accountant.counts_tokens:
        return 0
    return (env.verifier.reserve_tokens(env.sampling.max_tokens)
            + env.prompt_tokens(solve_prompt(question)))


def _delimited(g: Generation) -> bool:
    """Whether a generation ended at the step delimiter. A backend that cannot tell (an
    OpenAI server that reports no stop reason) is read from the text: a step holding the
    boxed final answer, or an empty one, ends the answer."""
    if g.hit_stop is not None:
        return g.hit_stop
    return g.finish_reason == "stop" and bool(g.text.strip()) and last_boxed(g.text) is None


def expand(env: Env, state: SearchState, parents: Sequence[int | None], k: int, *,
           delimiter: str | None, reserve: int = 0,
           groups: Sequence[int] | None = None) -> tuple[SearchState, list[int]]:
    """Generate ``k`` next steps for each parent (``None``: the question) in one batched
    call, as many as the budget allows; ``delimiter=None`` generates to the end of the
    answer. Returns the state with the new nodes, and their ids.

    When fewer samples fit the budget than asked, the first parents (best first) are
    expanded and the state is marked ``budget_limited``; when none fits, the search ends
    (``BudgetExceeded`` if nothing at all was spent).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> from ttscale.params import SamplingParams
        >>> env = Env(FakeBackend(responses=["a b\\n\\nc"]), Accountant(), SamplingParams())
        >>> state, ids = expand(env, SearchState("q"), [None], 2, delimiter="\\n\\n")
        >>> [(state.nodes[i].text, state.nodes[i].prefix, state.nodes[i].finished) for i in ids]
        [('a b', 'a b\\n\\n', False), ('a b', 'a b\\n\\n', False)]
        >>> state, ids = expand(env, state, [0], 1, delimiter="\\n\\n")
        >>> state.nodes[ids[0]].answer_text, state.nodes[ids[0]].finished
        ('a b\\n\\nc', True)
    """
    nodes = state.nodes
    cap = env.sampling.max_tokens
    room = min((cap - nodes[p].path_tokens for p in parents if p is not None), default=cap)
    stop = env.sampling.stop + ((delimiter,) if delimiter is not None else ())
    params = env.sampling.with_(n=k, seed=env.sampling.seed + len(nodes), max_tokens=room,
                                stop=stop)
    prompts = [step_prompt(state.question, "" if p is None else nodes[p].prefix)
               for p in parents]
    p_tokens = max(env.prompt_tokens(p) for p in prompts) if env.accountant.counts_tokens else 0
    want = len(parents) * k
    fits = env.accountant.affordable_samples(
        prompt_tokens=p_tokens, max_tokens=room + reserve, want=want,
        params_count=env.backend.params_count)
    if fits <= 0:
        if env.accountant.spent.calls == 0:
            raise BudgetExceeded(
                f"the budget cannot pay for one step (prompt {p_tokens} + up to {room + reserve} "
                "tokens): raise the budget or lower max_tokens")
        return replace(state, done=True, budget_limited=True), []
    limited = fits < want
    if limited:  # the best parents first, whole when possible
        if fits >= k:
            parents, prompts = parents[: fits // k], prompts[: fits // k]
        else:
            parents, prompts, params = parents[:1], prompts[:1], params.with_(n=fits)
    env.progress(f"round {state.rounds + 1}: {len(parents) * params.n} step"
                 f"{'s' if len(parents) * params.n > 1 else ''} from {len(parents)} branch"
                 f"{'es' if len(parents) > 1 else ''}")
    out = env.backend.generate(prompts, params)
    env.accountant.charge(out.usage)
    made: list[Node] = []
    for j, (parent, gens) in enumerate(zip(parents, out.generations, strict=True)):
        base = None if parent is None else nodes[parent]
        for i, g in enumerate(gens):
            made.append(_node(len(nodes) + len(made), base, g, delimiter, cap,
                              group=groups[j * params.n + i] if groups else
                              (base.group if base else 0)))
    return (replace(state, nodes=nodes + tuple(made), budget_limited=state.budget_limited
                    or limited), [m.id for m in made])


def _node(id_: int, parent: Node | None, g: Generation, delimiter: str | None, cap: int,
          group: int) -> Node:
    path = (parent.path_tokens if parent else 0) + g.completion_tokens
    delimited = delimiter is not None and _delimited(g)
    # cut by the round's token room, not by the answer's own cap: the next step continues it
    cut_short = g.finish_reason == "length" and path < cap and delimiter is not None
    tail = delimiter if delimited and delimiter is not None else ""
    prefix = (parent.prefix if parent else "") + g.text + tail
    return Node(id_, parent.id if parent else None, g.text, prefix,
                (parent.depth if parent else 0) + 1, g.completion_tokens, path,
                g.finish_reason, finished=path >= cap or not (delimited or cut_short),
                delimited=delimited,
                group=group, tail=tail)


def score(env: Env, state: SearchState, ids: Sequence[int]) -> SearchState:
    """Score the partial answers of nodes ``ids`` in one verifier call: a node's ``score``
    is its own step's, its ``value`` the verifier's reduction over all its steps.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> from ttscale.params import SamplingParams
        >>> from ttscale.verifiers.self_judge import SelfJudge
        >>> fb = FakeBackend(responses=["x"], yes_logprob=-0.5)
        >>> env = Env(fb, Accountant(), SamplingParams(), SelfJudge(fb))
        >>> state, ids = expand(env, SearchState("q"), [None], 1, delimiter="\\n\\n")
        >>> round(score(env, state, ids).nodes[0].score, 2)
        0.61
    """
    if not ids or env.verifier is None:
        return state
    env.progress(f"verifying {len(ids)} step{'s' if len(ids) > 1 else ''}")
    nodes = list(state.nodes)
    out = env.verifier.score(state.question, [nodes[i].answer_text for i in ids])
    env.accountant.charge(out.usage)
    for i, steps in zip(ids, out.step_scores, strict=True):
        nodes[i] = replace(nodes[i], step_scores=tuple(steps),
                           score=steps[-1] if steps else None,
                           value=min(1.0, max(0.0, env.verifier.reduce(steps))))
    notes = state.notes + tuple(n for n in out.notes if n not in state.notes)
    return replace(state, nodes=tuple(nodes), notes=notes)


def path(nodes: Sequence[Node], node: Node) -> list[Node]:
    """The nodes from the first step down to ``node``.

    Example:
        >>> a = Node(0, None, "2+2 is 4.", "2+2 is 4.\\n\\n", 1, 5, 5, "stop", False, True)
        >>> b = Node(1, 0, "So 4.", "2+2 is 4.\\n\\nSo 4.", 2, 3, 8, "stop", True, False)
        >>> [n.id for n in path([a, b], b)], [n.id for n in path([a, b], a)]
        ([0, 1], [0])
    """
    out = [node]
    while out[-1].parent is not None:
        out.append(nodes[out[-1].parent])
    return out[::-1]


def trace_of(nodes: Sequence[Node], node: Node) -> Trace:
    """The answer a node ends, as a trace: its text, tokens and its steps' scores.

    Example:
        >>> a = Node(0, None, "2+2 is 4.", "2+2 is 4.\\n\\n", 1, 5, 5, "stop", False, True,
        ...          score=0.8, tail="\\n\\n")
        >>> b = Node(1, 0, "So 4.", "2+2 is 4.\\n\\nSo 4.", 2, 3, 8, "stop", True, False, score=0.9)
        >>> t = trace_of([a, b], b)
        >>> t.answer, t.completion_tokens, t.step_scores
        ('4', 8, (0.8, 0.9))
    """
    steps = path(nodes, node)
    scores = tuple(s.score for s in steps if s.score is not None)
    return Trace(node.answer_text, extract_answer(node.answer_text), node.path_tokens,
                 node.finish_reason, scores or None, node.value)


def tree_json(state: SearchState, strategy: str, **info: Any) -> dict[str, Any]:
    """The search tree as nested JSON for the store and the report: the question at the
    root, then every node with its text, score, tokens and whether it was pruned.

    Example:
        >>> node = Node(0, None, "so 7", "so 7", 1, 2, 2, "stop", finished=True, delimited=False)
        >>> tree_json(SearchState("q", nodes=(node,)), "beam")["children"][0]["answer"]
        '7'
    """
    kids: dict[int | None, list[Node]] = {}
    for node in state.nodes:
        kids.setdefault(node.parent, []).append(node)

    def one(node: Node) -> dict[str, Any]:
        out: dict[str, Any] = {"id": node.id, "text": node.text, "score": node.score}
        if node.value is not None and node.value != node.score:
            out["value"] = node.value
        out["tokens"] = node.tokens
        if info.get("groups", 1) > 1:
            out["subtree"] = node.group
        out["pruned"] = node.pruned
        if node.finished:
            out["answer"] = extract_answer(node.answer_text)
        out["children"] = [one(c) for c in kids.get(node.id, [])]
        return out

    return {"question": state.question, "strategy": strategy, **info,
            "children": [one(c) for c in kids.get(None, [])]}


def finish_search(state: SearchState, env: Env, name: str, aggregate: str,
                  delimiter: str | None, **info: Any) -> Result:
    """The result of a search: finished answers (else the open branches, when the search
    stopped early) voted by ``aggregate``, the tree, and a note when no step ever ended at
    the delimiter, so that every answer was generated and scored whole.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.budget import Accountant
        >>> from ttscale.params import SamplingParams
        >>> env = Env(FakeBackend(), Accountant(), SamplingParams())
        >>> done = Node(0, None, "So 4.", "So 4.", 1, 3, 3, "stop", True, False, score=0.7)
        >>> r = finish_search(SearchState("2+2?", nodes=(done,)), env, "beam", "best", "\\n\\n")
        >>> r.answer, r.tree["strategy"], len(r.notes)  # a note: no step ended at the delimiter
        ('4', 'beam', 1)
    """
    nodes = state.nodes
    done = [n for n in nodes if n.finished]
    if not done:  # stopped before any answer ended: the best partial answers stand in
        done = [nodes[i] for i in state.frontier] or [n for n in nodes if not n.pruned]
    traces = tuple(trace_of(nodes, n) for n in done)
    notes = state.notes
    if delimiter is not None and nodes and not any(n.delimited for n in nodes):
        notes += (f"the step delimiter {delimiter!r} never ended a generation: every answer "
                  "was one step, scored as a whole answer",)
    weight, by = AGGREGATES[aggregate]
    classes = classes_of(traces, weight=weight)
    final = replace(state, traces=traces, notes=notes)
    return result(final, env, name, classes, pick(classes, by),
                  tree=tree_json(state, name, **info))
