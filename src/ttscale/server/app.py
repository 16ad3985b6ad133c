"""The FastAPI app: OpenAI-compatible routes over one shared backend.

``create_app(backend, settings)`` builds it; ``ttscale serve`` runs it with uvicorn. The
routes hold no algorithm: they turn a request into a ``Plan`` (``service.plan``), run it
with the ``Service`` (the same ``solve`` a user calls) and shape the ``Result``
(``responses``). Every error is an OpenAI error object with one clear sentence.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from ttscale import __version__
from ttscale.backends.base import Backend
from ttscale.errors import BackendError, BudgetExceeded, ConfigError, TtscaleError
from ttscale.server import responses
from ttscale.server.asgi import BodyLimit, EventStream, Observe
from ttscale.server.metrics import Metrics
from ttscale.server.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionRequest,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    TtscaleOptions,
)
from ttscale.server.service import ApiError, Job, Plan, Service, Settings, plan, split_model

log = logging.getLogger("ttscale.server")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what} for code, what in {
        400: "The request is invalid; the message says what to change.",
        401: "The API key is missing or wrong.",
        404: "The model is not served here.",
        413: "The body is larger than the server accepts.",
        429: "The server is busy: every slot and queue place is taken.",
        502: "The model backend failed.",
        503: "The server is shutting down.",
        504: "The request took longer than the server's time limit.",
    }.items()
}
SSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}},
             "description": "With stream=true: chunks as server-sent events."}}


# Module level: FastAPI resolves the annotations of dependencies in the module's namespace.
BEARER = HTTPBearer(auto_error=False, description="An API key given to ttscale serve.")


class JSON(Response):
    """A JSON response from bytes already serialised (``responses.dumps``)."""

    media_type = "application/json"


def error(status: int, message: str, type_: str, code: str | None = None,
          headers: dict[str, str] | None = None) -> JSON:
    """An OpenAI-shaped error response with ``status`` and the given headers.

    Example:
        >>> import json
        >>> reply = error(404, "no model named x", "invalid_request_error", "model_not_found")
        >>> reply.status_code, json.loads(reply.body)["error"]["code"]
        (404, 'model_not_found')
    """
    body = responses.dumps(responses.error_body(message, type_, code))
    return JSON(body, status_code=status, headers=headers)


def classify(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, OpenAI error body and headers for an exception from planning or solving.

    Example:
        >>> status, body, _ = classify(ConfigError("n must be positive"))
        >>> status, body["error"]["message"], body["error"]["type"]
        (400, 'n must be positive', 'invalid_request_error')
    """
    headers: dict[str, str] = {}
    if isinstance(exc, ApiError):
        status, type_, code = exc.status, exc.type, exc.code
        if status == 429:
            headers["Retry-After"] = "1"
    elif isinstance(exc, BudgetExceeded):
        status, type_, code = 400, "invalid_request_error", "budget_exceeded"
    elif isinstance(exc, ConfigError):
        status, type_, code = 400, "invalid_request_error", None
    elif isinstance(exc, BackendError):
        status, type_, code = 502, "api_error", "backend_error"
    elif isinstance(exc, TtscaleError):
        status, type_, code = 500, "server_error", None
    else:
        log.error("unexpected error", exc_info=exc)
        return 500, responses.error_body(
            f"the server failed unexpectedly ({type(exc).__name__}): the traceback is in the "
            "server log", "server_error"), {"x-should-retry": "false"}
    if status >= 500:
        headers["x-should-retry"] = "false"  # the work is heavy: a retry would repeat it
    return status, responses.error_body(responses.http_wording(str(exc)), type_, code), headers


def error_of(exc: BaseException) -> JSON:
    """The OpenAI error response for an exception.

    Example:
        >>> import json
        >>> reply = error_of(BackendError("the model server went away"))
        >>> code = json.loads(reply.body)["error"]["code"]
        >>> reply.status_code, reply.headers["x-should-retry"], code
        (502, 'false', 'backend_error')
    """
    status, body, headers = classify(exc)
    return JSON(responses.dumps(body), status_code=status, headers=headers)


SERVED = "/v1/chat/completions, /v1/completions and /v1/models"
NOT_SERVED = {"embeddings": "embeddings", "images": "images", "audio": "audio",
              "files": "files", "moderations": "moderations", "responses": "the Responses API",
              "assistants": "assistants", "threads": "threads", "batches": "batches",
              "fine_tuning": "fine-tuning"}


def not_found(path: str) -> str:
    """The 404 sentence: what the path is, and what is served.

    Example:
        >>> not_found("/v1/embeddings")
        'ttscale does not serve embeddings: it answers /v1/chat/completions, /v1/completions \
and /v1/models'
        >>> not_found("/chat/completions")
        'there is no /chat/completions here: ttscale answers /v1/chat/completions, \
/v1/completions and /v1/models'
    """
    parts = path.strip("/").split("/")
    what = NOT_SERVED.get(parts[1]) if len(parts) > 1 and parts[0] == "v1" else None
    if what:
        return f"ttscale does not serve {what}: it answers {SERVED}"
    return f"there is no {path} here: ttscale answers {SERVED}"


def _validation_message(exc: RequestValidationError) -> str:
    errs = list(exc.errors())
    if not errs:
        return "the request is invalid"
    first = errs[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    where = ".".join(loc)
    kind = first.get("type", "")
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "json_invalid":
        return f"the body is not valid JSON ({first.get('ctx', {}).get('error', msg)}): " \
               "send a JSON object"
    if kind == "extra_forbidden":
        return f"unknown field {where!r}: send the OpenAI fields, and ttscale's own in a " \
               "'ttscale' object"
    if not where and kind in ("missing", "model_attributes_type", "dict_type"):
        return "the body must be a JSON object (Content-Type: application/json)"
    more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
    msg = msg[:1].lower() + msg[1:] if where else msg  # it continues the sentence
    return f"{where}: {msg}{more}" if where else msg + more


def _question(messages: list[ChatMessage]) -> str:
    """The text of the last user message."""
    for m in reversed(messages):
        if m.role != "user":
            continue
        if isinstance(m.content, list):
            if any(p.type != "text" for p in m.content):
                raise ConfigError("only text content is supported: send the question as text")
            return "\n".join(p.text or "" for p in m.content)
        return m.content or ""
    raise ConfigError("messages has no user message: the question is the last user message")


def create_app(backend: Backend, settings: Settings | None = None) -> FastAPI:
    """The OpenAI-compatible app over ``backend`` (built once, shared by every request).

    Example:
        >>> from ttscale.backends.fake import FakeBackend
        >>> app = create_app(FakeBackend(), Settings(max_concurrency=2))
        >>> sorted(r.path for r in app.routes if "v1" in r.path)  # doctest: +NORMALIZE_WHITESPACE
        ['/v1/chat/completions', '/v1/completions', '/v1/models', '/v1/models/{model:path}']
    """
    settings = settings or Settings()
    service = Service(backend, settings)
    metrics = Metrics()
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has let the requests of connected clients finish (for at most
        # shutdown_timeout); whatever still runs is cancelled, its worker stops at the
        # backend's next token.
        service.cancel_all()
        await asyncio.to_thread(service.close)

    app = FastAPI(title="ttscale", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="OpenAI-compatible test-time scaling: every request is answered "
                              "by a strategy (sampling, verifying, voting) over one model.")
    app.state.service = service
    app.state.metrics = metrics
    keys = [k.encode() for k in settings.api_keys]

    async def authorized(
            creds: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        if not keys:
            return
        given = (creds.credentials if creds else "").encode()
        ok = False
        for key in keys:  # no early exit: the time taken says nothing about which key
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise HTTPException(401, "the API key is missing or wrong: send "
                                     "'Authorization: Bearer KEY' with a key given to the "
                                     "server", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> Response:
        return error(400, _validation_message(exc), "invalid_request_error")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        message = str(exc.detail)
        code = {401: "invalid_api_key", 413: "request_too_large"}.get(exc.status_code)
        if exc.status_code == 404:
            message = not_found(request.url.path)
            code = "not_found"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "another method")
            message = f"{request.method} is not allowed on {request.url.path}: use {allowed}"
        type_ = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        return error(exc.status_code, message, type_, code,
                     dict(exc.headers) if exc.headers else None)

    @app.exception_handler(TtscaleError)
    async def _ttscale(_r: Request, exc: TtscaleError) -> Response:
        return error_of(exc)

    @app.exception_handler(Exception)
    async def _bug(_r: Request, exc: Exception) -> Response:
        return error_of(exc)  # still a bug: logged with its traceback

    async def run(kind: responses.Kind, p: Plan, stream: bool,
                  include_usage: bool) -> Response:
        job = service.submit(p, progress=stream)
        if stream:
            return EventStream(_stream(kind, p, job, include_usage), job.cancel,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            result = await job.result()
        except BaseException as exc:
            job.cancel()
            if isinstance(exc, Exception):
                return error_of(exc)
            raise
        return JSON(responses.dumps(responses.response(kind, p, result)))

    async def _stream(kind: responses.Kind, p: Plan, job: Job,
                      include_usage: bool) -> AsyncIterator[bytes]:
        chunks = responses.Chunks(kind, p, include_usage)
        try:
            yield chunks.start()
            while True:
                event = await job.next()
                if event.kind == "result" and event.result is not None:
                    for data in chunks.answer(event.result):
                        yield data
                    return
                if event.kind == "error":
                    raise event.error or RuntimeError(event.message)
                data = chunks.text(event) if event.kind == "text" else chunks.progress(event)
                if data:
                    yield data
        except Exception as exc:  # the status line is sent: the error goes in the stream
            yield responses.sse_error(classify(exc)[1])
        finally:
            job.cancel()  # a client that left stops the worker at its next phase

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Response:
        """Liveness: always open, no API key needed."""
        return JSON(responses.dumps({"status": "ok", "model": service.served[0],
                                     "in_flight": service.running,
                                     "queued": service.queued}))

    @app.get("/metrics", dependencies=[Depends(authorized)], tags=["service"],
             response_class=Response, responses={401: ERRORS[401]})
    async def prometheus() -> Response:
        """Prometheus text: requests, tokens by kind, latency, running and queued."""
        text = metrics.render(prompt_tokens=service.prompt_tokens,
                              completion_tokens=service.completion_tokens,
                              running=service.running, queued=service.queued)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _models() -> list[str]:
        m = service.served[0]
        specs = [settings.default_strategy, "greedy", f"majority@{min(8, settings.max_n)}"]
        return list(dict.fromkeys([m, *(f"{spec}/{m}" for spec in specs)]))

    @app.get("/v1/models", response_model=ModelList, dependencies=[Depends(authorized)],
             responses={401: ERRORS[401]}, tags=["openai"])
    async def list_models() -> Response:
        """The served model, and the same model with some strategies (any STRATEGY@N/MODEL
        works)."""
        cards = [{"id": m, "object": "model", "created": started, "owned_by": "ttscale"}
                 for m in _models()]
        return JSON(responses.dumps({"object": "list", "data": cards}))

    @app.get("/v1/models/{model:path}", response_model=ModelCard,
             dependencies=[Depends(authorized)], tags=["openai"],
             responses={c: ERRORS[c] for c in (400, 401, 404)})
    async def get_model(model: str) -> Response:
        split_model(model, service.served)  # unknown names: 404 with the served name
        card = {"id": model, "object": "model", "created": started, "owned_by": "ttscale"}
        return JSON(responses.dumps(card))

    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["openai"],
              dependencies=[Depends(authorized)], responses={**SSE, **ERRORS})
    async def chat(req: ChatCompletionRequest) -> Response:
        """Answer the last user message with the chosen strategy."""
        opts = req.ttscale or TtscaleOptions()
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
            else req.max_tokens
        p = plan(question=_question(req.messages), model=req.model, served=service.served,
                 settings=settings, strategy=opts.strategy, n=opts.n, verifier=opts.verifier,
                 budget=opts.budget, effort=req.reasoning_effort, max_tokens=max_tokens,
                 temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=req.stop,
                 choices=req.n, traces=opts.traces)
        return await run("chat", p, bool(req.stream), _include_usage(req))

    @app.post("/v1/completions", response_model=Completion, tags=["openai"],
              dependencies=[Depends(authorized)], responses={**SSE, **ERRORS})
    async def complete(req: CompletionRequest) -> Response:
        """Answer the prompt, taken as the question, with the chosen strategy."""
        opts = req.ttscale or TtscaleOptions()
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        p = plan(question=prompt, model=req.model, served=service.served, settings=settings,
                 strategy=opts.strategy, n=opts.n, verifier=opts.verifier, budget=opts.budget,
                 max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                 seed=req.seed, stop=req.stop, choices=req.n, traces=opts.traces)
        return await run("text", p, bool(req.stream), _include_usage(req))

    # Outermost last: metrics see every answer, the 413s of the body limit included.
    too_large = (f"the request body is larger than this server's limit of "
                 f"{settings.max_body_bytes} bytes: send a shorter request")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, message=too_large,
                       refusal=error(413, too_large, "invalid_request_error",
                                     "request_too_large"))
    app.add_middleware(Observe, metrics=metrics)
    return app


def _include_usage(req: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)
