"""ttscale: test-time scaling for LLM reasoning.

Example:
    >>> import ttscale
    >>> from ttscale.backends.fake import FakeBackend
    >>> ttscale.solve("1+1?", backend=FakeBackend(responses=["\\\\boxed{2}"]), n=2).answer
    '2'
"""

from ttscale.budget import Budget
from ttscale.errors import TtscaleError
from ttscale.params import SamplingParams
from ttscale.solve import solve
from ttscale.types import Result, Usage

__all__ = ["Budget", "Result", "SamplingParams", "TtscaleError", "Usage", "solve"]
__version__ = "0.1.0"
