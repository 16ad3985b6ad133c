"""The latency the server adds over a direct library call, fake backend: p50 and p95.

The same question is answered, in alternation, by ``ttscale.solve`` in this process and by
``ttscale serve --backend fake`` (a separate process, as in production) through one
keep-alive HTTP connection. Both sides do the same work (majority of 8 on the scripted
fake, answer extraction, math-verify merging), so the difference is the server: HTTP,
validation, the worker thread hop, JSON. Alternating pairs spread drift in machine load
over both sides.

    python bench/server_latency.py --requests 300
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

from ttscale.backends.fake import FakeBackend
from ttscale.solve import solve

QUESTION = "Janet has 16 eggs, eats 3 and bakes with 4. How many are left?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ttscale", "serve", "--backend", "fake",
           "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start within 60 s")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=300, help="measured pairs")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--n", type=int, default=8, help="samples per question (majority@N)")
    args = ap.parse_args()

    port = free_port()
    proc = start_server(port, ["--default-strategy", f"majority@{args.n}"])
    backend = FakeBackend()  # the server's fake: "The answer is 42." for every sample
    body = {"model": f"majority@{args.n}", "messages": [{"role": "user", "content": QUESTION}]}
    direct: list[float] = []
    served: list[float] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:

            def via_server() -> float:
                t = time.perf_counter()
                r = http.post("/chat/completions", json=body)
                dt = time.perf_counter() - t
                assert r.status_code == 200, r.text
                return dt

            def via_library() -> float:
                t = time.perf_counter()
                solve(QUESTION, backend=backend, strategy="majority", n=args.n)
                return time.perf_counter() - t

            for _ in range(args.warmup):
                via_server()
                via_library()
            for i in range(args.requests):
                if i % 2 == 0:
                    served.append(via_server())
                    direct.append(via_library())
                else:
                    direct.append(via_library())
                    served.append(via_server())
    finally:
        proc.terminate()
        proc.wait(30)

    ms = 1000.0
    rows = [("direct solve()", direct), ("through the server", served)]
    print(f"{args.requests} requests, majority@{args.n}, fake backend, one keep-alive "
          "connection")
    print(f"{'':22}{'p50 ms':>10}{'p95 ms':>10}")
    for name, values in rows:
        print(f"{name:22}{pct(values, 50) * ms:10.2f}{pct(values, 95) * ms:10.2f}")
    add50 = (pct(served, 50) - pct(direct, 50)) * ms
    add95 = (pct(served, 95) - pct(direct, 95)) * ms
    print(f"{'added by the server':22}{add50:10.2f}{add95:10.2f}")
    print(f"goal: added p95 <= 5 ms: {'met' if add95 <= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
