#!/usr/bin/env bash
# Installs everything, then runs the linters and the whole test suite (real 135M model included).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/mypy bench
.venv/bin/mypy tests
.venv/bin/python -m pytest -q -p no:cacheprovider --doctest-modules src tests
