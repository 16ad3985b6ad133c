"""What the eval-run tests share: four small problems, a scripted sampler whose samples
cycle through three answers, a run opened on the fake backend, and the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ttscale
from ttscale.backends.fake import FakeBackend
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig, Harness, run_settings
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.store import Store

SRC = str(Path(ttscale.__file__).resolve().parents[1])
PROBLEMS = [Problem(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(4)]


def script(_prompt: object, i: int) -> str:
    # sample i answers 1, 2, 3, 1, 2, 3, ...: every question has a right answer somewhere
    return f"Step one.\n\nThe answer is \\boxed{{{i % 3 + 1}}}."


def open_run(tmp: Path, cfg: EvalConfig, fake: FakeBackend) -> tuple[Store, Harness]:
    settings = run_settings(cfg, model="fake", model_sha256="f" * 64, dataset="t",
                            split="test")
    store = Store.open(tmp, settings)
    return store, Harness(cfg, CachedBackend(fake, store, "f" * 64), store)


def run_ttscale(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "ttscale", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def questions_file(tmp_path: Path, count: int = 6) -> Path:
    f = tmp_path / "qs.jsonl"
    # the fake backend always answers 42: questions with gold 42 are right
    f.write_text("".join(json.dumps({"question": f"Question {i}?",
                                     "answer": "42" if i % 2 else str(i)}) + "\n"
                         for i in range(count)))
    return f


def eval_args(data: Path, out: Path, *extra: str, n: str = "1,2,4") -> list[str | Path]:
    return ["eval", "--dataset", data, "--backend", "fake", "--strategies", "majority",
            "--n", n, "--out", out, "--concurrency", "1", *extra]
