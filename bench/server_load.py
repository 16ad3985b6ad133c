"""A bounded load test on loopback: waves of concurrent requests against ``ttscale serve``.

Every request must be answered (200) or refused with 429 when the slots and the queue are
full; anything else counts as an error. The server runs in its own process, whose
resident memory is sampled during the run; its peak comes from the kernel (VmHWM).

    python bench/server_load.py                                    # fake backend
    python bench/server_load.py --backend llamacpp --model smollm2-135m --max-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wave(url: str, count: int, body: dict[str, object]) -> tuple[Counter[str], list[float]]:
    """``count`` requests at once: outcomes and the latency of the answered ones."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def one() -> tuple[str, float]:
            t = time.perf_counter()
            try:
                r = await http.post("/chat/completions", json=body)
            except httpx.HTTPError:
                return "error", 0.0
            kind = {200: "answered", 429: "refused"}.get(r.status_code, "error")
            return kind, time.perf_counter() - t

        results = await asyncio.gather(*(one() for _ in range(count)))
    return Counter(k for k, _ in results), [t for k, t in results if k == "answered"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="fake", choices=["fake", "llamacpp"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--requests", type=int, default=50, help="concurrent requests per wave")
    ap.add_argument("--waves", type=int, default=3)
    ap.add_argument("--strategy", default="majority@8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--fake-delay", type=float, default=0.2, help="seconds per fake call")
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "ttscale", "serve", "--backend", args.backend,
           "--port", str(port), "--max-concurrency", str(args.max_concurrency),
           "--max-queue", str(args.max_queue)]
    if args.backend == "fake":
        cmd += ["--fake-delay", str(args.fake_delay)]
    else:
        cmd += ["--parallel", "4", "--threads", str(args.threads)]
        cmd += ["--model", args.model] if args.model else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    url = f"http://127.0.0.1:{port}/v1"
    samples: list[float] = []
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(0.05):
            try:
                samples.append(memory_mb(proc.pid, "VmRSS"))
            except OSError:
                return

    try:
        deadline = time.monotonic() + 300  # a real model takes a while to load
        while True:
            try:
                if httpx.get(url[:-3] + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        threading.Thread(target=sample_memory, daemon=True).start()
        body = {"model": args.strategy, "max_tokens": args.max_tokens,
                "messages": [{"role": "user", "content": "What is 6*7?"}]}
        total: Counter[str] = Counter()
        latencies: list[float] = []
        start = time.perf_counter()
        for i in range(args.waves):
            counts, lat = asyncio.run(wave(url, args.requests, body))
            total += counts
            latencies += lat
            print(f"wave {i + 1}: answered {counts['answered']}, refused {counts['refused']}, "
                  f"errors {counts['error']}, server RSS {memory_mb(proc.pid, 'VmRSS'):.1f} MB",
                  flush=True)
        wall = time.perf_counter() - start
        peak = memory_mb(proc.pid, "VmHWM")
    finally:
        done.set()
        proc.terminate()
        proc.wait(60)

    sent = args.requests * args.waves
    print(f"\n{sent} requests in {args.waves} waves of {args.requests} concurrent, "
          f"{args.backend} backend, {args.strategy}, max-concurrency {args.max_concurrency}, "
          f"max-queue {args.max_queue}, {wall:.1f} s")
    print(f"answered {total['answered']}, refused (429) {total['refused']}, "
          f"errors {total['error']}")
    if latencies:
        p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]
        print(f"latency of answered: p50 {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms")
    low, high = (min(samples), max(samples)) if samples else (0.0, 0.0)
    print(f"server memory: peak {peak:.1f} MB, sampled RSS {low:.1f}..{high:.1f} MB")
    if total["error"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
