"""The OpenAI-compatible server: ``ttscale serve``, or ``create_app`` in your own process.

Needs the ``server`` extra: ``pip install 'ttscale[server]'``.

Example:
    >>> from ttscale.backends.fake import FakeBackend
    >>> from ttscale.server import Settings, create_app
    >>> app = create_app(FakeBackend(), Settings(api_keys=("secret",)))  # doctest: +SKIP
"""

from __future__ import annotations

from ttscale.server.app import create_app
from ttscale.server.service import Settings

__all__ = ["Settings", "create_app"]
