"""The OpenAI-compatible HTTP app (ASGI, on starlette) around a running `Runtime`.

Routes: POST /v1/completions and /v1/chat/completions (streamed as server-sent events or whole,
with `usage`), POST /tokenize and /detokenize (vLLM's, with the serving tokenizer, behind a
tenant's key), GET /v1/models, /v1/models/{id}, /health and /metrics (Prometheus text; behind a
bearer key when one is configured). A bearer API key names the tenant. Refusals are JSON errors in
OpenAI's shape whose `code` is the reason: 401 for a missing or unknown key (unless a default tenant
is configured), 400 for bad input (naming the field), `invalid_request` and `prompt_too_long`, 404
`model_not_found`, 408 for a body not sent within `read_timeout_s`, 429 with Retry-After for
`rate_limited` and `queue_full`, 400 without it for a request its tenant's quota can never admit,
503 for `no_workers`. A refusal tells a tenant only its own figures. A client that disconnects
cancels its request, which frees its KV blocks; one that disconnects before its body is read is a
debug log line. Response ids are random (`cmpl-<hex>`), so one tenant cannot count another's.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from scheduler.outcomes import FinishReason, RejectReason
from scheduler.request import Request

from . import api, tokenization
from .driver import Runtime
from .handle import RequestCancelled, RequestHandle, RequestRejected

log = logging.getLogger("fairbatch.server")

STATUS = {RejectReason.RATE_LIMITED: 429, RejectReason.QUEUE_FULL: 429, RejectReason.INVALID_REQUEST: 400,
          RejectReason.PROMPT_TOO_LONG: 400, RejectReason.NO_WORKERS: 503, RejectReason.UNKNOWN_TENANT: 403}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 429: "rate_limit_error",
               503: "service_unavailable_error"}
REQUEST_ERRORS = {"model_not_found"}  # 404s that OpenAI types as invalid_request_error
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    limits: api.Limits
    api_keys: Mapping[str, str] = field(default_factory=dict)  # bearer key -> tenant
    default_tenant: str | None = None  # for a missing or unknown key; None: 401
    max_body_bytes: int = 1 << 20
    read_timeout_s: float = 30.0  # the longest a request body may take to arrive, after its headers
    keep_alive_timeout_s: float = 5.0  # an idle connection, or one still sending headers, is closed then
    metrics_key: str | None = None  # a bearer key /metrics (and /health's figures) require; None: open
    stream_interval: int = 1  # tokens per streamed write after the first one


class Refused(Exception):
    """An HTTP error answer: status, OpenAI error body, headers."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra) -> None:
        super().__init__(message)
        self.status = status
        kind = "invalid_request_error" if code in REQUEST_ERRORS else ERROR_TYPES.get(status, "server_error")
        self.body = api.error(message, kind, code, param, **extra)
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, self.status, self.headers)


def refusal(err: RequestRejected) -> Refused:
    """The answer to a rejection. A rate-limited request that can never fit its tenant's bucket
    (retry_after None) is a 400 without Retry-After: retrying cannot help."""
    reason = err.reason.value
    status = STATUS.get(err.reason, 400)
    never = err.reason is RejectReason.RATE_LIMITED and err.retry_after is None
    if never:
        status = 400
    headers = {}
    if status == 429:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after or 1)))
    return Refused(status, f"{reason}: {err.detail}", reason, headers=headers, reason=reason)


class Disconnected(Exception):
    """The client went away before its request body arrived."""


class Server:
    """The app's handlers: one Runtime, one tenant map, one metrics registry."""

    def __init__(self, runtime: Runtime, config: ServerConfig, registry: CollectorRegistry | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.config = config
        self.registry = registry
        self.wall_clock = wall_clock

    def app(self) -> Starlette:
        routes = [
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})

    # ----- completions --------------------------------------------------------------------------

    async def completions(self, request: HTTPRequest) -> Response:
        return await self._complete(request, api.COMPLETION)

    async def chat_completions(self, request: HTTPRequest) -> Response:
        return await self._complete(request, api.CHAT)

    async def _complete(self, request: HTTPRequest, kind: str) -> Response:
        try:
            tenant = self._tenant(request)
            handle, parsed, rid = await self._submit(request, kind, tenant)
        except Refused as err:
            return err.response()
        except Disconnected:
            log.debug("client %s disconnected before sending its whole request body", _peer(request))
            return Response(status_code=400)  # nobody reads it
        created = int(self.wall_clock())
        if parsed.stream:
            return EventStream(handle, parsed, rid, created, self.config.stream_interval)
        return await self._whole(request, handle, parsed, rid, created)

    def _tenant(self, request: HTTPRequest) -> str:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        tenant = self.config.api_keys.get(key.strip()) if scheme.lower() == "bearer" else None
        if tenant is None:
            tenant = self.config.default_tenant
        if tenant is None:
            raise Refused(401, "missing or unknown API key: send Authorization: Bearer <key>", "invalid_api_key",
                          headers={"WWW-Authenticate": "Bearer"})
        return tenant

    async def _submit(self, request: HTTPRequest, kind: str, tenant: str) -> tuple[RequestHandle, api.Completion, str]:
        try:
            parsed = api.parse(await self._body(request), kind, self.config.limits)
        except api.BadRequest as err:
            if self.runtime.metrics is not None:
                self.runtime.metrics.rejected(tenant, RejectReason.INVALID_REQUEST)
            raise Refused(err.status, err.message, err.code, err.param) from None
        rid = f"{'chatcmpl' if kind == api.CHAT else 'cmpl'}-{secrets.token_hex(16)}"
        try:
            request = Request(rid, tenant, parsed.prompt_tokens, parsed.max_tokens, prefix=api.prompt_prefix(parsed))
            handle = self.runtime.submit(request, parsed)
        except RequestRejected as err:
            raise refusal(err) from None
        return handle, parsed, rid

    async def _body(self, request: HTTPRequest) -> bytes:
        """The request body, read within read_timeout_s (408 after), at most max_body_bytes."""
        timeout = self.config.read_timeout_s
        try:
            with anyio.fail_after(timeout):
                return await self._read_body(request)
        except ClientDisconnect:
            raise Disconnected from None
        except TimeoutError:
            raise Refused(408, f"body: not received within {timeout:g} s; send the whole body at once",
                          "request_timeout", "body", headers={"Connection": "close"}) from None

    async def _read_body(self, request: HTTPRequest) -> bytes:
        limit = self.config.max_body_bytes
        too_big = api.BadRequest("body", f"body: larger than the {limit} bytes allowed", "body_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def _whole(self, request: HTTPRequest, handle: RequestHandle, parsed: api.Completion, rid: str,
                     created: int) -> Response:
        result: list = []
        text = api.StopText(parsed.stop)

        async def collect() -> None:
            try:
                pieces = [piece async for batch in _batches(handle, text) for piece in batch]
                result.append("".join(pieces) + text.flush())
            except RequestCancelled as err:
                result.append(err)

        async with handle:
            await _unless_disconnected(request.receive, handle, collect)
        if not result or isinstance(result[0], RequestCancelled):
            reason = result[0].reason if result else FinishReason.CLIENT_DISCONNECTED
            return Refused(503, f"the request was cancelled: {reason}", reason).response()
        return JSONResponse(api.response(parsed, rid, created, result[0], _finish(handle, text), text.tokens))

    # ----- vLLM's /tokenize and /detokenize (scheduler.runtime.tokenization) ----------------------

    async def tokenize(self, request: HTTPRequest) -> Response:
        max_model_len = self.runtime.scheduler.max_sequence_tokens
        return await self._tokenization(request, lambda body: tokenization.tokenize(body, self.config.limits,
                                                                                    max_model_len))

    async def detokenize(self, request: HTTPRequest) -> Response:
        return await self._tokenization(request, lambda body: tokenization.detokenize(body, self.config.limits))

    async def _tokenization(self, request: HTTPRequest, answer: Callable[[bytes], dict]) -> Response:
        """A tenant's tokenizer request: the same key as a completion, nothing submitted."""
        try:
            self._tenant(request)
            return JSONResponse(answer(await self._body(request)))
        except api.BadRequest as err:
            return Refused(err.status, err.message, err.code, err.param).response()
        except Refused as err:
            return err.response()
        except Disconnected:
            return Response(status_code=400)  # nobody reads it

    # ----- the rest -----------------------------------------------------------------------------

    async def models(self, request: HTTPRequest) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: HTTPRequest) -> Response:
        limits = self.config.limits
        model_id = request.path_params["model_id"]
        if model_id != limits.model:
            err = api.model_not_found(model_id, limits)
            return Refused(err.status, err.message, err.code, err.param).response()
        return JSONResponse(self._model_card())

    def _model_card(self) -> dict:
        return {"id": self.config.limits.model, "object": "model", "created": 0, "owned_by": "fairbatch"}

    async def health(self, request: HTTPRequest) -> Response:
        """Status, and the pool's figures for whoever may read /metrics."""
        scheduler = self.runtime.scheduler
        workers = scheduler.num_workers
        ok = self.runtime.running and workers > 0
        body = {"status": "ok" if ok else "unavailable"}
        if self._may_read_metrics(request):
            body.update(workers=workers, running=scheduler.num_running, waiting=scheduler.num_waiting)
        return JSONResponse(body, 200 if ok else 503)

    async def metrics(self, request: HTTPRequest) -> Response:
        if self.registry is None:
            raise HTTPException(404)
        if not self._may_read_metrics(request):
            return Refused(401, "/metrics: needs the metrics key: send Authorization: Bearer <metrics_key>",
                           "invalid_api_key", headers={"WWW-Authenticate": "Bearer"}).response()
        self.runtime.sample_metrics()
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def _may_read_metrics(self, request: HTTPRequest) -> bool:
        expected = self.config.metrics_key
        if expected is None:
            return True
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(key.strip().encode(), expected.encode())


class EventStream:
    """A streamed answer (server-sent events) that owns its request: the request is cancelled if
    the client disconnects or the response fails before the end."""

    def __init__(self, handle: RequestHandle, parsed: api.Completion, rid: str, created: int,
                 interval: int = 1) -> None:
        self.handle = handle
        self.parsed = parsed
        self.rid = rid
        self.created = created
        self.interval = interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with self.handle:
                await _unless_disconnected(receive, self.handle, lambda: self._stream(send))
        finally:
            self.handle.cancel(FinishReason.ABORTED)  # a no-op once it ended

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        parsed, rid, created = self.parsed, self.rid, self.created
        text = api.StopText(parsed.stop)
        tokens = api.TokenEvents(parsed, rid, created)
        first = True
        try:
            async for pieces in _batches(self.handle, text, self.interval):
                # An event per token by default, every token that came since the last write in one
                # write; with a stream interval, one event per write (SGLang's).
                texts = pieces if self.interval == 1 else ["".join(pieces)]
                await send({"type": "http.response.body", "body": tokens.encode(texts, first), "more_body": True})
                first = False
        except RequestCancelled as err:
            events = [api.error(str(err), "server_error", err.reason)]
        else:
            rest = text.flush()  # held back for a stop sequence that did not come
            role = first and parsed.kind == api.CHAT  # a chat stream names the role even with no text
            events = [api.chunk(parsed, rid, created, rest, first=first)] if rest or role else []
            events.append(api.chunk(parsed, rid, created, None, _finish(self.handle, text)))
            if parsed.include_usage:
                events.append(api.usage_chunk(parsed, rid, created, text.tokens))
        body = b"".join(api.sse(event) for event in events) + api.sse("[DONE]")
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _finish(handle: RequestHandle, text: api.StopText) -> FinishReason:
    """Why the output ended: STOP whenever a stop sequence cut it, even in the request's last token."""
    return FinishReason.STOP if text.stopped else handle.reason


async def _batches(handle: RequestHandle, text: api.StopText, interval: int = 1):
    """Lists of the pieces of output text to send in one write: the first token's at once, then
    every `interval` tokens' (or all that have piled up for a stream that fell behind), and what
    is left at the end; the request ends as finished at a stop sequence."""
    pieces, due = [], 1  # tokens still to come before the next write
    try:
        async for token in handle:
            for token in [token, *handle.buffered()]:
                piece = text.feed(token)
                if piece or not text.stop:
                    pieces.append(piece)
                due -= 1
                if text.stopped:
                    handle.finish(FinishReason.STOP)
                    break
            if pieces and (due <= 0 or text.stopped):
                yield pieces
                pieces, due = [], interval
            if text.stopped:
                return
    except RequestCancelled:
        if pieces:
            yield pieces  # what it produced before it was cut off
        raise
    if pieces:
        yield pieces


async def _unless_disconnected(receive: Receive, handle: RequestHandle, work: Callable) -> None:
    """Run `work()`; if the client disconnects first, cancel the request and stop."""
    async with anyio.create_task_group() as task_group:
        async def run() -> None:
            try:
                await work()
            except OSError:  # the connection broke while we wrote: the client is gone
                handle.cancel(FinishReason.CLIENT_DISCONNECTED)
            task_group.cancel_scope.cancel()

        task_group.start_soon(run)
        while (await receive())["type"] != "http.disconnect":
            pass
        handle.cancel(FinishReason.CLIENT_DISCONNECTED)
        task_group.cancel_scope.cancel()


def _peer(request: HTTPRequest) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"


async def _http_error(request: HTTPRequest, exc: HTTPException) -> Response:
    return Refused(exc.status_code, exc.detail, f"http_{exc.status_code}").response()
