"""optillm's side of the comparison, run by optillm's own interpreter.

    .venvs/optillm/bin/python worker_optillm.py OPTILLM_URL MODEL

OPTILLM_URL is optillm's proxy (started by the runner in front of the counting proxy);
each job is one chat completion through it with the official ``openai`` client, the
approach named in ``extra_body={"optillm_approach": ...}`` as optillm documents.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

from worker_common import Answer, Job, serve


def main() -> None:
    url, model = sys.argv[1], sys.argv[2]
    openai: Any = importlib.import_module("openai")
    client = openai.OpenAI(base_url=url, api_key="optillm-local", timeout=7200, max_retries=0)

    def run(job: Job) -> Answer:
        start = time.perf_counter()
        resp = client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": job["system"]},
                      {"role": "user", "content": job["question"]}],
            max_tokens=job["max_tokens"],
            extra_body={"optillm_approach": job["approach"]},
        )
        usage = resp.usage.model_dump() if resp.usage is not None else {}
        return resp.choices[0].message.content or "", {
            "self_reported_usage": usage, "client_seconds": time.perf_counter() - start}

    serve(run)


if __name__ == "__main__":
    main()
