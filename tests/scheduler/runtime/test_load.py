"""A bounded load test over real HTTP on loopback: hundreds of concurrent streams from four tenants,
one of them flooding at about 2.5 times what the pool can serve.

The same scenario (config, seed, arrival times, lengths) runs through the simulator first. The
HTTP clients replay its arrivals in real time (times x SPEED, the server's step-time scale), and
every request must end exactly once: finished, cancelled (some clients hang up mid-stream) or
rejected with a reason. VTC keeps the flooder from pushing the others' TTFT past what the
simulator predicts, within real-world slack (the event loop, HTTP and SSE parsing share one CPU).
"""

from __future__ import annotations

import json
import time
import tomllib

import anyio
import h11
import numpy as np
import pytest
from server_helpers import running_server

from sim.cluster import Simulation
from sim.results import summarize
from sim.serve import serve_config_from_dict

SPEED = 1.0
QUIET = ("alice", "bob", "carol")
HANG_UP_EVERY = 10  # every 10th request of carol disconnects after a few tokens
SLACK_S = 0.25  # real seconds a request may lose to a busy event loop and HTTP on top of the model
SCENARIO = """
seed = 7
duration_s = 2.0

[cluster]
workers = 1

[scheduler]
policy = "vtc"

[[tenants]]
name = "alice"
rate = 6.0
prompt_tokens = 512
output_tokens = 16

[[tenants]]
name = "bob"
rate = 6.0
prompt_tokens = 256
output_tokens = 16

[[tenants]]
name = "carol"
rate = 6.0
prompt_tokens = 512
output_tokens = 16

[[tenants]]
name = "mallory"
rate = 150.0
prompt_tokens = 512
output_tokens = 16
max_queued = 120

[serve]
api_keys = { "key-alice" = "alice", "key-bob" = "bob", "key-carol" = "carol", "key-mallory" = "mallory" }
"""


class Streams:
    """Streams open now, and the most open at once."""

    def __init__(self) -> None:
        self.open = self.peak = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)


async def replay(url: str, workload, names: list[str], speed: float, streams: Streams) -> list[dict]:
    """Send every request of `workload` at its (scaled) arrival time, streaming; one record each."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    results: list[dict] = []
    start = anyio.current_time()

    async def one(i: int) -> None:
        await anyio.sleep_until(start + float(workload.arrival_s[i]) * speed)
        tenant = names[workload.tenant[i]]
        hang_up = tenant == "carol" and i % HANG_UP_EVERY == 0
        body = {"prompt": "x" * int(workload.prompt_tokens[i]), "max_tokens": int(workload.output_tokens[i]),
                "stream": True}
        client = SSEClient(host, int(port), tenant)
        results.append(await client.complete(body, hang_up, streams) | {"id": i, "tenant": tenant})

    async with anyio.create_task_group() as task_group:
        for i in range(len(workload)):
            task_group.start_soon(one, i)
    return results


class SSEClient:
    """One streamed completion on its own connection, straight on h11: a pooled client's
    bookkeeping would cost more CPU than the server under test, which shares this process."""

    def __init__(self, host: str, port: int, tenant: str) -> None:
        self.host, self.port, self.tenant = host, port, tenant
        self.conn = h11.Connection(h11.CLIENT)

    async def complete(self, body: dict, hang_up: bool, streams: Streams) -> dict:
        payload = json.dumps(body).encode()
        headers = [("host", f"{self.host}:{self.port}"), ("authorization", f"Bearer key-{self.tenant}"),
                   ("content-type", "application/json"), ("content-length", str(len(payload)))]
        sent = time.perf_counter()
        async with await anyio.connect_tcp(self.host, self.port) as self.sock:  # leaving it hangs up
            request = h11.Request(method="POST", target="/v1/completions", headers=headers)
            await self.sock.send(self.conn.send(request) + self.conn.send(h11.Data(data=payload))
                                 + self.conn.send(h11.EndOfMessage()))
            response = await self.next_event()
            if response.status_code != 200:
                error = json.loads(b"".join([chunk async for chunk in self.body()]))["error"]
                return {"outcome": "rejected", "reason": error["code"], "status": response.status_code}
            streams.opened()
            try:
                return await self.read_events(sent, hang_up)
            finally:
                streams.open -= 1

    async def read_events(self, sent: float, hang_up: bool) -> dict:
        tokens, ttft, finish, pending = 0, None, None, b""
        async for chunk in self.body():
            *events, pending = (pending + chunk).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue
                choice = json.loads(event[6:])["choices"][0]
                if choice["finish_reason"] is not None:
                    finish = choice["finish_reason"]
                    continue
                tokens += 1
                ttft = ttft if ttft is not None else time.perf_counter() - sent
                if hang_up and tokens == 3:
                    return {"outcome": "cancelled", "tokens": tokens, "ttft": ttft}
        return {"outcome": "finished" if finish else "broken", "tokens": tokens, "ttft": ttft, "finish": finish}

    async def body(self):
        while isinstance(event := await self.next_event(), h11.Data):
            yield event.data

    async def next_event(self):
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            try:
                self.conn.receive_data(await self.sock.receive(65536))
            except anyio.EndOfStream:
                self.conn.receive_data(b"")
        return event


def percentiles(values) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_flood_over_http_loses_nothing_and_spares_the_others_ttft():
    config = serve_config_from_dict(tomllib.loads(SCENARIO))
    simulation = Simulation(config.sim)
    predicted = summarize(simulation.run())["tenants"]
    workload, names = simulation.workload, config.tenants
    streams = Streams()
    async with running_server(config, speed=SPEED) as (url, runtime, registry):
        results = await replay(url, workload, names, SPEED, streams)
        with anyio.fail_after(10):
            while runtime.live:  # hung-up clients' cancellations land
                await anyio.sleep(0.01)
    figures = report(results, predicted) | {"max_concurrent_streams": streams.peak}
    print(json.dumps(figures, indent=1))
    # Every request ended exactly once, as the client saw it and as the server counted it.
    assert sorted(r["id"] for r in results) == list(range(len(workload))) and len(workload) >= 300
    outcomes = [r["outcome"] for r in results]
    assert set(outcomes) == {"finished", "cancelled", "rejected"}
    counts = runtime.counts
    assert counts["submitted"] == counts["finished"] + counts["cancelled"] + counts["rejected"] == len(workload)
    assert [counts[k] for k in ("finished", "cancelled", "rejected")] == [outcomes.count(k) for k in
                                                                          ("finished", "cancelled", "rejected")]
    assert {r["reason"] for r in results if r["outcome"] == "rejected"} == {"queue_full"}
    assert all(r["tokens"] == workload.output_tokens[r["id"]] for r in results if r["outcome"] == "finished")
    for tenant in names:
        for outcome in ("finished", "cancelled", "rejected"):
            counted = registry.get_sample_value("fairbatch_requests_total", {"tenant": tenant, "outcome": outcome})
            assert counted == sum(1 for r in results if r["tenant"] == tenant and r["outcome"] == outcome)
    assert not runtime.scheduler.live and runtime.scheduler.workers[0].pool.used == 0
    assert figures["max_concurrent_streams"] >= 200
    # The flooder does not push the others' TTFT past the simulator's prediction (+ slack).
    for tenant in QUIET:
        p50, p99 = figures["tenants"][tenant]["ttft_p50_s"], figures["tenants"][tenant]["ttft_p99_s"]
        assert p50 <= SPEED * predicted[tenant]["median_ttft_ms"] / 1e3 + SLACK_S, tenant
        assert p99 <= SPEED * predicted[tenant]["p99_ttft_ms"] / 1e3 + SLACK_S, tenant
    assert figures["tenants"]["mallory"]["ttft_p50_s"] > 3 * max(figures["tenants"][t]["ttft_p50_s"] for t in QUIET)


def report(results: list[dict], predicted: dict) -> dict:
    """Requests, outcomes and per-tenant TTFT percentiles (real seconds) next to the prediction."""
    figures = {"requests": len(results), "outcomes": {}, "tenants": {}}
    for r in results:
        key = r["outcome"] if r["outcome"] != "rejected" else f"rejected:{r['reason']}"
        figures["outcomes"][key] = figures["outcomes"].get(key, 0) + 1
    for tenant in sorted({r["tenant"] for r in results}):
        ttfts = [r["ttft"] for r in results if r["tenant"] == tenant and r.get("ttft") is not None]
        p50, p99 = percentiles(ttfts)
        figures["tenants"][tenant] = {"streams": len(ttfts), "ttft_p50_s": round(p50, 4), "ttft_p99_s": round(p99, 4),
                                      "predicted_p50_s": round(predicted[tenant]["median_ttft_ms"] / 1e3, 4),
                                      "predicted_p99_s": round(predicted[tenant]["p99_ttft_ms"] / 1e3, 4)}
    return figures
