"""ttscale: test-time scaling for LLM reasoning.

One question: :func:`solve`. A dataset: :func:`evaluate` generates a run (resumable) and
:func:`replay` replays strategies on its stored samples; :func:`compare_verifiers`,
:func:`import_samples`, :func:`ensemble`, :func:`export_run` / :func:`restore_run` and the
SPRM steps :func:`sprm_collect`, :func:`sprm_train`, :func:`sprm_evaluate` do the rest of
what the ``ttscale`` command does.

Example:
    >>> import ttscale
    >>> from ttscale.backends.fake import FakeBackend
    >>> ttscale.solve("1+1?", backend=FakeBackend(responses=["\\\\boxed{2}"]), n=2).answer
    '2'
"""

from ttscale.budget import Budget
from ttscale.errors import TtscaleError
from ttscale.evaluation.api import (
    EvalRun,
    compare_verifiers,
    ensemble,
    evaluate,
    export_run,
    import_samples,
    rebuild_report,
    replay,
    restore_run,
)
from ttscale.evaluation.progress import Progress
from ttscale.evaluation.sprm_api import sprm_collect, sprm_evaluate, sprm_train
from ttscale.params import SamplingParams
from ttscale.solve import solve
from ttscale.types import Result, Usage

__all__ = ["Budget", "EvalRun", "Progress", "Result", "SamplingParams", "TtscaleError",
           "Usage", "compare_verifiers", "ensemble", "evaluate", "export_run",
           "import_samples", "rebuild_report", "replay", "restore_run", "solve",
           "sprm_collect", "sprm_evaluate", "sprm_train"]
__version__ = "0.1.0"
