"""Replay check on the shared AIME 2024 sample sets: majority@80 replayed from the store.

Each ``shared/samples/aime2024/<model>.jsonl`` is imported into a temporary run (as
``ttscale eval import-samples`` does) and replayed at N=80; the replayed accuracy must equal
the file's majority@80 accuracy. Two file figures are shown: ``file`` is the file's own
``majority_answer`` against ``gold_answer``, where an empty answer (no answer given) is a
class that can win the vote; ``file*`` recounts ``all_answers`` by string with empty answers
not voting, ties to the earliest sample, which is ttscale's convention (``group_answers``
leaves ``None`` out). The check is replay == ``file*``; ``empty wins`` counts the problems
where the file's majority is the empty answer, which is where ``file`` differs.

    python bench/replay_aime.py [--dir ../shared/samples/aime2024]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ttscale.evaluation.replay.metrics import curve
from ttscale.evaluation.runs.importers import import_boinf
from ttscale.evaluation.runs.imports import load_run, store_imported

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples" / "aime2024"


def file_majority(path: Path) -> tuple[float, float, int]:
    """The file's majority accuracy as stored, recounted without empty answers, and how many
    problems the empty answer wins in the file."""
    hits, recount, empty = 0, 0, 0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        gold = str(row["gold_answer"]).strip()
        hits += str(row["majority_answer"]).strip() == gold
        empty += str(row["majority_answer"]).strip() == ""
        answers = [str(a).strip() for a, _ in row["all_answers"] if a not in (None, "")]
        counts = Counter(answers)  # insertion order = first sample: ties to the earliest
        if counts:
            best = max(counts.values())
            recount += next(a for a, c in counts.items() if c == best) == gold
    return hits / len(rows), recount / len(rows), empty


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--n", type=int, default=80)
    args = ap.parse_args()
    files = sorted(args.dir.glob("*.jsonl"))
    if not files:
        print(f"no .jsonl files in {args.dir}", file=sys.stderr)
        return 2
    bad = 0
    print(f"{'model':34} {'file':>7} {'file*':>7} {'replay':>7} {'empty wins':>10} "
          f"{'import s':>9} {'replay s':>9}  replay == file*")
    for path in files:
        stored, expected, empty = file_majority(path)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            store_imported(tmp, import_boinf(path), path, "boinf")
            t1 = time.perf_counter()
            (point,) = curve(load_run(tmp), [args.n], "majority", resamples=1)
            t2 = time.perf_counter()
        ok = point.accuracy == expected
        bad += not ok
        print(f"{path.stem:34} {stored:7.4f} {expected:7.4f} {point.accuracy:7.4f} "
              f"{empty:10d} {t1 - t0:9.3f} {t2 - t1:9.3f}  {'yes' if ok else 'NO'}")
    print(f"{len(files) - bad}/{len(files)} models: replayed majority@{args.n} equals the "
          "file's recount exactly")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
