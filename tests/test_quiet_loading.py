"""Loading the SPRM feature model prints one ttscale line, not transformers' progress bars
and warnings (those show with TTSCALE_DEBUG=1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOAD = """
import sys
from ttscale import models
from ttscale.verifiers.sprm.features import TorchFeatures
path, _ = models.resolve("smollm2-135m")
feats = TorchFeatures.load(str(path), 2, threads=2, dtype="bfloat16")
print(feats.layer, feats.dtype)
"""


@pytest.mark.slow
def test_loading_the_feature_model_prints_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TTSCALE_DEBUG"}
    proc = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2", "bfloat16"]
    assert proc.stderr.splitlines() == [
        "ttscale: loading the SPRM feature model from SmolLM2-135M-Instruct.Q4_1.gguf "
        "(bfloat16, once)"]


def test_quiet_loading_restores_what_it_changed() -> None:
    transformers = pytest.importorskip("transformers")
    from ttscale.verifiers.sprm.features import quiet_loading

    logs = transformers.utils.logging
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    before = (logs.get_verbosity(), logs.is_progress_bar_enabled(), gguf_utils.tqdm)
    with quiet_loading(transformers):
        assert logs.get_verbosity() == logs.ERROR and not logs.is_progress_bar_enabled()
        assert gguf_utils.tqdm([1, 2], desc="x").disable
        import warnings

        warnings.warn("hidden", FutureWarning, stacklevel=1)  # silently dropped
    assert (logs.get_verbosity(), logs.is_progress_bar_enabled(), gguf_utils.tqdm) == before
