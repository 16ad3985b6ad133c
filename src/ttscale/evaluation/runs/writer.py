"""The run store's single writer: one thread commits what many requests returned, in batches.

Hundreds of requests in flight each finishing with a few samples would otherwise each take
the store's lock and commit a transaction of their own (an fsync-free WAL commit is cheap,
but hundreds a second of them, each behind a lock that every reader also takes, are not).
Here whoever has rows to store calls :meth:`StoreWriter.submit`, which queues them and
returns a future; the writer thread takes everything queued at that moment and commits it
as one transaction, in the order it was submitted (a question's samples before its result
rows), then resolves the futures. A caller that needs its rows committed (the generation ids
a verifier's scores point at) waits on its future.

Back-pressure: the queue holds at most ``max_pending`` submissions; ``submit`` blocks while
it is full, so a writer that falls behind slows the producers instead of growing memory.
Nothing is lost on an interruption: :meth:`close` commits what is queued before it returns,
and every batch is one transaction, so a killed process loses at most the batch in flight.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ttscale.evaluation.runs.store import NewGeneration, ResultRow, Store

MAX_BATCH = 2000  # submissions per transaction, at most: keeps one commit short


@dataclass
class _Job:
    generations: Sequence[NewGeneration]
    results: Sequence[ResultRow]
    trees: Sequence[tuple[str, str, Any]]
    future: Future[None] = field(default_factory=Future)


@dataclass
class WriterStats:
    """What the writer did: transactions, rows, and the seconds each commit took."""

    commits: int = 0
    generations: int = 0
    results: int = 0
    # the latest commits' durations (bounded: a long run commits many times)
    commit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


class StoreWriter:
    """Batched writes to one store from any number of threads or tasks.

    Example:
        >>> import tempfile
        >>> from ttscale.types import Usage
        >>> store = Store.open(tempfile.mkdtemp(), {})
        >>> with StoreWriter(store) as w:
        ...     done = w.submit(results=[ResultRow("eval", "q", "majority", 1, 0, "4", True,
        ...                                        Usage())])
        ...     done.result(timeout=10)
        >>> len(store.results()), w.stats.results
        (1, 1)
    """

    def __init__(self, store: Store, *, max_pending: int = 4096) -> None:
        self.store = store
        self.stats = WriterStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue(max_pending)
        self._failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ttscale-store-writer",
                                        daemon=True)
        self._thread.start()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def submit(self, generations: Sequence[NewGeneration] = (),
               results: Sequence[ResultRow] = (),
               trees: Sequence[tuple[str, str, Any]] = ()) -> Future[None]:
        """Queue rows for the next commit; the future is done once they are committed
        (or holds the error that stopped the commit)."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RuntimeError("the store writer is closed")
        job = _Job(generations, results, trees)
        self._queue.put(job)  # blocks while max_pending wait: back-pressure
        return job.future

    def close(self) -> None:
        """Commit everything queued, then stop the thread; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs = [first]
            while len(jobs) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._commit(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        gens = [g for j in jobs for g in j.generations]
        results = [r for j in jobs for r in j.results]
        trees = [t for j in jobs for t in j.trees]
        began = time.perf_counter()
        try:
            self.store.write_batch(gens, results, trees)
        except BaseException as exc:  # the store failed (disk full): every waiter hears it
            self._failure = exc
            for j in jobs:
                j.future.set_exception(exc)
            return
        self.stats.commit_seconds.append(time.perf_counter() - began)
        self.stats.commits += 1
        self.stats.generations += len(gens)
        self.stats.results += len(results)
        for j in jobs:
            j.future.set_result(None)
