"""The policy judging its own solution: P("Yes") to "Is this solution correct?".

The judge reads the question and one solution and answers with a single token; the score is
P(Yes) / (P(Yes) + P(No)) from the top log-probabilities of that token. A judge that puts
neither word in its top candidates gives no verdict: it is scored 0.5 and said in the notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttscale.backends.base import Backend
from ttscale.params import SamplingParams
from ttscale.types import Chat, Generation, Usage
from ttscale.verifiers.base import VerifierOutput
from ttscale.verifiers.reduce import check_reduction, reduce_scores

JUDGE_SYSTEM = "You are a strict grader of math solutions. Reply with one word: Yes or No."
JUDGE_TEMPLATE = (
    "Question:\n{question}\n\nProposed solution:\n{solution}\n\n"
    "Is the proposed solution correct, with the right final answer? Answer Yes or No."
)
_TEMPLATE_TOKENS = 80  # generous bound on the judge template's own tokens


def yes_probability(gen: Generation) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) over the first token's top candidates; None if neither.

    Example:
        >>> from ttscale.types import TokenLogprob
        >>> first = TokenLogprob("Yes", -0.2, (("Yes", -0.2), ("No", -1.8), ("Maybe", -3.0)))
        >>> round(yes_probability(Generation("Yes", 5, 1, "stop", (first,))), 3)
        0.832
        >>> yes_probability(Generation("Yes", 5, 1, "stop")) is None  # no log-probabilities
        True
    """
    if not gen.logprobs:
        return None
    yes = no = 0.0
    for token, lp in gen.logprobs[0].top or ((gen.logprobs[0].token, gen.logprobs[0].logprob),):
        word = token.strip().lower()
        if word in ("yes", "y"):
            yes += math.exp(lp)
        elif word in ("no", "n"):
            no += math.exp(lp)
    if yes + no == 0.0:
        return None
    return yes / (yes + no)


class SelfJudge:
    """Any backend model as an outcome verifier, scored from log-probabilities.

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> judge = SelfJudge(FakeBackend(responses=["Yes"], yes_logprob=math.log(0.8)))
        >>> out = judge.score("2+2?", ["It is \\\\boxed{4}."])
        >>> round(out.step_scores[0][0], 2), out.usage.calls
        (0.8, 1)
    """

    name = "self_judge"

    def __init__(self, backend: Backend, *, reduction: str = "last", top_logprobs: int = 20):
        self.backend = backend
        self.reduction = check_reduction(reduction)
        self.params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=True,
                                     top_logprobs=top_logprobs)

    def prompt(self, question: str, trace: str) -> Chat:
        return Chat.user(JUDGE_TEMPLATE.format(question=question.strip(), solution=trace.strip()),
                         system=JUDGE_SYSTEM)

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        return trace_max_tokens + _TEMPLATE_TOKENS + 1

    def reduce(self, steps: Sequence[float]) -> float:
        return reduce_scores(steps, self.reduction)

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        out = self.backend.generate([self.prompt(question, t) for t in traces], self.params)
        scores = []
        per_trace = []
        missing = 0
        params_count = getattr(self.backend, "params_count", 0)
        for gens in out.generations:
            per_trace.append(Usage.of(gens[0].prompt_tokens, gens[0].completion_tokens,
                                      params_count, 0.0))
            p = yes_probability(gens[0])
            if p is None:
                missing += 1
                p = 0.5
            scores.append((p,))
        notes: tuple[str, ...] = ()
        if missing:
            notes = (f"self_judge gave no verdict on {missing} trace(s); scored 0.5",)
        return VerifierOutput(tuple(scores), out.usage, notes, tuple(per_trace))
