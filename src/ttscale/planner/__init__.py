"""Choosing a strategy and budget per question: effort levels (``effort``).

Example:
    >>> from ttscale.planner.effort import EFFORT_SAMPLES
    >>> sorted(EFFORT_SAMPLES)
    ['high', 'low', 'medium']
"""
