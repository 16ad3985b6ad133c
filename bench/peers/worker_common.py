"""The worker loop shared by the peers' workers (run by each peer's own interpreter).

A worker reads one job per line on standard input, ``{"approach": NAME, "n": N,
"question": TEXT, "system": TEXT, "max_tokens": N}``, and answers one line on standard
output, ``{"text": FINAL TEXT, "error": MESSAGE or null, "detail": {...}}``. Everything
else a peer prints is sent to standard error, so the answer lines stay clean. This file
imports nothing outside the standard library: it runs in the peers' virtual environments.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

Job = dict[str, Any]
Answer = tuple[str, dict[str, Any]]


def serve(run: Callable[[Job], Answer]) -> None:
    """Answer jobs from stdin until it closes; a failing job answers with its error."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # whatever the peer prints goes to the log, not the protocol
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            text, detail = run(job)
            answer: dict[str, Any] = {"text": text, "error": None, "detail": detail}
        except Exception as e:
            traceback.print_exc()
            answer = {"text": "", "error": f"{type(e).__name__}: {e}"[:2000], "detail": {}}
        out.write(json.dumps(answer) + "\n")
        out.flush()
