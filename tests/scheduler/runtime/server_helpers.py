"""A real server on loopback for the HTTP tests: what `fairbatch serve` runs, in-process on a free port."""

from __future__ import annotations

import json
import tomllib
from contextlib import asynccontextmanager
from functools import partial

import anyio
import httpx
from prometheus_client import CollectorRegistry

from scheduler.runtime.serving import listen, serve
from sim.serve import serve_config_from_dict, service

# Two simulated H100s whose KV holds ~2,500 tokens each (so prompt_too_long is reachable), three
# tenants, one of them rate limited to one request.
TEST_CONFIG = """
[cluster]
workers = 2

[scheduler]
policy = "vtc"
num_gpu_blocks = 162

[[tenants]]
name = "alice"

[[tenants]]
name = "bob"

[[tenants]]
name = "limited"
rate_limit = { requests_per_s = 0.01, request_burst = 1 }

[serve]
api_keys = { "key-alice" = "alice", "key-bob" = "bob", "key-limited" = "limited" }
max_tokens = 4000
default_max_tokens = 16
max_body_bytes = 8192
"""


def config(text: str = TEST_CONFIG, **serve_keys):
    table = tomllib.loads(text)
    table["serve"].update(serve_keys)
    return serve_config_from_dict(table)


@asynccontextmanager
async def running_server(serve_config=None, speed: float = 0.0):
    """(base url, runtime, registry) of a server that stops when the block ends."""
    registry = CollectorRegistry()
    async with anyio.create_task_group() as task_group:
        served = service(serve_config or config(), speed)
        url, runtime = await task_group.start(partial(serve, served, listen("127.0.0.1", 0), registry=registry))
        yield url, runtime, registry
        task_group.cancel_scope.cancel()


def client(url: str, key: str | None = "key-alice", **kwargs) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=30, **kwargs)


def sse_events(text: str) -> list:
    """The data of each server-sent event, JSON-decoded except the final [DONE]."""
    events = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events
