"""The ``ttscale`` command line: a thin shell over :func:`ttscale.solve.solve`.

It holds no algorithm logic: it parses options, builds a backend, calls ``solve`` like any
user would, and renders the result with rich; ``serve`` hands the backend to the server.

Example:
    >>> from ttscale.cli import app
    >>> sorted(c.name or "" for c in app.registered_commands)
    ['datasets', 'report', 'serve', 'solve']
"""

from ttscale.cli.main import app, main

__all__ = ["app", "main"]
