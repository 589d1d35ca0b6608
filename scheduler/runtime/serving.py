"""A serving process: a `Runtime` and the HTTP app on hypercorn, on a socket bound beforehand.

`serve` runs on asyncio or trio (whichever anyio runs it on) until its shutdown trigger returns or
it is cancelled, and shuts down gracefully either way; a service with a `TraceFile` records the
timeline trace meanwhile and writes it when serving ends, however it ends. `run` is the blocking
entry point of a command: it serves until SIGINT or SIGTERM. Needs the `serve` extra (starlette,
hypercorn).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.abc
from prometheus_client import CollectorRegistry

from scheduler.core import Scheduler
from scheduler.errors import ConfigError
from scheduler.metrics import Metrics

from .driver import DEFAULT_STREAM_BUFFER, Runtime
from .server import Server, ServerConfig
from .trace_file import TraceFile
from .worker import Worker


@dataclass(frozen=True, slots=True)
class Service:
    """What a process serves: a scheduler, its workers, the HTTP settings, and where its timeline
    trace goes (None: no trace)."""

    scheduler: Scheduler
    workers: Mapping[int, Worker]
    server: ServerConfig
    stream_buffer: int = DEFAULT_STREAM_BUFFER
    trace: TraceFile | None = None


async def serve(service: Service, sock: socket.socket, *, registry: CollectorRegistry | None = None,
                shutdown: Callable[[], Awaitable[Any]] = anyio.sleep_forever,
                task_status: anyio.abc.TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve on a listening socket (see `listen`); report `(url, runtime)` through task_status."""
    registry = registry if registry is not None else CollectorRegistry()
    tenants = [tenant.name for tenant in service.scheduler.tenants]
    trace = None if service.trace is None else service.trace.recorder(tenants, service.workers)
    try:
        async with Runtime(service.scheduler, service.workers, metrics=Metrics(registry, tenants),
                           stream_buffer=service.stream_buffer, trace=trace) as runtime:
            app = Server(runtime, service.server, registry).app()
            task_status.started((url_of(sock), runtime))
            await _hypercorn(app, sock, shutdown, service.server)
    finally:
        if trace is not None:  # after the runtime has ended what was live, so every request is closed
            # A blocking write, and no await: it runs under a cancellation too, and nothing is left to serve.
            service.trace.write(trace)


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening TCP socket (port 0: a free one); bound first, so a bad address is a clean error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except (OSError, OverflowError) as err:
        sock.close()
        raise ConfigError(f"--host/--port: cannot listen on {host}:{port}: {getattr(err, 'strerror', err)}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(service: Service, sock: socket.socket, on_ready: Callable[[str], None] = print) -> None:
    """Serve until SIGINT or SIGTERM, then drain gracefully; `on_ready(url)` once listening."""
    try:
        anyio.run(_serve_until_signal, service, sock, on_ready)
    except* ConfigError as errors:  # a trace that cannot be written at shutdown: one line, not a task group's traceback
        error = errors.exceptions[0]
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error from None


async def _serve_until_signal(service: Service, sock: socket.socket, on_ready: Callable[[str], None]) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as task_group:
        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    stop.set()
                    return

        task_group.start_soon(watch_signals)
        url, _ = await task_group.start(partial(serve, service, sock, shutdown=stop.wait))
        on_ready(url)
        await stop.wait()


async def _hypercorn(app, sock: socket.socket, shutdown: Callable[[], Awaitable[Any]], http: ServerConfig) -> None:
    """Run hypercorn until `shutdown()` returns or this task is cancelled; either way it shuts
    down gracefully (hypercorn's asyncio server must not be cancelled from outside)."""
    stop = anyio.Event()

    async def trigger() -> None:
        try:
            await shutdown()
        finally:
            stop.set()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(trigger)
        with anyio.CancelScope(shield=True):
            await _hypercorn_serve(app, sock, stop.wait, http)
        task_group.cancel_scope.cancel()


async def _hypercorn_serve(app, sock: socket.socket, shutdown: Callable[[], Awaitable[Any]],
                           http: ServerConfig) -> None:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the listening socket from here
    config.accesslog = None
    config.graceful_timeout = 1.0  # streams still open then are cut (their requests are cancelled)
    # A connection that is idle, or has not sent all its headers (at most h11_max_incomplete_size,
    # 16 KiB), is closed after keep_alive_timeout; a stalled body is the app's read_timeout_s (408).
    # hypercorn's own read_timeout is left unset: it times every socket read, so it would also cut
    # a long answer whose client, rightly, sends nothing while it streams.
    config.keep_alive_timeout = http.keep_alive_timeout_s
    if _on_trio():
        from hypercorn.trio import serve as hypercorn_serve
    else:
        from hypercorn.asyncio import serve as hypercorn_serve
    await hypercorn_serve(app, config, shutdown_trigger=shutdown)


def _on_trio() -> bool:
    try:
        import trio

        trio.lowlevel.current_task()
    except (ImportError, RuntimeError):  # RuntimeError: not inside trio.run
        return False
    return True
