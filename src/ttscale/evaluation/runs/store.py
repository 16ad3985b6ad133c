"""The run store: one SQLite file per run directory (``RUN_DIR/run.sqlite``, WAL mode).

It holds the settings that define the run, every generation keyed by what produced it (model,
prompt, sampling parameters, sample index), verifier scores, per-question results and free-form
search trees. Each batch is one committed transaction, and inserts are ``OR IGNORE`` on the
unique keys, so a process killed at any point loses at most the batch in flight and a rerun
never duplicates a row.

A sample is defined by its own seed: sample ``i`` of a request with seed ``s`` is sample index
``s + i`` (every backend seeds it so), which is why ``n`` and ``seed`` are not part of the
stored parameters.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ttscale.backends.packed import unpack
from ttscale.errors import ConfigError
from ttscale.evaluation.runs.rows import (
    PUT_GENERATION,
    PUT_RESULT,
    NewGeneration,
    QuestionRow,
    ResultRow,
    SampleBrief,
    ScoreRow,
    StoredGeneration,
    TreeRow,
    canonical_json,
    generation_values,
    params_json,
    prompt_from_json,
    prompt_json,
    result_values,
    sha,
)
from ttscale.files import output_dir
from ttscale.params import SamplingParams
from ttscale.types import FinishReason, Generation, Prompt, Usage

# The rows live in runs.rows; these names stay importable from here.
__all__ = ["FILE_NAME", "SCHEMA_VERSION", "TABLES", "NewGeneration", "QuestionRow", "ResultRow",
           "SampleBrief", "ScoreRow", "Store", "StoredGeneration", "TreeRow", "canonical_json",
           "generation_values", "params_json", "prompt_from_json", "prompt_json"]

FILE_NAME = "run.sqlite"
SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = (
    """CREATE TABLE run (id INTEGER PRIMARY KEY CHECK (id = 1),
        schema_version INTEGER NOT NULL, settings TEXT NOT NULL, created REAL NOT NULL)""",
    """CREATE TABLE generations (id INTEGER PRIMARY KEY,
        model_sha256 TEXT NOT NULL, prompt_hash TEXT NOT NULL, params_hash TEXT NOT NULL,
        sample_index INTEGER NOT NULL, prompt TEXT NOT NULL, params TEXT NOT NULL,
        text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        finish_reason TEXT NOT NULL, logprobs TEXT, token_logprobs TEXT, answer TEXT,
        created REAL NOT NULL,
        UNIQUE (model_sha256, prompt_hash, params_hash, sample_index))""",
    """CREATE TABLE scores (generation_id INTEGER NOT NULL REFERENCES generations(id),
        verifier TEXT NOT NULL, step_scores TEXT NOT NULL, score REAL, created REAL NOT NULL,
        usage TEXT, PRIMARY KEY (generation_id, verifier))""",
    """CREATE TABLE results (id INTEGER PRIMARY KEY, run TEXT NOT NULL,
        question_id TEXT NOT NULL, strategy TEXT NOT NULL, n INTEGER NOT NULL,
        seed INTEGER NOT NULL, answer TEXT, correct INTEGER, usage TEXT NOT NULL,
        created REAL NOT NULL, UNIQUE (run, question_id, strategy, n, seed))""",
    """CREATE TABLE trees (id INTEGER PRIMARY KEY, question_id TEXT NOT NULL,
        strategy TEXT NOT NULL, tree TEXT NOT NULL, created REAL NOT NULL)""",
)
# Added after the first release: created on open when missing, so older stores still open.
_LATER = (
    """CREATE TABLE IF NOT EXISTS questions (position INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE, question TEXT NOT NULL, gold TEXT NOT NULL,
        meta TEXT NOT NULL)""",
    # What a name used in the run stands for (a verifier name: the head behind its scores),
    # so a later invocation cannot mix another meaning into the same rows.
    """CREATE TABLE IF NOT EXISTS bindings (key TEXT PRIMARY KEY, value TEXT NOT NULL,
        created REAL NOT NULL)""",
    # A search's verifier calls (the question and the partial answers scored, hashed, with
    # what came back), so a question resumed after a kill replays its search without paying
    # the verifier again, and takes the same path.
    """CREATE TABLE IF NOT EXISTS verdicts (verifier TEXT NOT NULL, key TEXT NOT NULL,
        output TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (verifier, key))""",
)
# logprobs holds a summary (tokens, sum, mean, min); token_logprobs the full list, kept so a
# replayed logprob request (a self-judge verdict) equals the original.
TABLES = ("run", "generations", "scores", "results", "trees", "questions", "bindings",
          "verdicts")


class Store:
    """The SQLite store of one run directory. Open it with ``Store.open``; safe across threads.

    Example:
        >>> import tempfile
        >>> run_dir = tempfile.mkdtemp()
        >>> with Store.open(run_dir, {"model": "m", "n": [1, 4]}) as s:
        ...     s.settings["n"]
        [1, 4]
        >>> Store.open(run_dir, {"model": "m", "n": [1, 8]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ... different n (stored [1,4], asked [1,8]): use a new ...
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, settings: dict[str, Any]) -> None:
        self._conn = conn
        self.path = path
        self.settings = settings
        # One connection shared by threads: sqlite3 objects are not safe to use concurrently.
        self._lock = threading.RLock()

    @classmethod
    def open(cls, run_dir: str | Path, settings: Mapping[str, Any]) -> Store:
        """Create the run's store, or reopen it when its stored settings equal ``settings``.

        A different setting, or a file that is not a ttscale store, is a ``ConfigError``; an
        existing file is never deleted or changed before it has been recognised.
        """
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is a file, not a run directory: use a new --out name")
        output_dir(run_dir)
        path = run_dir / FILE_NAME
        asked = json.loads(canonical_json(dict(settings)))
        _check_header(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        try:
            stored = _init_or_read(conn, path, asked)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"{path} is not a readable ttscale run store ({exc}): move it "
                              "away or use a new --out name") from exc
        except BaseException:
            conn.close()
            raise
        diffs = [k for k in sorted(set(stored) | set(asked)) if stored.get(k) != asked.get(k)]
        if diffs:
            conn.close()
            told = " and ".join(f"{k} (stored {_show(stored.get(k))}, asked "
                                f"{_show(asked.get(k))})" for k in diffs)
            raise ConfigError(f"{run_dir} holds a run with different {told}: "
                              "use a new --out name")
        # WAL only now that the file is known to be ours: readers never block the writer, and
        # NORMAL sync keeps every committed batch through a process kill (not a power cut).
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return cls(conn, path, stored)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction on the store's connection, for bulk copies (the archive)."""
        return self._transaction()

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read-only SQL query."""
        return self._query(sql, args)

    def _insert(self, sql: str, values: Sequence[tuple[Any, ...]]) -> int:
        """One batch, one transaction; ``INSERT OR IGNORE`` keeps the first row of a key.
        Returns how many rows were new."""
        with self._transaction() as conn:
            return max(conn.executemany(sql, values).rowcount, 0)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def journal_mode(self) -> str:
        return str(self._query("PRAGMA journal_mode")[0][0])

    def count(self, table: str) -> int:
        """Rows in one of ``TABLES``."""
        if table not in TABLES:
            raise ConfigError(f"unknown table {table!r}: choose one of {', '.join(TABLES)}")
        return int(self._query(f"SELECT COUNT(*) FROM {table}")[0][0])

    def put_generations(self, rows: Sequence[NewGeneration]) -> int:
        """Store a batch in one transaction; rows whose key is already stored are skipped.
        Returns how many were new."""
        return self._insert(PUT_GENERATION, generation_values(rows))

    def write_batch(self, generations: Sequence[NewGeneration] = (),
                    results: Sequence[ResultRow] = (),
                    trees: Sequence[tuple[str, str, Any]] = ()) -> int:
        """Generations, result rows and trees (question id, label, tree) in one
        transaction, in that order: the store's single writer commits what many requests
        returned at once (``runs.writer``). Returns how many generations were new.

        Example:
            >>> import tempfile
            >>> s = Store.open(tempfile.mkdtemp(), {})
            >>> s.write_batch(results=[ResultRow("eval", "q0", "majority", 1, 0, "4", True,
            ...                                  Usage())]), len(s.results())
            (0, 1)
        """
        now = time.time()
        with self._transaction() as conn:
            new = max(conn.executemany(PUT_GENERATION, generation_values(generations, now)
                                       ).rowcount, 0) if generations else 0
            if results:
                conn.executemany(PUT_RESULT, result_values(results, now))
            for question_id, label, tree in trees:
                conn.execute("INSERT INTO trees (question_id, strategy, tree, created) "
                             "VALUES (?,?,?,?)", (question_id, label, canonical_json(tree), now))
        return new

    def sample_briefs(self, model_sha256: str, prompt: Prompt, params: SamplingParams,
                      first: int, stop: int) -> dict[int, SampleBrief]:
        """What a vote needs of the stored samples with index in ``[first, stop)`` (answer,
        token counts), without reading their text and log-probabilities back."""
        rows = self._query(
            "SELECT id, sample_index, answer, prompt_tokens, completion_tokens, finish_reason "
            "FROM generations WHERE model_sha256=? AND prompt_hash=? AND params_hash=? AND "
            "sample_index>=? AND sample_index<?",
            (model_sha256, sha(prompt_json(prompt)), sha(params_json(params)), first, stop))
        return {i: SampleBrief(gid, i, a, p, c, f) for gid, i, a, p, c, f in rows}

    def get_generations(self, model_sha256: str, prompt: Prompt, params: SamplingParams,
                        first: int, stop: int, *,
                        logprobs: bool = True) -> dict[int, StoredGeneration]:
        """Stored samples with index in ``[first, stop)``, by sample index; ``logprobs``
        False leaves their token log-probabilities unread (``logprobs`` None), which is most
        of a sample's bytes and of the time to read it back."""
        column = "token_logprobs" if logprobs else "NULL"
        rows = self._query(
            "SELECT id, sample_index, text, prompt_tokens, completion_tokens, finish_reason, "
            f"{column}, answer, hit_stop FROM generations WHERE model_sha256=? AND "
            "prompt_hash=? "
            "AND params_hash=? AND sample_index>=? AND sample_index<?",
            (model_sha256, sha(prompt_json(prompt)), sha(params_json(params)), first, stop))
        out = {}
        for gid, index, text, p_tok, c_tok, finish, tokens, answer, hit in rows:
            lps = None if tokens is None else unpack(tokens)
            reason: FinishReason = finish
            gen = Generation(text, p_tok, c_tok, reason, lps, index,
                             None if hit is None else bool(hit))
            out[index] = StoredGeneration(gid, index, gen, answer)
        return out

    def put_scores(self, rows: Sequence[ScoreRow], *, replace: bool = False) -> int:
        """Store verifier scores; a generation already scored by the same verifier keeps its
        first scores unless ``replace`` (a retrained head re-scoring a run)."""
        now = time.time()
        verb = "REPLACE" if replace else "IGNORE"
        return self._insert(
            f"INSERT OR {verb} INTO scores (generation_id, verifier, step_scores, score, created, "
            "usage) VALUES (?,?,?,?,?,?)",
            [(r.generation_id, r.verifier, canonical_json(list(r.step_scores)), r.score, now,
              canonical_json(r.usage)) for r in rows])

    def get_scores(self, verifier: str, generation_ids: Sequence[int]) -> dict[int, ScoreRow]:
        out = {}
        for gid in generation_ids:
            for steps, score, usage in self._query(
                    "SELECT step_scores, score, usage FROM scores WHERE generation_id=? AND "
                    "verifier=?", (gid, verifier)):
                used = Usage() if usage is None else Usage(**json.loads(usage))
                out[gid] = ScoreRow(gid, verifier, tuple(json.loads(steps)), score, used)
        return out

    def verifiers(self) -> list[str]:
        """Names of the verifiers that scored anything in this store, sorted."""
        return [r[0] for r in self._query("SELECT DISTINCT verifier FROM scores ORDER BY 1")]

    def bind(self, key: str, value: str, *, replace: bool = False) -> str:
        """Record ``value`` for ``key`` unless one is recorded already (or ``replace``);
        returns the value now recorded, for the caller to compare with its own.

        Example:
            >>> import tempfile
            >>> s = Store.open(tempfile.mkdtemp(), {"kind": "eval"})
            >>> s.bind("verifier:sprm", "head a"), s.bind("verifier:sprm", "head b")
            ('head a', 'head a')
            >>> s.bind("verifier:sprm", "head b", replace=True), s.bound("verifier:sprm")
            ('head b', 'head b')
        """
        verb = "REPLACE" if replace else "IGNORE"
        with self._transaction() as conn:
            conn.execute(f"INSERT OR {verb} INTO bindings (key, value, created) VALUES (?,?,?)",
                         (key, value, time.time()))
            row = conn.execute("SELECT value FROM bindings WHERE key=?", (key,)).fetchone()
        return str(row[0])

    def bound(self, key: str) -> str | None:
        """The value recorded for ``key`` by :meth:`bind`, or ``None``."""
        rows = self._query("SELECT value FROM bindings WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def put_questions(self, rows: Sequence[QuestionRow]) -> int:
        """Record the run's questions in order; a question already stored keeps its place."""
        with self._lock:
            start = int(self._query("SELECT COALESCE(MAX(position), -1) FROM questions")[0][0])
        return self._insert(
            "INSERT OR IGNORE INTO questions (position, id, question, gold, meta) "
            "VALUES (?,?,?,?,?)",
            [(start + 1 + i, r.id, r.question, r.gold, canonical_json(dict(r.meta)))
             for i, r in enumerate(rows)])

    def questions(self) -> list[QuestionRow]:
        """The run's questions in the order they were first recorded."""
        return [QuestionRow(i, q, g, json.loads(m)) for i, q, g, m in self._query(
            "SELECT id, question, gold, meta FROM questions ORDER BY position")]

    def put_results(self, rows: Sequence[ResultRow]) -> int:
        return self._insert(PUT_RESULT, result_values(rows, time.time()))

    def results(self, run: str | None = None) -> list[ResultRow]:
        """Result rows in the order they were written, of one ``run`` label or all."""
        sql = ("SELECT run, question_id, strategy, n, seed, answer, correct, usage FROM results"
               + (" WHERE run=?" if run is not None else "") + " ORDER BY id")
        return [ResultRow(r, q, s, n, seed, a, None if c is None else bool(c),
                          Usage(**json.loads(u)))
                for r, q, s, n, seed, a, c, u in self._query(sql, () if run is None else (run,))]

    def put_tree(self, question_id: str, strategy: str, tree: Any) -> int:
        """Store a JSON-ready search tree; returns its id."""
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO trees (question_id, strategy, tree, created) VALUES (?,?,?,?)",
                (question_id, strategy, canonical_json(tree), time.time()))
            return int(cur.lastrowid or 0)

    def put_verdict(self, verifier: str, key: str, output: Any) -> int:
        """Store one verifier call's JSON-ready ``output`` under (``verifier``, ``key``);
        returns 1 when it was new (the first call stored under a key is kept)."""
        return self._insert("INSERT OR IGNORE INTO verdicts (verifier, key, output, created) "
                            "VALUES (?,?,?,?)",
                            [(verifier, key, canonical_json(output), time.time())])

    def get_verdict(self, verifier: str, key: str) -> Any:
        """The output stored by ``put_verdict``, or None.

        Example:
            >>> import tempfile
            >>> s = Store.open(tempfile.mkdtemp(), {})
            >>> s.put_verdict("judge", "k1", {"steps": [[0.5]]}), s.put_verdict("judge", "k1", {})
            (1, 0)
            >>> s.get_verdict("judge", "k1"), s.get_verdict("other", "k1")
            ({'steps': [[0.5]]}, None)
        """
        rows = self._query("SELECT output FROM verdicts WHERE verifier=? AND key=?",
                           (verifier, key))
        return json.loads(rows[0][0]) if rows else None

    def trees(self, question_id: str | None = None) -> list[TreeRow]:
        """Stored trees in the order they were written, of one question or all."""
        sql = ("SELECT id, question_id, strategy, tree FROM trees"
               + (" WHERE question_id=?" if question_id is not None else "") + " ORDER BY id")
        rows = self._query(sql, () if question_id is None else (question_id,))
        return [TreeRow(i, q, s, json.loads(t)) for i, q, s, t in rows]


def _show(value: Any) -> str:
    return "none" if value is None else canonical_json(value)


def _check_header(path: Path) -> None:
    # Refuse a foreign file before sqlite touches it: sqlite may write to what it opens.
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise ConfigError(f"{path} is not an SQLite file, so not a ttscale run store: move it "
                          "away or use a new --out name")


def _init_or_read(conn: sqlite3.Connection, path: Path, asked: dict[str, Any]) -> dict[str, Any]:
    """The stored settings, creating the schema (with ``asked``) in a fresh file."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not names:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it between the check and the lock.
            again = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'")
            if again.fetchone()[0] == 0:
                for statement in _SCHEMA + _LATER:
                    conn.execute(statement)
                conn.execute("INSERT INTO run (id, schema_version, settings, created) "
                             "VALUES (1, ?, ?, ?)",
                             (SCHEMA_VERSION, canonical_json(asked), time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    missing = [t for t in TABLES if t not in names
               and t not in ("questions", "bindings", "verdicts")]
    if missing:
        raise ConfigError(f"{path} is an SQLite file without the ttscale tables "
                          f"{', '.join(missing)}: move it away or use a new --out name")
    row = conn.execute("SELECT schema_version, settings FROM run WHERE id=1").fetchone()
    if row is None:
        raise ConfigError(f"{path} has no run settings, so it is not a complete ttscale run "
                          "store: move it away or use a new --out name")
    if row[0] != SCHEMA_VERSION:
        raise ConfigError(f"{path} was written with store schema {row[0]}, this ttscale reads "
                          f"schema {SCHEMA_VERSION}: use a new --out name")
    stored: dict[str, Any] = json.loads(row[1])
    _upgrade(conn)
    return stored


def _upgrade(conn: sqlite3.Connection) -> None:
    """Add what later versions store to an older file; nothing stored is changed."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(scores)")}
    if "usage" not in columns:
        conn.execute("ALTER TABLE scores ADD COLUMN usage TEXT")
    # whether a stop string ended a sample (NULL: unknown), which step-level search reads
    if "hit_stop" not in {r[1] for r in conn.execute("PRAGMA table_info(generations)")}:
        conn.execute("ALTER TABLE generations ADD COLUMN hit_stop INTEGER")
    for statement in _LATER:
        conn.execute(statement)
