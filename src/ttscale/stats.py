"""Statistics shared by every layer: rank-based AUROC.

Example:
    >>> auroc([0.9, 0.1], [1, 0])
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve from ranks (ties share their mean rank); ``None`` when only
    one class is present.

    Example:
        >>> auroc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
        0.75
        >>> auroc([0.5, 0.5], [1, 0]), auroc([0.2], [1])
        (0.5, None)
    """
    import numpy as np
    from scipy.stats import rankdata  # numpy and SciPy only when asked

    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))
