"""The evaluation harness: datasets with gold answers and a generation cache over a run store.

Example:
    >>> from ttscale.evaluation import load_dataset
    >>> [p.id for p in load_dataset("svamp", "test", limit=2)]
    ['svamp-test-0', 'svamp-test-1']
"""

from ttscale.evaluation.datasets import DATASETS, DatasetInfo, Problem, load_dataset
from ttscale.evaluation.runs.cache import CachedBackend

__all__ = ["DATASETS", "CachedBackend", "DatasetInfo", "Problem", "load_dataset"]
