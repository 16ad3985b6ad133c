"""A backend that remembers: stored samples are replayed, only missing ones are generated.

Sample ``i`` of a request with seed ``s`` is the sample with index ``s + i`` (every ttscale
backend seeds it so), so any contiguous range of samples can be generated on its own: asking
``n=16`` after ``n=8`` with the same seed generates samples 8..15 only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.answers import extract_answer
from ttscale.backends.base import Backend
from ttscale.backends.streaming import Watch, can_stream, usage_of, watch_generations
from ttscale.errors import BackendError
from ttscale.evaluation.runs.store import NewGeneration, Store, prompt_json
from ttscale.params import SamplingParams
from ttscale.types import GenerateOutput, Generation, Prompt, TokenLogprob, Usage


def missing_runs(have: set[int], first: int, stop: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, length)`` runs of indices in ``[first, stop)`` not in ``have``.

    Example:
        >>> missing_runs({0, 1, 4}, 0, 8)
        [(2, 2), (5, 3)]
    """
    runs: list[tuple[int, int]] = []
    for i in range(first, stop):
        if i in have:
            continue
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


class CachedBackend:
    """Wraps a backend with the run store's generation cache.

    ``generate`` returns what an uncached call would, but its ``Usage`` counts only the
    compute spent now; the compute the replayed samples once cost is returned by
    ``generate_counted`` and summed in ``cached_usage``, so an evaluation can report the
    full cost of every answer. ``model_sha256`` keys the cache to the exact model weights.

    Example:
        >>> import tempfile
        >>> from ttscale.backends.fake import FakeBackend
        >>> fake = FakeBackend(script=lambda _p, i: f"sample {i}")
        >>> cb = CachedBackend(fake, Store.open(tempfile.mkdtemp(), {}), "sha-of-model")
        >>> first = cb.generate(["2+2?"], SamplingParams(n=2))
        >>> out = cb.generate(["2+2?"], SamplingParams(n=4))
        >>> [g.text for g in out.generations[0]], fake.calls[-1][1].seed, fake.calls[-1][1].n
        (['sample 0', 'sample 1', 'sample 2', 'sample 3'], 2, 2)
        >>> out.usage.completion_tokens, cb.cached_usage.completion_tokens
        (4, 4)
    """

    def __init__(self, backend: Backend, store: Store, model_sha256: str) -> None:
        self.backend = backend
        self.store = store
        self.model_sha256 = model_sha256
        self.name = backend.name
        self.model_id = backend.model_id
        self.params_count = backend.params_count
        self.cached_usage = Usage()  # compute replayed from the store, summed over calls
        self.cached_samples = 0
        self.new_samples = 0
        self._lock = threading.Lock()
        self._here = threading.local()  # the same, per calling thread: see replayed_here

    def replayed_here(self) -> Usage:
        """The compute replayed so far for calls made from the calling thread. Questions
        evaluated side by side each solve in their own thread, so a question's replays are
        the change of this, not of ``cached_usage`` (which the other questions move too).

        Example:
            >>> import tempfile
            >>> from ttscale.backends.fake import FakeBackend
            >>> cb = CachedBackend(FakeBackend(), Store.open(tempfile.mkdtemp(), {}), "sha")
            >>> _ = cb.generate(["q"], SamplingParams(n=1)), cb.generate(["q"], SamplingParams(n=1))
            >>> cb.replayed_here().completion_tokens == cb.cached_usage.completion_tokens > 0
            True
        """
        found: Usage = getattr(self._here, "usage", Usage())
        return found

    def _count_replayed(self, usage: Usage, replayed: int, fresh: int) -> None:
        with self._lock:
            self.cached_usage = self.cached_usage + usage
            self.cached_samples += replayed
            self.new_samples += fresh
        self._here.usage = self.replayed_here() + usage

    def count_tokens(self, prompt: Prompt) -> int:
        return self.backend.count_tokens(prompt)

    def close(self) -> None:
        """Close the wrapped backend; the store belongs to whoever opened it."""
        self.backend.close()

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> GenerateOutput:
        """Like ``Backend.generate``; ``usage`` is the newly spent compute only."""
        return self.generate_counted(prompts, params)[0]

    def generate_counted(self, prompts: Sequence[Prompt],
                         params: SamplingParams) -> tuple[GenerateOutput, Usage]:
        """The output (usage: new compute) and the usage of the samples replayed."""
        first, stop = params.seed, params.seed + params.n
        # A prompt repeated in one call is generated once: the copies are replays.
        unique: dict[str, Prompt] = {}
        for p in prompts:
            unique.setdefault(prompt_json(p), p)
        found: dict[str, dict[int, Generation]] = {}
        shapes: dict[tuple[int, int], list[str]] = {}
        for key, prompt in unique.items():
            stored = self.store.get_generations(self.model_sha256, prompt, params, first, stop)
            found[key] = {i: s.generation for i, s in stored.items()}
            for run in missing_runs(set(stored), first, stop):
                shapes.setdefault(run, []).append(key)
        was_stored = {key: set(gens) for key, gens in found.items()}

        new_usage = Usage()
        for (start, length), keys in shapes.items():
            out = self.backend.generate([unique[k] for k in keys],
                                        params.with_(n=length, seed=start))
            new_usage = new_usage + out.usage
            rows = []
            for key, gens in zip(keys, out.generations, strict=True):
                if len(gens) != length:
                    raise BackendError(f"{self.backend.name} returned {len(gens)} samples for "
                                       f"n={length}: the backend must return n samples")
                for j, g in enumerate(gens):
                    found[key][start + j] = g
                    # A failed sample is returned but not kept, so a rerun tries it again.
                    if g.finish_reason != "error":
                        rows.append(NewGeneration(self.model_sha256, unique[key], params,
                                                  start + j, g, extract_answer(g.text)))
            self.store.put_generations(rows)  # one transaction per call: a kill loses <= one

        cached = Usage()
        out_gens = []
        generated: set[str] = set()
        replayed = fresh = 0
        for p in prompts:
            key = prompt_json(p)
            gens = tuple(found[key][i] for i in range(first, stop))
            out_gens.append(gens)
            # Replayed: stored before this call, or a repeat of a prompt generated above.
            for i, g in zip(range(first, stop), gens, strict=True):
                if i in was_stored[key] or key in generated:
                    cached = cached + Usage.of(g.prompt_tokens, g.completion_tokens,
                                               self.params_count, 0.0, calls=0)
                    replayed += 1
                else:
                    fresh += 1
            generated.add(key)
        self._count_replayed(cached, replayed, fresh)
        return GenerateOutput(tuple(out_gens), new_usage), cached

    def generate_watched(self, prompt: Prompt, params: SamplingParams,
                         watch: Watch) -> GenerateOutput:
        """Samples with every token shown to ``watch`` (``ttscale.backends.streaming``):
        stored samples are replayed through it and cut where it aborts (``cached_usage``
        gets only the tokens up to the cut); missing ones are streamed by the wrapped
        backend when it can, and kept only when they ran to their end (a cut sample is not
        the sample its index names).

        Example:
            >>> import tempfile
            >>> from ttscale.backends.fake import FakeBackend
            >>> cb = CachedBackend(FakeBackend(responses=["a b c"]),
            ...                    Store.open(tempfile.mkdtemp(), {}), "sha")
            >>> _ = cb.generate(["q"], SamplingParams(n=1, logprobs=True))
            >>> out = cb.generate_watched("q", SamplingParams(n=2, logprobs=True),
            ...                           lambda i, t: t.token == " b")
            >>> [g.text for g in out.generations[0]], cb.cached_usage.completion_tokens
            (['a b', 'a b'], 2)
        """
        first, stop = params.seed, params.seed + params.n
        stored = self.store.get_generations(self.model_sha256, prompt, params, first, stop)
        # Stored samples play first, side by side as they streamed: they ran to their end
        # once, so a race (which stores only the samples that ended) sees the same ones end
        # first again and stops the missing ones at once, answering as it did.
        replayed = watch_generations([stored[i].generation for i in sorted(stored)],
                                     Renumbered(watch, [i - first for i in sorted(stored)]))
        found: dict[int, Generation] = dict(zip(sorted(stored), replayed, strict=True))
        new_usage = Usage()
        for start, length in missing_runs(set(stored), first, stop):
            asked = params.with_(n=length, seed=start)
            shifted = Renumbered(watch, list(range(start - first, start - first + length)))

            if can_stream(self.backend):
                out = self.backend.generate_watched(prompt, asked,  # type: ignore[attr-defined]
                                                    shifted)
                gens = list(out.generations[0])
            else:
                out = self.backend.generate([prompt], asked)
                gens = list(watch_generations(out.generations[0], shifted))
            new_usage = new_usage + out.usage
            whole = [(start + j, g) for j, g in enumerate(gens)
                     if g.finish_reason not in ("aborted", "error")]
            self.store.put_generations([NewGeneration(self.model_sha256, prompt, params, i, g,
                                                      extract_answer(g.text)) for i, g in whole])
            found.update({start + j: g for j, g in enumerate(gens)})
        self._count_replayed(usage_of(replayed, self.params_count, 0.0, 0), len(replayed),
                             params.n - len(replayed))
        return GenerateOutput((tuple(found[i] for i in range(first, stop)),), new_usage)


@dataclass(frozen=True)
class Renumbered:
    """A watch seen through other sample numbers: sample ``j`` here is ``index[j]`` to the
    wrapped watch, whose ``finished`` (if any) is passed on too.

    Example:
        >>> seen = []
        >>> w = Renumbered(lambda i, _t: seen.append(i) or False, [3, 5])
        >>> w(1, TokenLogprob("a", -0.1)), seen
        (False, [5])
    """

    watch: Watch
    index: list[int]

    def __call__(self, j: int, token: TokenLogprob) -> bool:
        return self.watch(self.index[j], token)

    def finished(self, j: int) -> None:
        done = getattr(self.watch, "finished", None)
        if done is not None:
            done(self.index[j])
