"""A run directory and what it holds: the SQLite store (``store``), the generation and
verdict caches over it (``cache``, ``verdicts``), questions read back with every trace
(``records``), imported sample files (``importers``, ``imports``), and export / restore
(``archive``, ``report_restore``). Nothing here replays a strategy or draws a plot.
"""
