"""Imported sample sets in a run store, and their replay into scaling curves.

An import is a run of its own: its settings name the source file, the synthetic model id
``import:<file stem>`` and the gold answer of every question (``golds``, which the store has no
table for). Each sample is a generation row: prompt = the question id, sample index = its
position, answer and completion tokens as imported.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.evaluation.replay.metrics import QuestionSamples
from ttscale.evaluation.runs.importers import ImportedQuestion
from ttscale.evaluation.runs.store import FILE_NAME, NewGeneration, Store
from ttscale.params import SamplingParams
from ttscale.types import Generation

KIND = "imported-samples"


def import_settings(questions: Sequence[ImportedQuestion], source: Path,
                    fmt: str) -> dict[str, Any]:
    """The settings of an import run: source, format, model id, golds and sample counts.

    Example:
        >>> q = [ImportedQuestion("0", "7", (("7", 10), (None, 4)))]
        >>> s = import_settings(q, Path("m.jsonl"), "boinf")
        >>> s["kind"], s["model"], s["golds"], s["samples"]
        ('imported-samples', 'import:m', {'0': '7'}, {'0': 2})
    """
    return {"kind": KIND, "source": str(source.resolve()), "format": fmt,
            "model": f"import:{source.stem}",
            "golds": {q.id: q.gold for q in questions},
            "samples": {q.id: len(q.samples) for q in questions}}


def store_imported(run_dir: str | Path, questions: Sequence[ImportedQuestion], source: Path,
                   fmt: str) -> tuple[int, int]:
    """Store the questions' samples in RUN_DIR's store; returns (questions, new samples).

    Example:
        >>> import tempfile
        >>> q = [ImportedQuestion("0", "7", (("7", 10), (None, 4)))]
        >>> d = tempfile.mkdtemp()
        >>> store_imported(d, q, Path("m.jsonl"), "boinf"), store_imported(d, q,
        ...     Path("m.jsonl"), "boinf")
        ((1, 2), (1, 0))
        >>> [(s.id, s.gold, s.samples) for s in load_run(d)]
        [('0', '7', (('7', 10, None), (None, 4, None)))]
    """
    settings = import_settings(questions, source, fmt)
    params = SamplingParams()
    rows = [NewGeneration(settings["model"], q.id, params, i,
                          Generation(answer or "", 0, tokens, "stop"), answer)
            for q in questions for i, (answer, tokens) in enumerate(q.samples)]
    with Store.open(run_dir, settings) as store:
        return len(questions), store.put_generations(rows)


def stored_settings(run_dir: str | Path) -> dict[str, Any]:
    """The settings of an existing run, read without changing the file.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> q = ImportedQuestion("0", "7", (("7", 10),))
        >>> _ = store_imported(d, [q], Path("m.jsonl"), "boinf")
        >>> stored_settings(d)["format"], stored_settings(d)["golds"]
        ('boinf', {'0': '7'})
    """
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no run store ({FILE_NAME}): run ttscale eval "
                          "import-samples FILE --out RUN_DIR first")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT settings FROM run WHERE id=1").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path} is not a readable ttscale run store ({exc}): give the "
                          "directory of an import-samples run") from exc
    if row is None:
        raise ConfigError(f"{path} has no run settings: give the directory of an "
                          "import-samples run")
    settings: dict[str, Any] = json.loads(row[0])
    return settings


def load_run(run_dir: str | Path) -> list[QuestionSamples]:
    """The questions of an import run with their samples, in sampling order.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> q = ImportedQuestion("0", "7", (("7", 10), ("3", 12), (None, 4)))
        >>> _ = store_imported(d, [q], Path("m.jsonl"), "boinf")
        >>> [(s.id, s.gold, s.samples) for s in load_run(d)]
        [('0', '7', (('7', 10, None), ('3', 12, None), (None, 4, None)))]
    """
    settings = stored_settings(run_dir)
    if settings.get("kind") != KIND or not isinstance(settings.get("golds"), dict):
        raise ConfigError(f"{run_dir} is not an import-samples run (it has no gold answers): "
                          "run ttscale eval import-samples FILE --out RUN_DIR first")
    params = SamplingParams()
    out = []
    with Store.open(run_dir, settings) as store:
        for qid, gold in settings["golds"].items():
            count = int(settings["samples"][qid])
            rows = store.get_generations(settings["model"], qid, params, 0, count)
            samples = tuple((rows[i].answer, rows[i].generation.completion_tokens, None)
                            for i in sorted(rows))
            out.append(QuestionSamples(qid, str(gold), samples))
    return out


def max_n(questions: Sequence[QuestionSamples]) -> int:
    """The most samples every question has (the largest n a replay can ask).

    Example:
        >>> a = QuestionSamples("a", "7", (("7", 10, None),) * 3)
        >>> max_n([a, QuestionSamples("b", "3", (("3", 5, None),) * 2)]), max_n([])
        (2, 0)
    """
    return min((len(q.samples) for q in questions), default=0)
