"""The same evaluation with and without Ray: ``ttscale eval`` on GSM8K with the 135M model,
once plainly and once with ``--ray`` on a local cluster of this machine's CPUs; the stored
samples compared one by one, and the wall times side by side (the Ray run's includes
starting the cluster and loading the model in every worker).

    python bench/ray_vs_plain.py                       # 20 questions, n = 1,2,4
    python bench/ray_vs_plain.py --questions 40 --workers 2
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = ("SELECT prompt_hash, params_hash, sample_index, text, completion_tokens "
           "FROM generations ORDER BY prompt_hash, sample_index")


def run(out: Path, args: argparse.Namespace, *extra: str) -> float:
    cmd = [sys.executable, "-m", "ttscale", "eval", "--dataset", "gsm8k", "--limit",
           str(args.questions), "--n", args.n, "--model", args.model, "--max-tokens",
           str(args.max_tokens), "--out", str(out), "--json", *extra]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"ttscale eval failed: {proc.stderr.strip()[-600:]}")
    return time.perf_counter() - began


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--n", default="1,2,4")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="Ray actors (one CPU each)")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="questions in flight in the plain run")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ttscale-ray-bench-"))
    plain = run(root / "plain", args, "--concurrency", str(args.concurrency), "--threads",
                "2")
    ray = run(root / "ray", args, "--ray", "--ray-workers", str(args.workers), "--threads", "1")
    with sqlite3.connect(root / "plain" / "run.sqlite") as a, \
            sqlite3.connect(root / "ray" / "run.sqlite") as b:
        left, right = a.execute(SAMPLES).fetchall(), b.execute(SAMPLES).fetchall()
    same = sum(x == y for x, y in zip(left, right, strict=False))
    print(f"{args.questions} GSM8K questions, n = {args.n}, {args.model}, "
          f"max {args.max_tokens} tokens")
    print(f"{'run':<32} {'wall s':>8} {'samples':>8}")
    print(f"{'plain (--concurrency ' + str(args.concurrency) + ', 2 threads)':<32} "
          f"{plain:>8.1f} {len(left):>8}")
    print(f"{'--ray (' + str(args.workers) + ' workers x 1 thread)':<32} {ray:>8.1f} "
          f"{len(right):>8}")
    print(f"identical stored samples: {same} of {max(len(left), len(right))}; "
          f"wall time ray / plain: {ray / plain:.2f}")


if __name__ == "__main__":
    main()
