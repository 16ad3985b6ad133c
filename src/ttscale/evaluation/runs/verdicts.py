"""A verifier that remembers: a search's verifier calls are kept in the run store.

A verifier-guided search (beam, DVTS, MCTS) scores partial answers round after round, and
its result row is written only when the question's last strategy finishes. A question
interrupted midway is solved again on resume: its generations come back from the store, and
with this wrapper its verifier calls do too, so the replay costs neither the verifier's time
(an SPRM forward pass or a judge's prompt) nor a different path through the tree (a model
re-run in another order can round a score differently and pick another beam).

A replayed call returns the tokens and FLOPs it once cost, so a row's accounting is the
same whether or not it was resumed, but no call and no seconds, as a replayed generation
does (``ttscale.evaluation.runs.cache``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ttscale.evaluation.runs.store import Store, canonical_json
from ttscale.types import Usage
from ttscale.verifiers.base import Verifier, VerifierOutput


def call_key(question: str, traces: Sequence[str]) -> str:
    """The key of one verifier call: a hash of the question and the traces, in order.

    Example:
        >>> call_key("q", ["a", "b"]) == call_key("q", ["a", "b"]) != call_key("q", ["b", "a"])
        True
    """
    return hashlib.sha256(canonical_json([question, list(traces)]).encode()).hexdigest()


def _replayed(u: Usage) -> Usage:
    return Usage(u.prompt_tokens, u.completion_tokens, 0, 0.0, u.flops)


def _to_json(out: VerifierOutput) -> dict[str, Any]:
    return {"step_scores": [list(s) for s in out.step_scores], "usage": asdict(out.usage),
            "notes": list(out.notes), "per_trace": [asdict(u) for u in out.per_trace]}


def _from_json(data: dict[str, Any]) -> VerifierOutput:
    return VerifierOutput(tuple(tuple(float(x) for x in s) for s in data["step_scores"]),
                          _replayed(Usage(**data["usage"])), tuple(data["notes"]),
                          tuple(_replayed(Usage(**u)) for u in data["per_trace"]))


class CachedVerifier:
    """Wraps ``verifier`` with the run store's verdicts, kept under ``identity`` (what the
    store binds the verifier's name to: an SPRM head's file and SHA-256, else its spec).

    Example:
        >>> import tempfile
        >>> from ttscale.backends.fake import FakeBackend
        >>> from ttscale.verifiers.self_judge import SelfJudge
        >>> fake = FakeBackend(yes_logprob=-0.5)
        >>> cv = CachedVerifier(SelfJudge(fake), Store.open(tempfile.mkdtemp(), {}), "judge")
        >>> first, again = cv.score("2+2?", ["4"]), cv.score("2+2?", ["4"])
        >>> len(fake.calls), first.step_scores == again.step_scores
        (1, True)
        >>> first.usage.total_tokens == again.usage.total_tokens, again.usage.calls
        (True, 0)
        >>> cv.replayed_here().total_tokens == again.usage.total_tokens
        True
    """

    def __init__(self, verifier: Verifier, store: Store, identity: str) -> None:
        self.verifier = verifier
        self.store = store
        self.identity = identity
        self.name = verifier.name
        self.replayed_calls = 0
        self._lock = threading.Lock()
        self._here = threading.local()  # per calling thread: one question's replays

    def replayed_here(self) -> Usage:
        """The usage replayed so far by calls from the calling thread (see
        ``CachedBackend.replayed_here``): charged to the row, not spent now."""
        found: Usage = getattr(self._here, "usage", Usage())
        return found

    def score(self, question: str, traces: Sequence[str]) -> VerifierOutput:
        key = call_key(question, traces)
        stored = self.store.get_verdict(self.identity, key)
        if stored is not None:
            out = _from_json(stored)
            with self._lock:
                self.replayed_calls += 1
            self._here.usage = self.replayed_here() + out.usage
            return out
        out = self.verifier.score(question, traces)
        self.store.put_verdict(self.identity, key, _to_json(out))
        return out

    def reduce(self, steps: Sequence[float]) -> float:
        return self.verifier.reduce(steps)

    def reserve_tokens(self, trace_max_tokens: int) -> int:
        return self.verifier.reserve_tokens(trace_max_tokens)
