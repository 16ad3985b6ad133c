"""Test-time scaling strategies: one module each, state passed explicitly."""
