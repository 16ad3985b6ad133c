"""A run store as a text file, and back: to move a run between machines or keep it in git.

``export_run`` writes one JSON object per line: first the run's settings, then every row of
every table, in the order the rows were stored. A generation is named by its unique key
(model SHA-256, prompt hash, parameter hashes, sample index), never by its row id, so scores
follow their generation into any store. Appending to a run and exporting it again changes the
file mostly by added lines, which is what git stores cheaply.

``restore_run`` reads such a file into a run directory: a new one, or a run of the same
settings, whose rows are merged (a row already there is kept, as every store insert does). A
run generated on a GPU machine thus joins the one being analysed on a laptop.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.evaluation.runs.store import FILE_NAME, SCHEMA_VERSION, Store, canonical_json
from ttscale.files import output_file
from ttscale.jsonl import json_objects

FORMAT = "ttscale-run"
_WRITTEN_BY = "give a file written by ttscale eval export"
_KEY = ("model_sha256", "prompt_hash", "params_hash", "sample_index")
# Every column but the row id, per table, in the order rows are written back.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "questions": ("position", "id", "question", "gold", "meta"),
    "bindings": ("key", "value", "created"),
    "generations": (*_KEY, "prompt", "params", "text", "prompt_tokens", "completion_tokens",
                    "finish_reason", "logprobs", "token_logprobs", "answer", "created",
                    "hit_stop"),
    "scores": ("verifier", "step_scores", "score", "created", "usage"),
    "results": ("run", "question_id", "strategy", "n", "seed", "answer", "correct", "usage",
                "created"),
    "trees": ("question_id", "strategy", "tree", "created"),
    "verdicts": ("verifier", "key", "output", "created"),
}


def _lines(store: Store, logprobs: bool) -> Iterator[dict[str, Any]]:
    yield {"format": FORMAT, "schema_version": SCHEMA_VERSION, "settings": store.settings}
    for table, columns in _COLUMNS.items():
        if table == "scores":
            sql = ("SELECT " + ", ".join(f"g.{c}" for c in _KEY) + ", "
                   + ", ".join(f"s.{c}" for c in columns)
                   + " FROM scores s JOIN generations g ON g.id = s.generation_id"
                   " ORDER BY g.id, s.verifier")
            names = _KEY + columns
        else:
            order = {"questions": "position", "bindings": "key",
                     "verdicts": "created, verifier, key"}.get(table, "id")
            sql = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"
            names = columns
        for row in store.query(sql):
            out = dict(zip(names, row, strict=True))
            if table == "generations" and not logprobs:
                out["token_logprobs"] = None
            yield {"table": table, **out}


def export_run(run_dir: str | Path, file: str | Path, *, logprobs: bool = True) -> Counter[str]:
    """Write RUN_DIR's store to FILE as JSON lines; returns the rows written per table.
    ``logprobs=False`` leaves out each token's log-probabilities (most of a sample run's size;
    only the confidence-based strategies read them).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with Store.open(d, {"kind": "eval"}) as s:
        ...     _ = s.bind("verifier:x", "head a")
        >>> export_run(d, os.path.join(d, "run.jsonl"))
        Counter({'bindings': 1})
    """
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no run store ({FILE_NAME}): give the directory "
                          "of a ttscale run")
    counts: Counter[str] = Counter()
    target = output_file(file, "run.jsonl")
    partial = target.with_name(target.name + ".partial")
    # the store is opened with its own settings, so any run directory is accepted as it is
    with Store.open(run_dir, _stored_settings(path)) as store, \
            partial.open("w", encoding="utf-8") as out:
        for line in _lines(store, logprobs):
            if "table" in line:
                counts[line["table"]] += 1
            out.write(canonical_json(line) + "\n")
    partial.replace(target)  # a reader never sees half a file
    return counts


def _stored_settings(path: Path) -> dict[str, Any]:
    from ttscale.evaluation.runs.imports import stored_settings

    return stored_settings(path.parent)


def _read(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not file.is_file():
        raise ConfigError(f"no file at {file}: {_WRITTEN_BY}")
    yield from json_objects(file, name=str(file), fix=_WRITTEN_BY, shape=_WRITTEN_BY)


def restore_run(file: str | Path, run_dir: str | Path) -> Counter[str]:
    """Read an exported run into RUN_DIR (created, or merged into a run of the same
    settings); returns the rows that were new, per table.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with Store.open(d, {"kind": "eval"}) as s:
        ...     _ = s.bind("verifier:x", "head a")
        >>> f = os.path.join(d, "run.jsonl")
        >>> _ = export_run(d, f)
        >>> restore_run(f, os.path.join(d, "copy")), restore_run(f, os.path.join(d, "copy"))
        (Counter({'bindings': 1}), Counter())
    """
    file = Path(file)
    lines = _read(file)
    first = next(lines, None)
    if first is None or first[1].get("format") != FORMAT:
        raise ConfigError(f"{file} does not start with a ttscale run header: give a file "
                          "written by ttscale eval export")
    if first[1].get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"{file} holds store schema {first[1].get('schema_version')}, this "
                          f"ttscale reads schema {SCHEMA_VERSION}: restore it with the "
                          "ttscale version that wrote it")
    new: Counter[str] = Counter()
    with Store.open(run_dir, first[1]["settings"]) as store:
        batch: list[tuple[str, dict[str, Any]]] = []
        for number, line in lines:
            table = line.get("table")
            if table not in _COLUMNS:
                raise ConfigError(f"{file} line {number} names no known table ({table!r}): "
                                  "give a file written by ttscale eval export")
            batch.append((table, line))
            if len(batch) >= 1000:
                new.update(_write(store, batch, file))
                batch = []
        new.update(_write(store, batch, file))
    return +new


def _write(store: Store, batch: list[tuple[str, dict[str, Any]]], file: Path) -> Counter[str]:
    """One transaction for a batch of lines; a score's generation must be stored already
    (the export writes generations first)."""
    new: Counter[str] = Counter()
    with store.transaction() as conn:
        for table, line in batch:
            columns = _COLUMNS[table]
            try:
                values = [line[c] for c in columns]
            except KeyError as exc:
                raise ConfigError(f"{file}: a {table} row has no {exc.args[0]!r}: give a file "
                                  "written by ttscale eval export") from exc
            if table == "scores":
                found = conn.execute(
                    "SELECT id FROM generations WHERE " + " AND ".join(f"{c}=?" for c in _KEY),
                    [line.get(c) for c in _KEY]).fetchone()
                if found is None:
                    raise ConfigError(f"{file}: a score names a generation the file does not "
                                      "hold: give a complete export")
                columns, values = ("generation_id", *columns), [found[0], *values]
            elif table == "questions":
                # a question already stored keeps its place; a new one goes after the others
                if conn.execute("SELECT 1 FROM questions WHERE id=?",
                                (line["id"],)).fetchone():
                    continue
                values[0] = conn.execute(
                    "SELECT COALESCE(MAX(position), -1) + 1 FROM questions").fetchone()[0]
            elif table == "trees" and _has_tree(conn, line):
                continue
            cur = conn.execute(
                f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})", values)
            new[table] += max(cur.rowcount, 0)
    return new


def _has_tree(conn: Any, line: dict[str, Any]) -> bool:
    """Whether the tree is stored already: trees have no unique key of their own, and the
    same question, strategy and tree is the same row."""
    return conn.execute("SELECT 1 FROM trees WHERE question_id=? AND strategy=? AND tree=?",
                        (line["question_id"], line["strategy"], line["tree"])).fetchone() \
        is not None


def rows_of(store: Store) -> list[dict[str, Any]]:
    """Every row of ``store`` as the export writes it (settings excepted): what a Ray worker
    sends back to the driver, which alone writes the run store.

    Example:
        >>> import tempfile
        >>> with Store.open(tempfile.mkdtemp(), {"kind": "eval"}) as s:
        ...     _ = s.bind("verifier:x", "head a")
        ...     [r["table"] for r in rows_of(s)]
        ['bindings']
    """
    return [line for line in _lines(store, True) if "table" in line]


def merge_rows(store: Store, rows: list[dict[str, Any]]) -> Counter[str]:
    """Merge rows from :func:`rows_of` into ``store`` in one transaction, by their unique
    keys (a row already there is kept); the rows that were new, per table.

    Example:
        >>> import tempfile
        >>> with Store.open(tempfile.mkdtemp(), {"kind": "eval"}) as worker:
        ...     _ = worker.bind("verifier:x", "head a")
        ...     rows = rows_of(worker)
        >>> with Store.open(tempfile.mkdtemp(), {"kind": "eval"}) as driver:
        ...     merge_rows(driver, rows), merge_rows(driver, rows)  # the second time: nothing new
        (Counter({'bindings': 1}), Counter())
    """
    return +_write(store, [(r["table"], r) for r in rows], Path("the rows merged"))


def question_rows(store: Store, question_id: str, question: str) -> list[dict[str, Any]]:
    """What ``store`` holds of one question: the question, the bindings, the generations
    whose prompt holds its text (its samples, a search's partial answers) with their
    scores, its result rows and trees. Seeds a worker's private store, so a resumed question
    continues where it stopped.

    Example:
        >>> import tempfile
        >>> from ttscale.evaluation.runs.store import QuestionRow
        >>> with Store.open(tempfile.mkdtemp(), {"kind": "eval"}) as s:
        ...     _ = s.put_questions([QuestionRow("q0", "1+1?", "2"), QuestionRow("q1", "3?", "3")])
        ...     [r["id"] for r in question_rows(s, "q1", "3?")]
        ['q1']
    """
    # the text as it appears inside the stored prompt's JSON
    inside = json.dumps(question.strip(), ensure_ascii=False)[1:-1]
    gen = ", ".join(f"g.{c}" for c in _COLUMNS["generations"])
    score = ", ".join(f"g.{c}" for c in _KEY) + ", " + ", ".join(
        f"s.{c}" for c in _COLUMNS["scores"])
    queries = (
        ("questions", f"SELECT {', '.join(_COLUMNS['questions'])} FROM questions WHERE id=?",
         (question_id,), _COLUMNS["questions"]),
        ("bindings", f"SELECT {', '.join(_COLUMNS['bindings'])} FROM bindings", (),
         _COLUMNS["bindings"]),
        ("generations", f"SELECT {gen} FROM generations g WHERE instr(g.prompt, ?) > 0 "
         "ORDER BY g.id", (inside,), _COLUMNS["generations"]),
        ("scores", f"SELECT {score} FROM scores s JOIN generations g ON g.id = "
         "s.generation_id WHERE instr(g.prompt, ?) > 0 ORDER BY g.id", (inside,),
         _KEY + _COLUMNS["scores"]),
        ("results", f"SELECT {', '.join(_COLUMNS['results'])} FROM results WHERE "
         "question_id=? ORDER BY id", (question_id,), _COLUMNS["results"]),
        ("trees", f"SELECT {', '.join(_COLUMNS['trees'])} FROM trees WHERE question_id=? "
         "ORDER BY id", (question_id,), _COLUMNS["trees"]),
    )
    return [{"table": table, **dict(zip(names, row, strict=True))}
            for table, sql, args, names in queries for row in store.query(sql, args)]
