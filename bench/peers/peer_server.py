"""One llama.cpp server (xllamacpp, in this process) with the counting proxy in front.

    python bench/peers/peer_server.py --model qwen2.5-coder-1.5b --parallel 8

Prints one JSON line, ``{"proxy": URL, "upstream": URL, "model": ID, "gguf": PATH,
"sha256": HEX, "params": N}``, then serves until its standard input closes (the runner
holds it open) or it is killed. Every system reaches the server only through the proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx
from peer_meter import start_proxy


def start_llama(model: str, parallel: int, ctx_per_slot: int, threads: int) -> tuple[Any, str]:
    """The xllamacpp server (kept referenced: it stops when collected) and its URL."""
    import xllamacpp as xl

    from ttscale import models

    path, _ = models.resolve(model)
    p = xl.CommonParams()
    p.model.path = str(path)
    p.n_parallel = parallel
    p.n_ctx = parallel * ctx_per_slot
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.warmup = False
    p.verbosity = -1
    server = xl.Server(p)
    return server, str(server.listening_address)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--parallel", type=int, default=8, help="server slots (requests batch)")
    ap.add_argument("--ctx-per-slot", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--port", type=int, default=0, help="the proxy's port (0: any free one)")
    args = ap.parse_args()

    from ttscale import models

    _server, upstream = start_llama(args.model, args.parallel, args.ctx_per_slot, args.threads)
    httpd, _meter = start_proxy(upstream, args.port)
    info = httpx.get(upstream + "/v1/models", timeout=60).json()["data"][0]
    path, spec = models.resolve(args.model)
    sha = spec.sha256 if spec is not None else models.sha256_of(path)
    proxy = f"http://127.0.0.1:{httpd.server_address[1]}"
    print(json.dumps({"proxy": proxy, "upstream": upstream, "model": info["id"],
                      "gguf": str(path), "sha256": sha,
                      "params": int(info.get("meta", {}).get("n_params", 0))}), flush=True)
    try:
        while sys.stdin.read(1):  # the runner never writes: this returns when it exits
            pass
    except KeyboardInterrupt:
        pass
    httpd.shutdown()
    # exit now: collecting the server would wait for requests still decoding
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
