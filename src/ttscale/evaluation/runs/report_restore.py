"""A run's samples rebuilt from its report.html, whose embedded data holds every sample.

A report carries each question and each sample's text, answer, token counts and finish
reason, and the run's settings (reports written before they embedded them need the settings
of a run made with the same ``ttscale eval`` options). Each sample is stored under the key the
harness would have used, so ``ttscale eval`` with those settings replays it instead of
generating it again. Log-probabilities, verifier scores, results and trees are not rebuilt.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ttscale.answers import solve_prompt
from ttscale.errors import ConfigError
from ttscale.evaluation.runs.records import SEED_STRIDE, sampling_of
from ttscale.evaluation.runs.store import NewGeneration, QuestionRow, Store
from ttscale.types import Generation

_DATA = re.compile(r'<script type="application/json" id="data">(.*?)</script>', re.S)


def report_data(path: Path) -> dict[str, Any]:
    """The JSON a report embeds: its questions with their samples, and its settings.

    Example:
        >>> import tempfile
        >>> from ttscale.evaluation.api import evaluate
        >>> run = evaluate("svamp", tempfile.mkdtemp(), ids="0-1", ns=[1], backend="fake")
        >>> data = report_data(run.run_dir / "report.html")
        >>> sorted(data), len(data["questions"]), data["settings"]["dataset"]
        (['questions', 'settings'], 2, 'svamp')
    """
    try:
        page = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}): give a report.html written "
                          "by ttscale eval or ttscale report") from exc
    found = _DATA.search(page)
    if found is None:
        raise ConfigError(f"{path} holds no embedded run data: give a report.html written by "
                          "ttscale eval or ttscale report")
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def restore_report(report: str | Path, run_dir: str | Path,
                   settings: Mapping[str, Any] | None = None) -> Counter[str]:
    """Store the report's questions and samples in RUN_DIR, under ``settings`` (default: the
    ones the report embeds); returns the rows that were new, per table.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> page = os.path.join(d, "report.html")
        >>> _ = open(page, "w").write("<html></html>")
        >>> restore_report(page, d)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ttscale.errors.ConfigError: ...report.html holds no embedded run data: ...
    """
    report = Path(report)
    data = report_data(report)
    chosen = dict(settings or data.get("settings") or {})
    if chosen.get("kind") != "eval":
        raise ConfigError(f"{report} embeds no ttscale eval settings (it predates them): give "
                          "--settings-from RUN, a run made with the same ttscale eval options")
    params = sampling_of(chosen)
    sha = str(chosen["model_sha256"])
    questions: list[QuestionRow] = []
    rows: list[NewGeneration] = []
    for q in data.get("questions", []):
        questions.append(QuestionRow(q["id"], q["question"], q["gold"], q.get("meta") or {}))
        prompt = solve_prompt(q["question"], chosen["system_prompt"])
        rows.extend(NewGeneration(sha, prompt, params, t["seed"] * SEED_STRIDE + t["index"],
                                  Generation(t["text"], t["prompt_tokens"],
                                             t["completion_tokens"], t["finish"]), t["answer"])
                    for t in q["traces"])
    with Store.open(run_dir, chosen) as store:
        new = Counter({"questions": store.put_questions(questions),
                       "generations": store.put_generations(rows)})
    return +new
