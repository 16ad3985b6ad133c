"""A fast OpenAI-compatible stand-in for a GPU fleet, on 127.0.0.1: every completion is
answered at once, so what a benchmark measures is the client (the controller), not a model.

Each choice is a realistic sample: ``--tokens`` tokens (300 by default) of text ending in a
boxed answer that depends on the sample's seed (so votes differ), with ``usage``, the
per-token log-probabilities and the ``top_logprobs`` alternatives asked for, and vLLM's
``stop_reason``. ``n`` choices per request get seeds ``seed .. seed + n - 1``, as vLLM and
llama.cpp do. The answers are built once per shape and joined as bytes, so one core serves
thousands of samples a second.

It speaks plain HTTP/1.1 with keep-alive on an asyncio protocol (no framework: a framework
would cost more CPU than the client it is measuring). ``--fail-after K`` stops answering
(closes every connection) after K completions, to test a fleet member that goes away.
``GET /stats`` says how many requests and samples it answered.

    python bench/standin_server.py --port 0      # prints {"url": ...} then serves
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
from typing import Any

MODEL = "standin-1.5b"
_WORDS = ("First", " we", " add", " the", " two", " numbers", ",", " then", " multiply",
          " by", " 3", ".", " So", " the", " total", " is")


class Shapes:
    """Pre-encoded choices: one per (answer, top-k, chat), built on first use."""

    def __init__(self, tokens: int, answers: int) -> None:
        self.tokens = tokens
        self.answers = answers
        self._cache: dict[tuple[int, int, bool], bytes] = {}

    def choice(self, answer: int, top_k: int, chat: bool) -> bytes:
        key = (answer, top_k, chat)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._build(answer, top_k, chat)
        return found

    def _build(self, answer: int, top_k: int, chat: bool) -> bytes:
        rng = random.Random(answer)
        tail = [" \\boxed{", str(answer), "}"]
        words = [_WORDS[i % len(_WORDS)] for i in range(self.tokens - len(tail))] + tail
        text = "".join(words)
        content = []
        for w in words:
            lp = -rng.random() * 0.5
            entry: dict[str, Any] = {"token": w, "logprob": round(lp, 4), "bytes": None}
            if top_k:
                entry["top_logprobs"] = [{"token": w, "logprob": round(lp, 4), "bytes": None}] + [
                    {"token": f"{w}{j}", "logprob": round(lp - 1 - j, 4), "bytes": None}
                    for j in range(top_k - 1)]
            content.append(entry)
        body: dict[str, Any] = {"index": 0, "finish_reason": "stop", "stop_reason": None,
                                "logprobs": {"content": content} if top_k >= 0 else None}
        if chat:
            body["message"] = {"role": "assistant", "content": text}
        else:
            body["text"] = text
        # "index":0 is first, so a choice's index is patched by replacing that prefix
        return json.dumps(body, separators=(",", ":")).encode()


class Handler(asyncio.Protocol):
    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, path, _ = head.split(" ", 2)
            self.respond(*self.server.answer(method, path, body))

    def respond(self, status: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}.get(status, "Error")
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n".encode() + payload)


class StandIn:
    def __init__(self, tokens: int, answers: int, fail_after: int | None) -> None:
        self.shapes = Shapes(tokens, answers)
        self.fail_after = fail_after
        self.completions = 0
        self.requests = 0
        self.connections: set[Handler] = set()

    def answer(self, method: str, path: str, raw: bytes) -> tuple[int, bytes]:
        path = path.split("?")[0].rstrip("/")
        if method == "GET" and path in ("/v1/models", "/models"):
            return 200, json.dumps({"object": "list", "data": [
                {"id": MODEL, "object": "model", "owned_by": "standin"}]}).encode()
        if method == "GET" and path == "/health":
            return 200, b"{}"
        if method == "GET" and path == "/stats":  # what it answered: tests of a spread
            return 200, json.dumps({"completions": self.completions,
                                    "requests": self.requests}).encode()
        chat = path.endswith("/chat/completions")
        if method != "POST" or not (chat or path.endswith("/completions")):
            return 404, b'{"error":{"message":"not found"}}'
        if self.fail_after is not None and self.completions >= self.fail_after:
            for h in list(self.connections):  # a member of the fleet that went away
                if h.transport is not None:
                    h.transport.abort()
            return 503, b""
        body = json.loads(raw)
        n, seed = int(body.get("n") or 1), int(body.get("seed") or 0)
        lp = body.get("logprobs")
        top_k = int(body.get("top_logprobs") or 0) if chat else int(lp or 0)
        top_k = top_k if lp else -1
        self.completions += n
        self.requests += 1
        choices = []
        for i in range(n):
            one = self.shapes.choice((seed + i) % self.shapes.answers, top_k, chat)
            choices.append(b'{"index":%d' % i + one[len(b'{"index":0'):])
        tokens = self.shapes.tokens
        head = (b'{"id":"cmpl-standin","object":"%s","created":0,"model":"%s","choices":['
                % (b"chat.completion" if chat else b"text_completion", MODEL.encode()))
        usage = b'],"usage":{"prompt_tokens":60,"completion_tokens":%d,"total_tokens":%d}}' % (
            tokens * n, 60 + tokens * n)
        return 200, head + b",".join(choices) + usage


async def serve(port: int, tokens: int, answers: int, fail_after: int | None) -> None:
    loop = asyncio.get_running_loop()
    state = StandIn(tokens, answers, fail_after)
    server = await loop.create_server(lambda: Handler(state), "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://127.0.0.1:{bound}/v1", "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--tokens", type=int, default=300, help="completion tokens per sample")
    ap.add_argument("--answers", type=int, default=3, help="distinct boxed answers")
    ap.add_argument("--fail-after", type=int, default=None,
                    help="stop answering after this many samples")
    args = ap.parse_args()
    try:
        asyncio.run(serve(args.port, args.tokens, args.answers, args.fail_after))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
