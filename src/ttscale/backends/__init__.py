"""Model backends: one batched protocol, ``generate(prompts, params) -> GenerateOutput``."""

from ttscale.backends.base import Backend, load_backend

__all__ = ["Backend", "load_backend"]
