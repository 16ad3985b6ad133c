"""Sample sets produced elsewhere, read as questions with a gold answer and stored samples.

``boinf``: the JSONL of the Best-of-Infinity repository, one problem a line with
``problem_num``, ``gold_answer`` and ``all_answers`` (a list of ``[answer, completion_tokens]``
in sampling order; an empty or null answer means none was given).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.jsonl import text_lines

FORMATS = ("boinf",)


@dataclass(frozen=True)
class ImportedQuestion:
    """One problem: its id, gold answer, and samples as ``(answer or None, completion_tokens)``."""

    id: str
    gold: str
    samples: tuple[tuple[str | None, int], ...]


def _sample(entry: Any, where: str, i: int) -> tuple[str | None, int]:
    if not isinstance(entry, list | tuple) or len(entry) != 2:
        raise ConfigError(f"{where}: all_answers[{i}] is not an [answer, completion_tokens] "
                          "pair: fix or drop that line")
    answer, tokens = entry
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ConfigError(f"{where}: all_answers[{i}] has completion_tokens {tokens!r}, not a "
                          "non-negative integer: fix or drop that line")
    if answer is not None and not isinstance(answer, str | int | float):
        raise ConfigError(f"{where}: all_answers[{i}] has answer {answer!r}, not a string: "
                          "fix or drop that line")
    text = None if answer is None else str(answer).strip()
    return (text or None), tokens


def import_boinf(path: str | Path) -> list[ImportedQuestion]:
    """Read a boinf JSONL file; a bad line is a ``ConfigError`` naming its number and field.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "m.jsonl")
        >>> _ = open(f, "w").write('{"problem_num": 0, "gold_answer": "7", '
        ...                        '"all_answers": [["7", 120], ["", 80]]}\\n')
        >>> import_boinf(f)
        [ImportedQuestion(id='0', gold='7', samples=(('7', 120), (None, 80)))]
        >>> _ = open(f, "w").write('{"problem_num": 0, "all_answers": []}\\n')
        >>> import_boinf(f)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ...m.jsonl line 1 has no 'gold_answer' field: ...
    """
    path = Path(path)
    try:
        lines = list(text_lines(path, name=str(path)))
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}): give an existing "
                          "JSONL file") from exc
    out: list[ImportedQuestion] = []
    seen: set[str] = set()
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where} is not JSON ({exc.msg}): fix or drop that "
                              "line") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{where} is not a JSON object: fix or drop that line")
        for field in ("problem_num", "gold_answer", "all_answers"):
            if row.get(field) is None:
                raise ConfigError(f"{where} has no {field!r} field: every line needs "
                                  "problem_num, gold_answer and all_answers")
        if not isinstance(row["all_answers"], list):
            raise ConfigError(f"{where}: all_answers is not a list: fix or drop that line")
        qid = str(row["problem_num"])
        if qid in seen:
            raise ConfigError(f"{where} repeats problem_num {qid}: keep one line per problem")
        seen.add(qid)
        samples = tuple(_sample(e, where, i) for i, e in enumerate(row["all_answers"]))
        out.append(ImportedQuestion(qid, str(row["gold_answer"]).strip(), samples))
    if not out:
        raise ConfigError(f"{path} holds no problems: give a boinf JSONL file")
    return out
