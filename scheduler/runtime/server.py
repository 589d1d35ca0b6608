"""The OpenAI-compatible HTTP app (ASGI, on starlette) around a running `Runtime`.

Routes: POST /v1/completions and /v1/chat/completions (streamed as server-sent events or whole,
with `usage`), GET /v1/models, /health and /metrics (Prometheus text). A bearer API key names the
tenant. Refusals are JSON errors in OpenAI's shape whose `code` is the reason: 401 for a missing or
unknown key (unless a default tenant is configured), 400 for bad input (naming the field),
`invalid_request` and `prompt_too_long`, 429 with Retry-After for `rate_limited` and `queue_full`,
503 for `no_workers`. A client that disconnects cancels its request, which frees its KV blocks.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from scheduler.request import Request

from . import api
from .driver import Runtime
from .handle import RequestCancelled, RequestHandle, RequestRejected

STATUS = {"rate_limited": 429, "queue_full": 429, "invalid_request": 400, "prompt_too_long": 400,
          "no_workers": 503, "unknown_tenant": 403}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 429: "rate_limit_error",
               503: "service_unavailable_error"}
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    limits: api.Limits
    api_keys: Mapping[str, str] = field(default_factory=dict)  # bearer key -> tenant
    default_tenant: str | None = None  # for a missing or unknown key; None: 401
    max_body_bytes: int = 1 << 20


class Refused(Exception):
    """An HTTP error answer: status, OpenAI error body, headers."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.body = api.error(message, ERROR_TYPES.get(status, "server_error"), code, param, **extra)
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, self.status, self.headers)


def refusal(err: RequestRejected) -> Refused:
    reason = err.reason.value
    status = STATUS.get(reason, 400)
    headers = {}
    if status == 429:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after or 1)))
    return Refused(status, f"{reason}: {err.detail}", reason, headers=headers, reason=reason)


class Server:
    """The app's handlers: one Runtime, one tenant map, one metrics registry."""

    def __init__(self, runtime: Runtime, config: ServerConfig, registry: CollectorRegistry | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.config = config
        self.registry = registry
        self.wall_clock = wall_clock
        self._ids = itertools.count(1)

    def app(self) -> Starlette:
        routes = [
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
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
        created = int(self.wall_clock())
        if parsed.stream:
            return EventStream(handle, parsed, rid, created)
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
                self.runtime.metrics.rejected(tenant, "invalid_request")
            raise Refused(400, err.message, err.code, err.param) from None
        rid = f"{'chatcmpl' if kind == api.CHAT else 'cmpl'}-{next(self._ids)}"
        try:
            handle = self.runtime.submit(Request(rid, tenant, parsed.prompt_tokens, parsed.max_tokens), parsed)
        except RequestRejected as err:
            raise refusal(err) from None
        return handle, parsed, rid

    async def _body(self, request: HTTPRequest) -> bytes:
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

        async def collect() -> None:
            try:
                result.append(await handle.collect())
            except RequestCancelled as err:
                result.append(err)

        async with handle:
            await _unless_disconnected(request.receive, handle, collect)
        if not result or isinstance(result[0], RequestCancelled):
            reason = result[0].reason if result else "client_disconnected"
            return Refused(503, f"the request was cancelled: {reason}", reason).response()
        body = api.response(parsed, rid, created, "".join(result[0]), handle.reason, handle.tokens)
        return JSONResponse(body)

    # ----- the rest -----------------------------------------------------------------------------

    async def models(self, request: HTTPRequest) -> Response:
        model = {"id": self.config.limits.model, "object": "model", "created": 0, "owned_by": "fairbatch"}
        return JSONResponse({"object": "list", "data": [model]})

    async def health(self, request: HTTPRequest) -> Response:
        scheduler = self.runtime.scheduler
        workers = len(scheduler.workers)
        ok = self.runtime.running and workers > 0
        body = {"status": "ok" if ok else "unavailable", "workers": workers, "running": scheduler.num_running,
                "waiting": scheduler.num_waiting}
        return JSONResponse(body, 200 if ok else 503)

    async def metrics(self, request: HTTPRequest) -> Response:
        if self.registry is None:
            raise HTTPException(404)
        self.runtime.sample_metrics()
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class EventStream:
    """A streamed answer (server-sent events) that owns its request: the request is cancelled if
    the client disconnects or the response fails before the end."""

    def __init__(self, handle: RequestHandle, parsed: api.Completion, rid: str, created: int) -> None:
        self.handle = handle
        self.parsed = parsed
        self.rid = rid
        self.created = created

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with self.handle:
                await _unless_disconnected(receive, self.handle, lambda: self._stream(send))
        finally:
            self.handle.cancel("aborted")  # a no-op once it ended

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        parsed, rid, created = self.parsed, self.rid, self.created
        try:
            first = True
            async for token in self.handle:
                event = api.chunk(parsed, rid, created, token, first=first)
                await send({"type": "http.response.body", "body": api.sse(event), "more_body": True})
                first = False
        except RequestCancelled as err:
            events = [api.error(str(err), "server_error", err.reason)]
        else:
            events = [api.chunk(parsed, rid, created, None, self.handle.reason)]
            if parsed.include_usage:
                events.append(api.usage_chunk(parsed, rid, created, self.handle.tokens))
        body = b"".join(api.sse(event) for event in events) + api.sse("[DONE]")
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _unless_disconnected(receive: Receive, handle: RequestHandle, work: Callable) -> None:
    """Run `work()`; if the client disconnects first, cancel the request and stop."""
    async with anyio.create_task_group() as task_group:
        async def run() -> None:
            try:
                await work()
            except OSError:  # the connection broke while we wrote: the client is gone
                handle.cancel("client_disconnected")
            task_group.cancel_scope.cancel()

        task_group.start_soon(run)
        while (await receive())["type"] != "http.disconnect":
            pass
        handle.cancel("client_disconnected")
        task_group.cancel_scope.cancel()


async def _http_error(request: HTTPRequest, exc: HTTPException) -> Response:
    return Refused(exc.status_code, exc.detail, f"http_{exc.status_code}").response()
