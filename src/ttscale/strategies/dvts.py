"""DVTS, diverse verifier tree search (HF 2024): ``n / m`` independent subtrees, each a
greedy beam of width ``m``.

Round 1 samples ``n`` first steps from the question in one call and deals them to the
subtrees, ``m`` each. Every later round continues each subtree's best open prefix ``m``
times (all subtrees in one batched call, one verifier call); a subtree stops once ``m`` of
its answers have ended or none of its prefixes is open. With ``m`` = ``n`` it is beam
search with one survivor; smaller ``m`` keeps ``n / m`` lines of thought apart, which is
more diverse than one beam and pays off at large ``n``. The finished answers of all
subtrees are voted together (``aggregate``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.strategies.beam import BeamSearch


@dataclass(frozen=True, kw_only=True)
class DVTS(BeamSearch):
    """Diverse verifier tree search: ``n / width`` independent greedy beams of ``width``,
    searched in lockstep.

    Example:
        >>> from ttscale.solve import solve
        >>> from ttscale.backends.fake import FakeBackend
        >>> fb = FakeBackend(responses=["Add.\\n\\n\\\\boxed{4}"], yes_logprob=-0.1)
        >>> r = solve("2+2?", backend=fb, strategy="dvts:width=2", n=4, verifier="self_judge")
        >>> r.answer, r.tree["groups"], sorted({c["subtree"] for c in r.tree["children"]})
        ('4', 2, [0, 1])
    """

    name: str = "dvts"

    @property
    def groups(self) -> int:
        """Independent subtrees: ``n / width``."""
        return self.n // self.width
