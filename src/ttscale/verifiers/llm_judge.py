"""Generative verification: a model (the policy or another) checks a solution and gives a
verdict; ``k`` sampled verdicts are averaged (Heimdall 2025; Sample, Scrutinize and Scale 2025).

With ``logprob=True`` the judge answers one word and the score is P(Yes) / (P(Yes) + P(No))
from its log-probabilities, as ``self_judge``. ``pairwise`` asks which of two solutions is
correct in both orders, so a judge that favours a position cancels out; ``break_tie`` uses
it between equally scored top candidates. ``pessimistic=True`` scores a trace by the lower
confidence bound of its verdicts, so best-of-N prefers a solution judged right consistently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.backends.base import Backend
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.types import Chat, GenerateOutput, Usage
from ttscale.verifiers.base import VerifierOutput
from ttscale.verifiers.reduce import check_reduction, reduce_scores
from ttscale.verifiers.self_judge import JUDGE_SYSTEM, JUDGE_TEMPLATE, yes_probability
from ttscale.verifiers.steps import fill

GRADER_SYSTEM = "You are a careful, strict grader of math solutions."
VERIFY_TEMPLATE = (
    "Question:\n{question}\n\nProposed solution:\n{solution}\n\n"
    "Check the solution step by step. Then end with your verdict: \\boxed{Yes} if the solution "
    "and its final answer are correct, \\boxed{No} if not.")
PAIRWISE_TEMPLATE = (
    "Question:\n{question}\n\nSolution A:\n{a}\n\nSolution B:\n{b}\n\n"
    "Which solution is correct? Check both step by step, then end with \\boxed{A} or "
    "\\boxed{B}.")
_TEMPLATE_TOKENS = 80  # generous bound on a template's own tokens
_WORDS = {"yes": 1.0, "correct": 1.0, "true": 1.0, "no": 0.0, "incorrect": 0.0, "false": 0.0}
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([A-Za-z]+)\s*\}?\s*\}")
_LABEL = re.compile(r"(?:verdict|answer|judge?ment)\W{0,4}(?:is\W{0,3})?(not\s+)?([A-Za-z]+)\b",
                    re.I)


def parse_verdict(text: str) -> float | None:
    """1.0 (correct), 0.0 (incorrect) or ``None`` (no verdict) from a judge's reply: the last
    ``\\boxed{}`` verdict, else the last "Verdict: ...", else a reply that begins with one.

    Example:
        >>> parse_verdict("Step 2 is wrong. \\\\boxed{No}"), parse_verdict("Verdict: correct")
        (0.0, 1.0)
        >>> parse_verdict("The answer is not correct."), parse_verdict("Yes.")
        (0.0, 1.0)
        >>> parse_verdict("I cannot tell.") is None
        True
    """
    boxed = [m.lower() for m in _BOXED.findall(text) if m.lower() in _WORDS]
    if boxed:
        return _WORDS[boxed[-1]]
    labelled = [(bool(neg), w.lower()) for neg, w in _LABEL.findall(text) if w.lower() in _WORDS]
    if labelled:
        negated, word = labelled[-1]
        return 1.0 - _WORDS[word] if negated else _WORDS[word]
    words = re.findall(r"[A-Za-z]+", text)
    if words and words[0].lower() in _WORDS:
        return _WORDS[words[0].lower()]
    return None


def parse_choice(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``None`` from a pairwise reply: the last ``\\boxed{A}`` /
    ``\\boxed{B}``, else a reply that is just the letter.

    Example:
        >>> parse_choice("B has an error. \\\\boxed{A}"), parse_choice("B"), parse_choice("?")
        ('A', 'B', None)
    """
    found = [str(m).upper() for m in _BOXED.findall(text) if m.upper() in ("A", "B")]
    if found:
        return found[-1]
    bare = re.sub(r"[^A-Za-z]", "", text)
    return bare.upper() if bare.upper() in ("A", "B") else None


def lower_bound(verdicts: Sequence[float], z: float = 1.0) -> float:
    """mean - z * sd / sqrt(k) of ``k`` verdict scores (sample sd; 0 for one verdict).

    Example:
        >>> round(lower_bound([1.0, 1.0, 0.0, 1.0]), 3), lower_bound([0.5])
        (0.5, 0.5)
    """
    k = len(verdicts)
    mean = sum(verdicts) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in verdicts) / (k - 1)) if k > 1 else 0.0
    return mean - z * sd / math.sqrt(k)


def pick_pessimistic(verdicts: Sequence[Sequence[float]], z: float = 1.0) -> int:
    """The candidate (a trace, or an answer class with its traces' verdicts pooled) with
    the best lower confidence bound; ties go to the first.

    Example:
        >>> pick_pessimistic([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0]])
        1
    """
    if not verdicts or any(not v for v in verdicts):
        raise ConfigError("pick_pessimistic needs at least one verdict per candidate")
    bounds = [lower_bound(v, z) for v in verdicts]
    return bounds.index(max(bounds))


@dataclass(frozen=True)
class Verdicts:
    """Per trace its verdict scores (0.5 where the judge gave none), the call's usage, each
    trace's share, and how many of the ``total`` verdicts were missing."""

    scores: tuple[tuple[float, ...], ...]
    usage: Usage
    per_trace: tuple[Usage, ...]
    missing: int
    total: int


@dataclass(frozen=True)
class Pairwise:
    """P(the first solution is the correct one) over both orders, its verdicts (1: first,
    0: second, 0.5: none) and usage. ``winner`` is 0, 1 or ``None`` for a draw."""

    p_first: float
    votes: tuple[float, ...]
    usage: Usage
    missing: int

    @property
    def winner(self) -> int | None:
        return None if self.p_first == 0.5 else (0 if self.p_first > 0.5 else 1)


class LLMJudge:
    """A backend model as a generative outcome verifier.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(script=lambda p, i: "\\\\boxed{No}" if i == 2 else "\\\\boxed{Yes}")
        >>> out = LLMJudge(fb, k=4).score("2+2?", ["It is \\\\boxed{4}."])
        >>> out.step_scores, out.usage.completion_tokens
        (((0.75,),), 4)
    """

    name = "llm_judge"

    def __init__(self, backend: Backend, *, k: int = 4, temperature: float = 0.7,
                 max_tokens: int = 1024, logprob: bool = False, pessimistic: bool = False,
                 z: float = 1.0, reduction: str = "last", top_logprobs: int = 20,
                 seed: int = 0) -> None:
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive number of verdicts, got {k}")
        if k > 1 and temperature == 0:
            raise ConfigError("k > 1 verdicts at temperature 0 would all be the same: "
                              "raise temperature or set k=1")
        if z < 0:
            raise ConfigError(f"z must be >= 0 standard errors, got {z}")
        if not 0 <= top_logprobs <= 20:  # checked here too: only logprob=true samples with it
            raise ConfigError(f"top_logprobs must be between 0 and 20, got {top_logprobs}")
        self.backend = backend
        self.k = k
        self.logprob = logprob
        self.pessimistic = pessimistic
        self.z = z
        self.reduction = check_reduction(reduction)
        self.sampled = SamplingParams(n=k, temperature=temperature, max_tokens=max_tokens,
                                      seed=seed)
        self.params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=True,
                                     top_logprobs=top_logprobs) if logprob else self.sampled

    def prompt(self, question: str, trace: str) -> Chat:
        if self.logprob:
            return Chat.user(fill(JUDGE_TEMPLATE, question=question.strip(),
                                  solution=trace.strip()), system=JUDGE_SYSTEM)
        return Chat.user(fill(VERIFY_TEMPLATE, question=question.strip(),
                              solution=trace.strip()), system=GRADER_SYSTEM)

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        p = self.params
        return p.n * (trace_max_tokens + _TEMPLATE_TOKENS + p.max_tokens)

    def reduce(self, steps: Sequence[float]) -> float:
        return reduce_scores(steps, self.reduction)

    def verdicts(self, question: str, traces: Sequence[str]) -> Verdicts:
        """Every trace's verdicts from one batched call (``k`` samples per trace)."""
        out = self.backend.generate([self.prompt(question, t) for t in traces], self.params)
        scores, missing = [], 0
        for gens in out.generations:
            row = []
            for g in gens:
                v = yes_probability(g) if self.logprob else parse_verdict(g.text)
                missing += v is None
                row.append(0.5 if v is None else v)  # no verdict: neutral
            scores.append(tuple(row))
        total = sum(len(s) for s in scores)
        return Verdicts(tuple(scores), out.usage, self._shares(out), missing, total)

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        v = self.verdicts(question, traces)
        if self.pessimistic:
            values = [min(1.0, max(0.0, lower_bound(s, self.z))) for s in v.scores]
        else:
            values = [sum(s) / len(s) for s in v.scores]
        notes: tuple[str, ...] = ()
        if v.missing:
            notes = (f"llm_judge gave no verdict in {v.missing} of {v.total} verdicts; "
                     "scored 0.5",)
        return VerifierOutput(tuple((x,) for x in values), v.usage, notes, v.per_trace)

    def pairwise(self, question: str, a: str, b: str) -> Pairwise:
        """Which of two solutions is correct, asked ``k`` times in each order in one call."""
        prompts = [Chat.user(fill(PAIRWISE_TEMPLATE, question=question.strip(), a=x.strip(),
                                  b=y.strip()), system=GRADER_SYSTEM) for x, y in ((a, b), (b, a))]
        out = self.backend.generate(prompts, self.sampled)
        votes, missing = [], 0
        for first_is, gens in zip(("A", "B"), out.generations, strict=True):
            for g in gens:
                choice = parse_choice(g.text)
                missing += choice is None
                votes.append(0.5 if choice is None else float(choice == first_is))
        return Pairwise(sum(votes) / len(votes), tuple(votes), out.usage, missing)

    def _shares(self, out: GenerateOutput) -> tuple[Usage, ...]:
        """Each prompt's own tokens; the call's seconds in proportion to them."""
        params_count = getattr(self.backend, "params_count", 0)
        tokens = [sum(g.prompt_tokens + g.completion_tokens for g in gens)
                  for gens in out.generations]
        total = max(sum(tokens), 1)
        return tuple(
            Usage.of(sum(g.prompt_tokens for g in gens), sum(g.completion_tokens for g in gens),
                     params_count, out.usage.seconds * n / total, calls=0)
            for gens, n in zip(out.generations, tokens, strict=True))


@dataclass(frozen=True)
class TieBreak:
    """The chosen candidate, the pairwise comparison asked (if any) and its usage."""

    index: int
    pairwise: Pairwise | None
    usage: Usage


def break_tie(judge: LLMJudge, question: str, traces: Sequence[str],
              scores: Sequence[float], *, tolerance: float = 1e-9) -> TieBreak:
    """The best-scored trace; when the two best are within ``tolerance``, the judge's
    pairwise verdict between them decides (a draw keeps the earlier one).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(script=lambda p, i: "\\\\boxed{A}" if "A:\\nx = 2" in
        ...                  p.messages[-1].content else "\\\\boxed{B}")
        >>> tb = break_tie(LLMJudge(fb, k=2), "?", ["x = 1", "x = 2", "x = 3"], [0.9, 0.9, 0.1])
        >>> tb.index, tb.pairwise.p_first, tb.usage.calls
        (1, 0.0, 2)
    """
    if not traces or len(traces) != len(scores):
        raise ConfigError("break_tie needs one score per trace, and at least one trace")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    best = order[0]
    if len(order) < 2 or scores[best] - scores[order[1]] > tolerance:
        return TieBreak(best, None, Usage())
    second = order[1]
    duel = judge.pairwise(question, traces[best], traces[second])
    return TieBreak(second if duel.winner == 1 else best, duel, duel.usage)
