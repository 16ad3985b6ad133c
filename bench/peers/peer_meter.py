"""The one token meter: a counting HTTP proxy in front of the llama.cpp server.

Every system talks to the server through ``http://PROXY/t/LANE/v1``; the proxy strips the
``/t/LANE`` prefix, forwards the request untouched, and adds the tokens of the response to
LANE's counters. ``GET /meter`` returns every lane's counters as JSON; the runner reads them
before and after a job (jobs run one at a time), so a job's tokens are the difference.

What is counted, per choice (what one ``n=1`` request would have been charged):
- prompt tokens: the whole prompt, cached or not (``usage.prompt_tokens``; in a stream
  without ``usage``, llama.cpp's ``timings.cache_n + timings.prompt_n``);
- completion tokens: ``usage.completion_tokens`` for a single choice. llama.cpp's ``usage``
  of an ``n > 1`` response covers choice 0 only (measured: n=3 reported one choice's
  tokens), so the other choices are re-tokenized with the server's ``/tokenize`` (+1 for
  the end-of-sequence token of a choice that stopped). Streams: each choice's final chunk
  carries llama.cpp ``timings.predicted_n``; otherwise the streamed text is re-tokenized.
``prompt_computed`` is what the server actually evaluated (``timings.prompt_n``, prefix
cache hits excluded): shown for information, never used for the comparison.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "proxy-connection", "te", "trailer", "upgrade", "accept-encoding"}


@dataclass
class Counts:
    requests: int = 0
    choices: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_computed: int = 0
    retokenized: int = 0  # choices whose completion was counted by re-tokenizing

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Meter:
    """Thread-safe counters per lane, and the upstream server's tokenizer."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.lock = threading.Lock()
        self.lanes: dict[str, Counts] = defaultdict(Counts)

    def connect(self, timeout: float = 3600.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def tokens(self, text: str) -> int:
        """Tokens of ``text`` by the server's own tokenizer (not charged)."""
        if not text:
            return 0
        conn = self.connect(60)
        try:
            conn.request("POST", "/tokenize", json.dumps({"content": text}),
                         {"Content-Type": "application/json"})
            body = json.loads(conn.getresponse().read())
            return len(body.get("tokens", []))
        finally:
            conn.close()

    def add(self, lane: str, counts: Counts) -> None:
        with self.lock:
            c = self.lanes[lane]
            for k, v in asdict(counts).items():
                setattr(c, k, getattr(c, k) + v)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {k: asdict(v) for k, v in self.lanes.items()}

    # -- counting one response ------------------------------------------------------------

    def count_json(self, body: dict[str, Any]) -> Counts:
        """A non-streamed response: OpenAI ``usage`` or llama.cpp's native fields."""
        usage = body.get("usage") or {}
        timings = body.get("timings") or {}
        choices = body.get("choices")
        if not isinstance(choices, list):
            if "tokens_predicted" in body:  # llama.cpp's native /completion
                return Counts(1, 1, int(body.get("tokens_evaluated", 0)),
                              int(body["tokens_predicted"]), int(timings.get("prompt_n", 0)))
            return Counts(requests=1)
        prompt = int(usage.get("prompt_tokens", 0))
        c = Counts(1, len(choices), prompt * max(len(choices), 1),
                   int(usage.get("completion_tokens", 0)), int(timings.get("prompt_n", prompt)))
        for choice in sorted(choices, key=lambda ch: int(ch.get("index", 0)))[1:]:
            c.completion_tokens += self.choice_tokens(text_of(choice),
                                                      choice.get("finish_reason"))
            c.retokenized += 1
        return c

    def choice_tokens(self, text: str, finish_reason: Any) -> int:
        return self.tokens(text) + (1 if finish_reason == "stop" else 0)

    def count_stream(self, events: list[dict[str, Any]]) -> Counts:
        """A streamed response, from its parsed ``data:`` events."""
        texts: dict[int, list[str]] = defaultdict(list)
        finish: dict[int, Any] = {}
        predicted: dict[int, int] = {}
        prompt = computed = 0
        usage_completion: int | None = None
        for ev in events:
            timings = ev.get("timings") or {}
            for ch in ev.get("choices") or []:
                i = int(ch.get("index", 0))
                delta = ch.get("delta") or {}
                texts[i].append(str(delta.get("content") or ch.get("text") or ""))
                if ch.get("finish_reason"):
                    finish[i] = ch["finish_reason"]
                    if "predicted_n" in timings:
                        predicted[i] = int(timings["predicted_n"])
            if timings:
                prompt = max(prompt, int(timings.get("cache_n", 0)) +
                             int(timings.get("prompt_n", 0)))
                computed = max(computed, int(timings.get("prompt_n", 0)))
            if ev.get("usage"):
                prompt = int(ev["usage"].get("prompt_tokens", prompt))
                usage_completion = int(ev["usage"].get("completion_tokens", 0))
        indices = sorted(set(texts) | set(finish)) or [0]
        c = Counts(1, len(indices), prompt * len(indices), 0, computed)
        for i in indices:
            if i in predicted:
                c.completion_tokens += predicted[i]
            elif usage_completion is not None and len(indices) == 1:
                c.completion_tokens += usage_completion
            else:
                c.completion_tokens += self.choice_tokens("".join(texts[i]), finish.get(i))
                c.retokenized += 1
        return c


def text_of(choice: dict[str, Any]) -> str:
    message = choice.get("message") or {}
    return str(message.get("content") or choice.get("text") or "")


def make_handler(meter: Meter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/meter":
                self.reply(200, json.dumps(meter.snapshot()).encode())
            else:
                self.forward(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.forward(self.rfile.read(length) if length else b"")

        def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def forward(self, body: bytes | None) -> None:
            lane, path = "default", self.path
            if path.startswith("/t/"):
                lane, _, rest = path[3:].partition("/")
                path = "/" + rest
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            conn = meter.connect()
            try:
                conn.request(self.command, path, body, headers)
                resp = conn.getresponse()
                ctype = resp.getheader("Content-Type", "")
                if "text/event-stream" in ctype:
                    self.relay_stream(lane, resp)
                    return
                data = resp.read()
                # counted before the client has the answer: a runner that reads the meter
                # as soon as its job returns must find the job's tokens there (an n=8
                # answer takes 7 /tokenize calls; replying first lost them to that race)
                if resp.status == 200 and self.command == "POST" and data[:1] == b"{":
                    meter.add(lane, meter.count_json(json.loads(data)))
                self.reply(resp.status, data, ctype or "application/json")
            except (OSError, http.client.HTTPException) as e:
                self.reply(502, json.dumps({"error": {"message": f"proxy: {e}"}}).encode())
            finally:
                conn.close()

        def relay_stream(self, lane: str, resp: http.client.HTTPResponse) -> None:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.getheader("Content-Type", "text/event-stream"))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")  # the body ends when the socket does
            self.end_headers()
            self.close_connection = True
            events: list[dict[str, Any]] = []
            counted = False
            while line := resp.readline():
                text = line.decode("utf-8", "replace").strip()
                if text.startswith("data:") and text[5:].strip() == "[DONE]" and not counted:
                    # the stream's end reaches the client only once its tokens are counted
                    counted = True
                    if resp.status == 200:
                        meter.add(lane, meter.count_stream(events))
                elif text.startswith("data:") and text[5:].strip():
                    with contextlib.suppress(json.JSONDecodeError):
                        events.append(json.loads(text[5:].strip()))
                self.wfile.write(line)
                self.wfile.flush()
            if resp.status == 200 and not counted:
                meter.add(lane, meter.count_stream(events))

    return Handler


def start_proxy(upstream: str, port: int = 0) -> tuple[ThreadingHTTPServer, Meter]:
    """A counting proxy in front of ``upstream`` (``http://host:port``), serving in a thread."""
    meter = Meter(upstream)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(meter))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="meter", daemon=True).start()
    return httpd, meter
