"""The ``ttscale`` command line: a thin shell over the library (:func:`ttscale.solve`,
:func:`ttscale.evaluate`, :func:`ttscale.replay`, ...).

It holds no algorithm and no orchestration: it parses options, calls the library like any
user would, and renders what comes back with rich (tables, progress bars); ``serve`` hands
the backend to the server.

Example:
    >>> from ttscale.cli import app
    >>> sorted(c.name or "" for c in app.registered_commands)
    ['datasets', 'report', 'serve', 'solve', 'strategies']
"""

from ttscale.cli.main import app, main

__all__ = ["app", "main"]
