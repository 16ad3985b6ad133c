"""The SPRM feature cache of a run, in a real SQLite run store with a stand-in extractor:
resumable, recording the dtype the model ran in, and never mixing features of two dtypes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import ttscale
from ttscale import models
from ttscale.backends.fake import FakeBackend
from ttscale.errors import ConfigError
from ttscale.evaluation.datasets import Problem
from ttscale.evaluation.harness import EvalConfig, Harness, run_settings
from ttscale.evaluation.runs.cache import CachedBackend
from ttscale.evaluation.runs.store import Store
from ttscale.evaluation.sprm import collect_features, features_dir, features_meta
from ttscale.verifiers.sprm.features import TraceFeatures

SRC = str(Path(ttscale.__file__).resolve().parents[1])
PROBLEMS = [Problem(f"q{i}", f"What is {i} + 1?", str(i + 1)) for i in range(2)]


class Tokenizer:
    def apply_chat_template(self, messages: list[dict[str, str]], *, tokenize: bool,
                            add_generation_prompt: bool) -> str:
        return "\n".join(m["content"] for m in messages)


class Extractor:
    """Counts the traces it is asked for; one vector of the layer number per step."""

    layer, n_layers, hidden_size = 2, 4, 3
    tokenizer = Tokenizer()

    def __init__(self) -> None:
        self.traces = 0

    def extract_layers(self, prompt_text: str, traces: Sequence[str], delimiter: str,
                       layers: Sequence[int]) -> dict[int, list[TraceFeatures]]:
        self.traces += len(traces)
        return {w: [TraceFeatures(np.full((t.count(delimiter) + 1, 3), w, np.float32), (0,),
                                  7, 7) for t in traces] for w in layers}


def sampled_run(tmp: Path) -> Path:
    """Two questions x 2 samples of the 135M model's run settings, made by the fake backend:
    run_model accepts the run, and nothing here loads a model."""
    spec = models.CATALOG["smollm2-135m"]
    cfg = EvalConfig(strategies=("majority",), ns=(2,))
    settings = run_settings(cfg, model=spec.name, model_sha256=spec.sha256, dataset="t",
                            split="train")
    fake = FakeBackend(script=lambda _p, i: f"One step.\n\nThe answer is \\boxed{{{i}}}.")
    with Store.open(tmp, settings) as store:
        Harness(cfg, CachedBackend(fake, store, spec.sha256), store).run(PROBLEMS)
    return tmp


def test_features_are_cached_once_with_the_dtype_they_were_read_in(tmp_path: Path) -> None:
    run = sampled_run(tmp_path / "run")
    ext = Extractor()
    assert collect_features(run, 2, extractor=ext, dtype="float32") == 4
    assert collect_features(run, 2, extractor=ext, dtype="float32") == 0
    assert ext.traces == 4  # the second call read everything from the cache
    assert features_meta(run, 2)["dtype"] == "float32"


def test_a_cache_from_before_dtypes_were_recorded_counts_as_float32(tmp_path: Path) -> None:
    run = sampled_run(tmp_path / "run")
    collect_features(run, 2, extractor=Extractor(), dtype="float32")
    path = features_dir(run, 2) / "meta.json"
    old = json.loads(path.read_text())
    del old["dtype"]
    path.write_text(json.dumps(old))
    assert collect_features(run, 2, extractor=Extractor(), dtype="float32") == 0
    assert features_meta(run, 2)["dtype"] == "float32"


def test_another_dtype_is_refused_naming_the_cached_one(tmp_path: Path) -> None:
    run = sampled_run(tmp_path / "run")
    collect_features(run, 2, extractor=Extractor(), dtype="float32")
    ext = Extractor()
    with pytest.raises(ConfigError, match=r"dtype \(cached 'float32', asked 'bfloat16'\): "
                                          r"pass --dtype float32 to use them"):
        collect_features(run, 2, extractor=ext, dtype="bfloat16")
    assert ext.traces == 0
    with pytest.raises(ConfigError, match="dtype must be auto, float32 or bfloat16"):
        collect_features(run, 2, extractor=ext, dtype="half")


def test_the_command_refuses_an_unknown_dtype_in_one_sentence(tmp_path: Path) -> None:
    run = sampled_run(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="120")
    for args in (("sprm", "eval", str(run), "--dtype", "half"),
                 ("sprm", "collect", "--out", str(run), "--dtype", "half")):
        out = subprocess.run([sys.executable, "-m", "ttscale", *args], capture_output=True,
                             text=True, env=env, timeout=300, check=False)
        assert out.returncode != 0
        assert "dtype must be auto, float32 or bfloat16, got 'half'" in out.stderr
        assert "Traceback" not in out.stderr
