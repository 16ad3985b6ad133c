"""The OpenAI backend's HTTP client: one aiohttp session on the backend's event loop.

httpx cost about 2 ms of CPU per request at hundreds in flight (its anyio streams, the
pool's check of every connection, the body joined from chunks), against about 0.45 ms for
aiohttp on the same stand-in server (bench/controller_throughput.py): at thousands of
samples a second the client was most of a controller's time. :class:`Http` sends one
request and hands back a :class:`Reply` with the whole body read; it turns aiohttp's
exceptions into a :class:`Failure` naming the kind (connect, timeout, another), which the
backend retries and words as before.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Reply:
    """An HTTP answer read to its end: status, headers (any case), body, and the URL asked.

    Example:
        >>> r = Reply(400, {"content-type": "application/json"}, b'{"error": "bad n"}')
        >>> r.json()["error"], r.text
        ('bad n', '{"error": "bad n"}')
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    url: str = ""

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")


class Failure(Exception):
    """A request that got no HTTP answer: ``kind`` is ``connect``, ``timeout`` or the name
    of the transport error."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


KEEPALIVE_SECONDS = 4.0  # below llama.cpp's server's 5 s keep-alive


class Http:
    """Requests over one aiohttp session: ``connections`` at most, bearer ``api_key``.

    ``timeout`` bounds each wait for the server (connecting: at most 10 s), as httpx's did:
    a long completion that keeps its connection is not cut off. Make it on the event loop
    that sends the requests.

    Example:
        >>> http = Http(connections=8, timeout=60, api_key=None)  # doctest: +SKIP
        >>> reply = await http.request("GET", "http://127.0.0.1:8000/v1/models")  # doctest: +SKIP
        >>> reply.status_code  # doctest: +SKIP
        200
    """

    def __init__(self, *, connections: int, timeout: float, api_key: str | None,
                 tls: bool = False) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        ssl: Any = True
        if tls:
            import httpx

            # httpx's context: certifi's CA bundle and SSL_CERT_FILE, as before
            ssl = httpx.create_ssl_context()
        # trust_env off: with it on, aiohttp looks up ~/.netrc and the proxy variables in a
        # worker thread for every request; the proxy is looked up once per host instead
        self.session = aiohttp.ClientSession(
            headers=headers, trust_env=False,
            # idle connections kept 4 s, as httpx kept them 5: llama.cpp's server closes an
            # idle one after 5 s, and a request on one it closed fails with
            # ServerDisconnectedError (aiohttp's default keeps them 15 s)
            connector=aiohttp.TCPConnector(limit=connections, ssl=ssl,
                                           keepalive_timeout=KEEPALIVE_SECONDS),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 10.0),
                                          sock_read=timeout))
        self._proxies: dict[str, dict[str, Any]] = {}

    async def request(self, method: str, url: str,
                      body: dict[str, Any] | None = None) -> Reply:
        """One request, its answer read whole; :class:`Failure` when none came."""
        async with self._opened(method, url, body) as response:
            try:
                content = await response.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise _failure(exc) from None
            return Reply(response.status, response.headers, content, url)

    @asynccontextmanager
    async def stream(self, method: str, url: str,
                     body: dict[str, Any]) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request whose body is read as it arrives; leaving the block early closes the
        connection, which makes a server stop generating."""
        async with self._opened(method, url, body) as response:
            try:
                yield response
            finally:
                if not response.content.at_eof():
                    response.close()

    @asynccontextmanager
    async def _opened(self, method: str, url: str,
                      body: dict[str, Any] | None) -> AsyncIterator[aiohttp.ClientResponse]:
        data = None if body is None else json.dumps(
            body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        headers = None if body is None else {"content-type": "application/json"}
        try:
            response = await self.session.request(method, url, data=data, headers=headers,
                                                  **self._proxy(url))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc) from None
        async with response:
            yield response

    def _proxy(self, url: str) -> dict[str, Any]:
        """The proxy the environment names for ``url``'s host (HTTP_PROXY, NO_PROXY and the
        like, as httpx honoured them), looked up once."""
        origin = url.split("/", 3)[2] if "://" in url else url
        found = self._proxies.get(origin)
        if found is None:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
                found = {"proxy": proxy, "proxy_auth": auth}
            except LookupError:
                found = {}
            self._proxies[origin] = found
        return found

    async def close(self) -> None:
        """Close every connection."""
        await self.session.close()


async def read_all(response: aiohttp.ClientResponse) -> Reply:
    """The rest of a streamed answer, as a :class:`Reply` (an error's body).

    Example:
        >>> reply = await read_all(response)  # doctest: +SKIP
    """
    return Reply(response.status, response.headers, await response.read(), str(response.url))


async def lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """A streamed answer's lines as they arrive.

    Example:
        >>> async for line in lines(response): ...  # doctest: +SKIP
    """
    async for raw in response.content:
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def quiet_unclosed(loop: Any, context: dict[str, Any]) -> None:
    """An event loop's exception handler that drops aiohttp's "Unclosed client session"
    and "Unclosed connector": a backend never closed is collected as the process exits,
    where httpx said nothing either; anything else goes to the default handler.

    Example:
        >>> quiet_unclosed(None, {"message": "Unclosed connector"})  # dropped
    """
    if str(context.get("message", "")).startswith("Unclosed"):
        return
    loop.default_exception_handler(context)


def _failure(exc: BaseException) -> Failure:
    # connecting that timed out counts as connecting, as with httpx's ConnectTimeout
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return Failure("connect")
    if isinstance(exc, TimeoutError):
        return Failure("timeout")
    return Failure(type(exc).__name__)
