"""Token sequences the SPRM feature model has already run, kept for their successors.

A step-level search scores each branch again every round, and the new partial answer starts
with the one scored the round before; a question's samples all start with its prompt. Keeping
the key/value cache and the per-token hidden states of what was run lets the next sequence
that shares a prefix run only its new tokens: the features of a token depend only on the
tokens before it, so the reused part's states are exactly those a full run would give.

Entries are evicted least recently used first once their tokens exceed ``max_tokens`` (the
memory per token is the cache of the layers run plus one hidden vector per layer read: for
the default model at layer 14, about 35 KB).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prefix:
    """A run token sequence: its cache (layers run) and, per layer read, the states of every
    token ``(tokens, hidden)``."""

    ids: tuple[int, ...]
    cache: Any
    states: dict[int, Any]


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share.

    Example:
        >>> common_length([1, 2, 3], [1, 2, 4, 5]), common_length([1], [1, 2])
        (2, 1)
        >>> common_length([], [3])
        0
    """
    n = min(len(a), len(b))
    if n == 0:
        return 0
    same = np.asarray(a[:n]) == np.asarray(b[:n])
    return n if bool(same.all()) else int(np.argmin(same))


class PrefixStore:
    """The sequences run lately, found by the longest prefix they share with a new one.

    Example:
        >>> store = PrefixStore(max_tokens=5)
        >>> store.add(Prefix((1, 2, 3), None, {}), (4,))
        >>> store.longest((1, 2, 9), (4,))[1], store.longest((1, 2, 9), (8,))[1]
        (2, 0)
        >>> store.add(Prefix((7, 8, 9), None, {}), (4,))  # 6 tokens: the oldest goes
        >>> store.longest((1, 2, 9), (4,))[1], store.tokens
        (0, 3)
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[tuple[int, ...], tuple[int, ...]], Prefix] = (
            OrderedDict())
        self.tokens = 0

    def longest(self, ids: Sequence[int], layers: tuple[int, ...]) -> tuple[Prefix | None, int]:
        """The entry read at ``layers`` sharing the most leading tokens with ``ids``, and how
        many (``(None, 0)`` when none shares any)."""
        best: tuple[Prefix | None, int] = (None, 0)
        for (kept_layers, _ids), entry in self._entries.items():
            if kept_layers == layers:
                n = common_length(entry.ids, ids)
                if n > best[1]:
                    best = (entry, n)
        if best[0] is not None:
            self._entries.move_to_end((layers, best[0].ids))
        return best

    def add(self, entry: Prefix, layers: tuple[int, ...]) -> None:
        """Keep ``entry`` (read at ``layers``), evicting the least recently used beyond the
        token limit."""
        key = (layers, entry.ids)
        if key in self._entries:
            self.tokens -= len(self._entries.pop(key).ids)
        if self.max_tokens < 1:
            return
        self._entries[key] = entry
        self.tokens += len(entry.ids)
        while self.tokens > self.max_tokens and len(self._entries) > 1:
            _key, old = self._entries.popitem(last=False)
            self.tokens -= len(old.ids)

    def start_from(self, entry: Prefix, n: int) -> tuple[Any, dict[int, Any]]:
        """A private copy of ``entry``'s cache cut to its first ``n`` tokens, and its states
        of those tokens: where a sequence sharing ``n`` tokens with it carries on."""
        cache = copy.deepcopy(entry.cache)
        extra = cache.get_seq_length() - n
        if extra > 0:
            cache.crop(-extra)  # transformers 5: a negative count of tokens to drop
        return cache, {w: s[:n] for w, s in entry.states.items()}
