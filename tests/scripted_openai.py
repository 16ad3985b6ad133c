"""Small scripted OpenAI-shaped servers for the backend's tests: stdlib HTTP servers on
127.0.0.1 that each misbehave in one way a real server can (the ``serve`` fixture in
conftest.py starts them and closes them after the test).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ttscale.backends.openai import OpenAIBackend
from ttscale.types import Chat


@dataclass
class Seen:
    """One request a scripted server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


Reply = tuple[int, Any, dict[str, str]]  # status, JSON value or raw bytes, extra headers
App = Callable[[Seen], Reply]


class FakeServer:
    """A threaded stdlib HTTP server on 127.0.0.1 that answers with ``app``."""

    def __init__(self, app: App) -> None:
        self.seen: list[Seen] = []
        lock = threading.Lock()
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = Seen(self.command, self.path,
                           {k.lower(): v for k, v in self.headers.items()},
                           json.loads(raw) if raw else None)
                with lock:
                    seen.append(req)
                status, payload, headers = app(req)
                if isinstance(payload, bytes):
                    data, ctype = payload, "text/html"
                else:
                    data, ctype = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                # a client that timed out on purpose has gone: nothing to answer
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            do_GET = _handle
            do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def posts(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sample_text(seed: int) -> str:
    """What the scripted servers sample with ``seed``: ``seed + 1`` words."""
    return " ".join([f"s{seed}"] + ["tok"] * seed)


def openai_app(*, honour_n: bool = True, logprobs: bool = True, usage: bool = True,
               echo_prefill: bool = False, delay: float = 0.0) -> App:
    """An OpenAI-shaped server; sample ``i`` of a request with seed ``s`` says ``s + i``."""

    def app(req: Seen) -> Reply:
        if req.method == "GET" and req.path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "scripted-model"}]}, {}
        if req.path not in ("/v1/chat/completions", "/v1/completions"):
            return 404, {"error": {"message": "not found"}}, {}
        time.sleep(delay)
        body = req.body
        n = int(body.get("n", 1)) if honour_n else 1
        chat = req.path == "/v1/chat/completions"
        choices = []
        for i in range(n):
            seed = int(body["seed"]) + i
            text = sample_text(seed)
            words = text.split()
            choice: dict[str, Any] = {
                "index": i, "finish_reason": "length" if seed % 2 else "stop"}
            if chat:
                prefill = body["messages"][-1]["content"] if (
                    body["messages"][-1]["role"] == "assistant") else ""
                content = (prefill + text) if echo_prefill else text
                choice["message"] = {"role": "assistant", "content": content}
            else:
                choice["text"] = text
            if logprobs and body.get("logprobs"):
                if chat:
                    choice["logprobs"] = {"content": [
                        {"token": w, "logprob": -0.5,
                         "top_logprobs": [{"token": w, "logprob": -0.5},
                                          {"token": "x", "logprob": -2.0}]}
                        for w in words]}
                else:  # the legacy completions shape
                    choice["logprobs"] = {
                        "tokens": words,
                        "token_logprobs": [-0.5] * len(words),
                        "top_logprobs": [{w: -0.5, "x": -2.0, "y": -3.0} for w in words],
                        "text_offset": [0] * len(words)}
            choices.append(choice)
        answer: dict[str, Any] = {"object": "chat.completion", "choices": choices}
        if usage:
            # llama.cpp style: usage counts the first choice only.
            answer["usage"] = {"prompt_tokens": 11,
                               "completion_tokens": len(sample_text(int(body["seed"])).split())}
        return 200, answer, {}

    return app


def backend(url: str, **options: Any) -> OpenAIBackend:
    options.setdefault("model", "scripted-model")
    options.setdefault("backoff", 0.0)
    return OpenAIBackend(base_url=url, **options)


CHAT = Chat.user("What is 2+2?")
