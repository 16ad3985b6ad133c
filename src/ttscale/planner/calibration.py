"""Calibration data for fitting a plan: stored samples replayed as probe trajectories.

A :class:`CalQuestion` is one question's stored samples, already merged into answer classes
(by the caller, with math-verify) and labelled only per class. :func:`trajectories` draws
``orders`` random orders of each question's samples (without replacement, as an online
sampler would see them) and, at every stage (``k`` samples drawn), computes the probe's
signals, whether the majority, the brevity-weighted vote and the verifier-weighted answer
are right, and the
cumulative cost of sampling and of verifying, in every currency. Everything the fit needs is
then numpy arrays indexed ``[question, order, stage]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.aggregation.brevity import brevity_winner, weighted_winner
from ttscale.errors import ConfigError
from ttscale.planner.signals import Probe, features, signal_names

CURRENCY_UNITS = ("tokens", "flops", "seconds")


@dataclass(frozen=True)
class CalQuestion:
    """One calibration question: per sample its answer class (``-1``: none), tokens
    (prompt + completion), completion tokens, whether it was cut at ``max_tokens``, verifier
    score and the tokens its verification read; per class whether it is right."""

    id: str
    classes: tuple[int, ...]
    correct: tuple[bool, ...]
    tokens: tuple[int, ...]
    lengths: tuple[int, ...]
    cut: tuple[bool, ...]
    prompt_tokens: int = 0
    scores: tuple[float, ...] | None = None
    verify_tokens: tuple[int, ...] = ()
    confidences: tuple[float, ...] | None = None

    @property
    def n(self) -> int:
        return len(self.classes)

    def probe(self, drawn: Sequence[int], verified: bool) -> Probe:
        """The probe state of the samples ``drawn`` (in draw order), classes renumbered in
        first-drawn order as a live solve numbers them."""
        local: dict[int, int] = {}
        classes = tuple(-1 if self.classes[i] < 0 else local.setdefault(self.classes[i],
                                                                          len(local))
                        for i in drawn)
        return Probe(classes, tuple(self.lengths[i] for i in drawn),
                     tuple(self.cut[i] for i in drawn), self.prompt_tokens,
                     tuple(self.scores[i] for i in drawn) if verified and self.scores else None,
                     tuple(self.confidences[i] for i in drawn) if self.confidences else None)


@dataclass(frozen=True)
class Costs:
    """What a token costs in FLOPs and seconds, for the policy and for the verifier.

    Example:
        >>> Costs(3.0e9, 1.5e9).per_token("flops")
        (3000000000.0, 1500000000.0)
    """

    policy_flops: float = 0.0
    verifier_flops: float = 0.0
    policy_seconds: float = 0.0
    verifier_seconds: float = 0.0

    def per_token(self, unit: str) -> tuple[float, float]:
        if unit == "tokens":
            return 1.0, 1.0
        if unit == "flops":
            return self.policy_flops, self.verifier_flops
        return self.policy_seconds, self.verifier_seconds


@dataclass
class Trajectories:
    """Probe states of every (question, order, stage). Unavailable stages (a question with
    fewer samples than the stage) are marked in ``avail``."""

    stages: tuple[int, ...]
    avail: np.ndarray          # (Q, S) bool
    fu: np.ndarray             # (Q, R, S, dU) unverified signals
    fv: np.ndarray | None      # (Q, R, S, dV) verified signals (None without scores)
    maj: np.ndarray            # (Q, R, S) bool: the majority is right
    bok: np.ndarray            # (Q, R, S) bool: the brevity-weighted vote is right
    wok: np.ndarray            # (Q, R, S) bool: the verifier-weighted answer is right
    ptok: np.ndarray           # (Q, R, S) cumulative sampling tokens
    vtok: np.ndarray           # (Q, R, S) cumulative verification tokens
    u_names: tuple[str, ...]
    v_names: tuple[str, ...]
    confidence: bool
    # races (``k`` samples started together, the first ``m`` to finish vote): per race
    # whether its vote is right and what its samples cost (the rest cut at the m-th's
    # length), on the first k samples of each order; unavailable where a question has fewer
    races: tuple[tuple[int, int], ...] = ()
    rok: np.ndarray | None = None      # (Q, R, C) bool
    rtok: np.ndarray | None = None     # (Q, R, C) sampling tokens
    ravail: np.ndarray | None = None   # (Q, C) bool

    @property
    def verified(self) -> bool:
        return self.fv is not None

    def cost(self, unit: str, costs: Costs) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative sampling and verification cost in ``unit``."""
        p, v = costs.per_token(unit)
        return self.ptok * p, self.vtok * v


def default_stages(n_max: int) -> tuple[int, ...]:
    """The sample counts a plan decides at: every count up to 8, then four a doubling.

    A coarser ladder (1, 2, 3, 4, 6, 8, 12, 16, 24 ...) cost GSM8K about a point at 4 to 5
    samples' worth: a question that needs 5 samples was charged 6, one that needs 9 was
    charged 12.

    Example:
        >>> default_stages(16), default_stages(80)[-5:], default_stages(5)
        ((1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16), (40, 48, 56, 64, 80), (1, 2, 3, 4, 5))
    """
    ladder = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80,
              96, 112, 128, 160, 192, 224, 256]
    out = [k for k in ladder if k < n_max] + [n_max]
    return tuple(sorted(set(out)))


def race_grid(stages: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """The races a plan may run: ``k`` at each stage from 2 samples, the first half (rounded
    up) to finish voting. One race a stage: on AIME a grid of five ``m`` a stage made the
    choice noisier (98.5% of majority@80 against 98.9%) for no race it did not already have.

    Example:
        >>> race_grid((1, 2, 3, 4, 8))
        ((2, 1), (3, 2), (4, 2), (8, 4))
    """
    return tuple((k, (k + 1) // 2) for k in stages if k >= 2)


def race_ok_cost(q: CalQuestion, drawn: Sequence[int], m: int) -> tuple[bool, float]:
    """A race among the samples ``drawn``: whether the vote of the first ``m`` to finish
    (the shortest; a tie of votes to the class of the shortest) is right, and the tokens
    it costs: each sample its prompt and its length cut one token past the m-th's (a
    sample still running is stopped on the token it is shown next, as a live race does).

    Example:
        >>> q = CalQuestion("a", (0, 1, 1), (True, False), (14, 8, 16), (10, 4, 12),
        ...                 (False,) * 3, 4)
        >>> race_ok_cost(q, (0, 1, 2), 1), race_ok_cost(q, (0, 1, 2), 2)
        ((False, 26.0), (False, 37.0))
    """
    srt = sorted(range(len(drawn)), key=lambda j: (q.lengths[drawn[j]], j))
    voters = [drawn[j] for j in srt[:m]]
    cut = q.lengths[voters[-1]]
    winner = weighted_winner([q.classes[i] for i in voters], [1.0] * len(voters))
    cost = sum(q.tokens[i] - q.lengths[i] + min(q.lengths[i], cut + 1) for i in drawn)
    return winner is not None and bool(q.correct[winner]), float(cost)


def _winner_ok(q: CalQuestion, drawn: Sequence[int], weighted: bool) -> bool:
    """Whether the vote of the samples ``drawn`` (by count, or by verifier score) is right;
    ties go to the class drawn first."""
    weights = [q.scores[i] if weighted and q.scores is not None else 1.0 for i in drawn]
    winner = weighted_winner([q.classes[i] for i in drawn], weights)
    return winner is not None and bool(q.correct[winner])


def _brevity_ok(q: CalQuestion, drawn: Sequence[int]) -> bool:
    winner = brevity_winner([q.classes[i] for i in drawn], [q.lengths[i] for i in drawn])
    return winner is not None and bool(q.correct[winner])


def trajectories(questions: Sequence[CalQuestion], stages: Sequence[int], *,
                 orders: int = 32, seed: int = 0, races: bool = False) -> Trajectories:
    """Replay every question in ``orders`` random orders and record each stage's probe
    (and, with ``races``, each race of :func:`race_grid` on the same orders).

    Example:
        >>> q = CalQuestion("a", (0, 0, 1), (True, False), (10, 10, 10), (5, 5, 5),
        ...                 (False,) * 3, 4)
        >>> t = trajectories([q], (1, 2, 3), orders=4)
        >>> t.fu.shape, bool(t.maj[0, :, 2].all()), t.ptok[0, 0].tolist()
        ((1, 4, 3, 9), True, [10.0, 20.0, 30.0])
    """
    if not questions:
        raise ConfigError("no calibration questions: give runs with labelled samples")
    if orders < 1:
        raise ConfigError(f"orders must be a positive number, got {orders}")
    verified = all(q.scores is not None for q in questions)
    confidence = all(q.confidences is not None for q in questions)
    u_names = signal_names("U", confidence=confidence)
    v_names = signal_names("V", confidence=confidence) if verified else ()
    qn, r, s = len(questions), orders, len(stages)
    fu = np.zeros((qn, r, s, len(u_names)))
    fv = np.zeros((qn, r, s, len(v_names))) if verified else None
    maj = np.zeros((qn, r, s), dtype=bool)
    bok = np.zeros((qn, r, s), dtype=bool)
    wok = np.zeros((qn, r, s), dtype=bool)
    ptok = np.zeros((qn, r, s))
    vtok = np.zeros((qn, r, s))
    avail = np.array([[q.n >= k for k in stages] for q in questions], dtype=bool)
    grid = race_grid(stages) if races else ()
    rok = np.zeros((qn, r, len(grid)), dtype=bool)
    rtok = np.zeros((qn, r, len(grid)))
    ravail = np.array([[q.n >= k for k, _m in grid] for q in questions], dtype=bool)
    ravail = ravail.reshape(qn, len(grid))
    rng = np.random.default_rng(seed)
    for qi, q in enumerate(questions):
        vt = q.verify_tokens or (0,) * q.n
        for o in range(r):
            order = rng.permutation(q.n).tolist()
            for si, k in enumerate(stages):
                if k > q.n:
                    break
                drawn = order[:k]
                fu[qi, o, si] = features(q.probe(drawn, False), "U", confidence=confidence)
                if fv is not None:
                    fv[qi, o, si] = features(q.probe(drawn, True), "V", confidence=confidence)
                maj[qi, o, si] = _winner_ok(q, drawn, False)
                bok[qi, o, si] = _brevity_ok(q, drawn)
                wok[qi, o, si] = _winner_ok(q, drawn, True) if verified else maj[qi, o, si]
                ptok[qi, o, si] = sum(q.tokens[i] for i in drawn)
                vtok[qi, o, si] = sum(vt[i] for i in drawn)
            for ci, (k, m) in enumerate(grid):
                if k <= q.n:
                    rok[qi, o, ci], rtok[qi, o, ci] = race_ok_cost(q, order[:k], m)
    return Trajectories(tuple(stages), avail, fu, fv, maj, bok, wok, ptok, vtok, u_names, v_names,
                        confidence, grid, rok, rtok, ravail)
