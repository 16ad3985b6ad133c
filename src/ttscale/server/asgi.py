"""ASGI pieces under the routes: request timing, the body size limit, and a stream that
notices at once when its client leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ttscale.server.metrics import Metrics


class Observe:
    """Times every request to the end of its response (streams included) for /metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - start)


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413: by Content-Length before reading,
    and while reading when the body comes in chunks without one."""

    def __init__(self, app: ASGIApp, limit: int, message: str, refusal: Response) -> None:
        self.app = app
        self.limit = limit
        self.message = message
        self.refusal = refusal  # the 413 response with that message, shaped by the app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self.refusal(scope, receive, send)
            return
        received = 0

        async def receive_() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, receive_, send)


class EventStream(StreamingResponse):
    """Server-sent events that call ``on_disconnect`` as soon as the client goes away.

    Starlette's own stream notices a gone client only when it next writes; a solve can run
    for minutes between two events, so the disconnect is watched for all the time.
    """

    def __init__(self, content: AsyncIterable[bytes], on_disconnect: Callable[[], None],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        streaming = asyncio.ensure_future(self.stream_response(send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({streaming, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not streaming.done():
                self.on_disconnect()
                streaming.cancel()  # closes the generator: its finally runs
            await asyncio.gather(streaming, watcher, return_exceptions=True)
        if not streaming.cancelled() and (exc := streaming.exception()) is not None:
            if isinstance(exc, OSError):
                raise ClientDisconnect() from exc
            raise exc
