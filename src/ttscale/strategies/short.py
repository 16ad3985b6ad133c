"""A race: start ``n`` samples at once and answer from the first ``m`` to finish
(short-m@k, Hassid et al. 2025, "Don't overthink it").

Reasoning models that are right tend to be brief, and a long trace is more often one that
lost its way. So the ``n`` samples stream side by side; once ``m`` of them have finished,
the others are aborted at their next token (charged only what they produced) and the ``m``
vote: the largest class wins, a tie going to the class of the shortest trace. On long,
varied traces (AIME) this answers as well as majority over all ``n`` for much less;
on short, even ones (GSM8K) there is little to cut.

The vote reads the lengths, not the clock: the ``m`` shortest samples that ended on their
own vote, so a backend that cannot stream (whole samples, cut afterwards, every token
charged) or a sample that ended a token late gives the same answer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ttscale.backends.streaming import generate_watched
from ttscale.errors import ConfigError
from ttscale.params import SamplingParams
from ttscale.strategies.base import Env, State, classes_of, pick, result, sample
from ttscale.types import AnswerClass, GenerateOutput, Prompt, Result, TokenLogprob, Trace


@dataclass
class Race:
    """A watch (:mod:`ttscale.backends.streaming`) that aborts every sample still running
    once ``m`` have finished.

    Example:
        >>> race = Race(1)
        >>> t = TokenLogprob("a", -0.1)
        >>> race(0, t), race.finished(1), race(0, t)
        (False, None, True)
    """

    m: int
    done: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, index: int, _token: TokenLogprob) -> bool:
        with self.lock:  # llama.cpp calls each sample's watch from its own thread
            return len(self.done) >= self.m and index not in self.done

    def finished(self, index: int) -> None:
        with self.lock:
            self.done.add(index)


def first_finished(traces: Sequence[Trace], m: int) -> list[int]:
    """The indices of the ``m`` shortest traces that ended on their own (not aborted, not
    failed), shortest first; equal lengths in draw order.

    Example:
        >>> ts = [Trace("", "1", 9, "stop"), Trace("", "2", 4, "aborted"),
        ...       Trace("", "3", 5, "stop"), Trace("", "4", 7, "length")]
        >>> first_finished(ts, 2)
        [2, 3]
    """
    ended = [i for i, t in enumerate(traces) if t.finish_reason not in ("aborted", "error")]
    return sorted(ended, key=lambda i: (traces[i].completion_tokens, i))[:m]


def race_classes(traces: Sequence[Trace], m: int) -> list[AnswerClass]:
    """The answer classes of the first ``m`` traces to finish, the class holding the
    shortest trace first (so that :func:`pick` by votes breaks ties toward it); their
    ``traces`` index into ``traces``.

    Example:
        >>> ts = [Trace("", "5", 9, "stop"), Trace("", "4", 3, "stop"),
        ...       Trace("", "5", 6, "stop"), Trace("", "4", 8, "stop")]
        >>> [(c.answer, c.votes, c.traces) for c in race_classes(ts, 3)]
        [('4', 2, (1, 3)), ('5', 1, (2,))]
        >>> pick(race_classes(ts, 2), "votes")  # one each: the shorter wins the tie
        '4'
    """
    voters = first_finished(traces, m)
    local = classes_of([traces[i] for i in voters])
    return [replace(c, traces=tuple(voters[j] for j in c.traces)) for c in local]


def race(env: Env, state: State, n: int, m: int) -> State:
    """Start ``n`` samples side by side and abort the rest once ``m`` have finished; the
    samples join ``state.traces`` (aborted ones too: they were paid for). A note says so
    where the backend cannot stream (nothing could be cut, so every token was charged)."""
    watch = Race(m)
    streamed = [True]

    def watched(prompt: Prompt, asked: SamplingParams) -> GenerateOutput:
        out, streamed[0] = generate_watched(env.backend, prompt, asked, watch)
        return out

    state = sample(env, state, n, generate=watched)
    if not streamed[0] and not any("cannot stream" in x for x in state.notes):
        note = (f"backend {env.backend.name} cannot stream: the race's samples ran to their "
                "end, so every generated token is charged (the vote is the same)")
        state = replace(state, notes=(*state.notes, note))
    return state


@dataclass(frozen=True, kw_only=True)
class Short:
    """short-m@k: ``n`` samples race, the first ``m`` to finish vote (default: half of
    ``n``, rounded up).

    Example (two short answers of 5 finish first; majority would say 4):
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["so \\\\boxed{5}", "we add them up: \\\\boxed{4}",
        ...                             "thus \\\\boxed{5}", "slow thinking: \\\\boxed{4}",
        ...                             "and more slow thinking: \\\\boxed{4}"])
        >>> r = solve("?", backend=fb, strategy="short:m=2", n=5)
        >>> r.answer, [t.finish_reason for t in r.traces]
        ('5', ['stop', 'aborted', 'stop', 'aborted', 'aborted'])
    """

    n: int = 8
    m: int | None = None
    name: str = "short"
    needs_verifier: bool = False

    def __post_init__(self) -> None:
        if self.m is not None and not 1 <= self.m <= self.n:
            raise ConfigError(f"short's m (how many of the {self.n} samples must finish "
                              f"before the vote) must be between 1 and {self.n}, got {self.m}")

    @property
    def voters(self) -> int:
        return self.m if self.m is not None else (self.n + 1) // 2

    def step(self, state: State, env: Env) -> State:
        state = race(env, state, self.n - len(state.traces), self.voters)
        return replace(state, done=True)

    def finish(self, state: State, env: Env) -> Result:
        classes = race_classes(state.traces, self.voters)
        return result(state, env, self.name, classes, pick(classes, "votes"))
