"""Token log-probabilities packed as the run store keeps them, so a sample can go from the
server's answer to SQLite without a Python object per token.

The stored text is compact JSON, ``[[token, logprob, [[alt, logprob], ...]], ...]`` (the
store's ``token_logprobs`` column, unchanged since the first release), with a summary
(tokens, sum, mean, min) beside it. A controller storing thousands of samples a second
needs neither :class:`TokenLogprob` objects nor a second serialisation: the OpenAI decoder
packs what it decoded (``openai_decode``) and hands a :class:`PackedGeneration` on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ttscale.types import Generation, TokenLogprob

_ENCODE = msgspec.json.Encoder()
# What the stored text decodes to, decoded by msgspec in C rather than dict by dict.
_ROWS = msgspec.json.Decoder(list[tuple[str, float, tuple[tuple[str, float], ...]]])


@dataclass(frozen=True)
class PackedLogprobs:
    """A sample's token log-probabilities as stored: ``text`` and the summary's figures.

    Example:
        >>> p = pack([TokenLogprob("4", -0.5, (("4", -0.5), ("5", -2.0)))])
        >>> p.text, p.tokens
        ('[["4",-0.5,[["4",-0.5],["5",-2.0]]]]', 1)
        >>> p.summary()
        '{"mean":-0.5,"min":-0.5,"sum":-0.5,"tokens":1}'
    """

    text: str
    tokens: int
    total: float
    lowest: float | None

    def summary(self) -> str:
        """The summary column: sorted compact JSON of tokens, sum, mean and min."""
        mean = self.total / self.tokens if self.tokens else None
        return _summary_json(self.tokens, self.total, mean, self.lowest)

    def unpack(self) -> tuple[TokenLogprob, ...]:
        """The :class:`TokenLogprob` tuple the text stands for."""
        return unpack(self.text)


@dataclass(frozen=True)
class PackedGeneration(Generation):
    """A generation whose log-probabilities were packed straight from the decoder:
    ``logprobs`` is None and ``packed`` holds them (``packed.unpack()`` rebuilds them)."""

    packed: PackedLogprobs | None = None


def pack_rows(rows: Sequence[tuple[str, float, Sequence[tuple[str, float]]]],
              values: Sequence[float]) -> PackedLogprobs:
    """Pack rows of (token, logprob, alternatives); ``values`` are the rows' logprobs.

    Example:
        >>> pack_rows([("a", -1.0, [])], [-1.0]).text
        '[["a",-1.0,[]]]'
    """
    try:
        raw = _ENCODE.encode(rows)
    except (UnicodeEncodeError, msgspec.EncodeError):
        raw = b"null"  # a lone surrogate from a server's broken UTF-8
    # msgspec writes an infinite logprob as null, where the standard encoder keeps it
    # (-Infinity): those samples, and the rare token spelt "null", take the slow path
    text = (json.dumps(rows, separators=(",", ":"), ensure_ascii=False) if b"null" in raw
            else raw.decode())
    return PackedLogprobs(text, len(values), sum(values), min(values) if values else None)


def pack(tokens: Sequence[TokenLogprob]) -> PackedLogprobs:
    """``tokens`` as the store keeps them.

    Example:
        >>> pack([TokenLogprob("a", -1.0)]).text
        '[["a",-1.0,[]]]'
    """
    return pack_rows([(t.token, t.logprob, t.top) for t in tokens], [t.logprob for t in tokens])


def unpack(text: str | bytes) -> tuple[TokenLogprob, ...]:
    """The tokens of a stored ``token_logprobs`` text, whichever encoder wrote it.

    Example:
        >>> unpack('[["a",-1.0,[["a",-1.0],["b",-2.5]]]]')
        (TokenLogprob(token='a', logprob=-1.0, top=(('a', -1.0), ('b', -2.5))),)
    """
    try:
        rows = _ROWS.decode(text)
    except msgspec.DecodeError:
        # -Infinity, which the standard encoder writes and msgspec does not read
        rows = [(t, float(lp), tuple((a, float(b)) for a, b in top))
                for t, lp, top in json.loads(text)]
    return tuple(TokenLogprob(t, lp, top) for t, lp, top in rows)


def summary_json(tokens: Sequence[TokenLogprob] | None) -> str | None:
    """The summary column of ``tokens`` (None: no log-probabilities).

    Example:
        >>> summary_json([TokenLogprob("a", -1.0), TokenLogprob("b", -3.0)])
        '{"mean":-2.0,"min":-3.0,"sum":-4.0,"tokens":2}'
    """
    if tokens is None:
        return None
    values = [t.logprob for t in tokens]
    return _summary_json(len(values), sum(values), sum(values) / len(values) if values else None,
                         min(values) if values else None)


def _summary_json(tokens: int, total: float, mean: float | None, lowest: float | None) -> str:
    # keys sorted as canonical JSON sorts them, so old and new rows read alike
    fields: dict[str, Any] = {"mean": mean, "min": lowest, "sum": total, "tokens": tokens}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
