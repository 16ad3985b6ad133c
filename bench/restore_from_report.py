"""Rebuild a run's samples from its report.html, whose embedded data holds every trace.

A report carries each question and each sample's text, answer, token counts and finish
reason, but not the run's settings: ``--settings-from`` names a run made with the same
``ttscale eval`` options (model, dataset, split, temperature, max tokens), whose settings the
rebuilt run takes. Each sample is stored under the key the harness would have used, so a
``ttscale eval`` of those settings on the rebuilt run replays every sample without generating.
Log-probabilities and verifier scores are not in a report and are not restored.

    python bench/restore_from_report.py docs/gsm8k-test-0-39-report.html \
        --settings-from runs/gsm8k-search --out runs/gsm8k-test-0-39
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ttscale.answers import solve_prompt
from ttscale.evaluation.records import SEED_STRIDE, sampling_of
from ttscale.evaluation.runs import stored_settings
from ttscale.store import NewGeneration, QuestionRow, Store
from ttscale.types import Generation

DATA = re.compile(r'<script type="application/json" id="data">(.*?)</script>', re.S)


def report_data(path: Path) -> dict[str, Any]:
    """The JSON a report embeds (its questions with their traces)."""
    found = DATA.search(path.read_text(encoding="utf-8"))
    if found is None:
        raise SystemExit(f"{path} holds no embedded run data: give a report.html written by "
                         "ttscale eval or ttscale report")
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def restore(report: Path, settings: dict[str, Any], out: Path) -> tuple[int, int]:
    """Store the report's questions and samples in OUT; returns (questions, new samples)."""
    data = report_data(report)
    params = sampling_of(settings)
    sha = str(settings["model_sha256"])
    questions, rows = [], []
    for q in data["questions"]:
        questions.append(QuestionRow(q["id"], q["question"], q["gold"], q.get("meta") or {}))
        prompt = solve_prompt(q["question"], settings["system_prompt"])
        for t in q["traces"]:
            gen = Generation(t["text"], t["prompt_tokens"], t["completion_tokens"], t["finish"])
            rows.append(NewGeneration(sha, prompt, params,
                                      t["seed"] * SEED_STRIDE + t["index"], gen, t["answer"]))
    with Store.open(out, settings) as store:
        store.put_questions(questions)
        return len(questions), store.put_generations(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--settings-from", type=Path, required=True,
                    help="a run made with the same ttscale eval options as the report's")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    settings = stored_settings(args.settings_from)
    count, new = restore(args.report, settings, args.out)
    print(f"{count} questions, {new} new samples stored in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
