"""Serving under load, over real sockets on loopback: a tenant's flood, /health during it, and
how many streamed tokens a serving process delivers per core.

    python -m benchmarks.serving [flood|health|throughput|all] [--streams N[,N]] [--seconds S] [--repeat N]

flood   four tenants on one simulated H100, one of them (mallory) flooding at about 2.5 times what
        it can serve, replayed in real time over HTTP against an in-process `fairbatch serve`:
        every tenant's TTFT p50/p99 next to what the simulator predicts for the same arrivals, the
        flooder's median TTFT over the quiet tenants' (VTC keeps it above 3), and the most flood
        requests admitted while one quiet request waited (its order of service).
health  N streams (default 500) held open against `fairbatch serve` in a child process while a
        third process asks for /health every 20 ms: latency p50/p99/max with the streams open, next
        to the same probe of the idle server in the same run, and the streams open meanwhile.
throughput  N clients (100 and 500 by default), each streaming one answer after another from
        `fairbatch serve --speed 0` in a child process: the token events they receive per second,
        and per CPU second of the server process (/proc/PID/stat), so per core; then one tenant at
        half the pool's capacity (`--load`) replayed from a child process against an in-process
        server at `--speed 1`: each request's TTFT as the client saw it, what the runtime adds over
        the simulated GPU's time, what HTTP adds on either side, and the simulator's TTFT of the
        same arrivals.

The load clients speak HTTP/1.1 straight on h11, one connection per stream: a pooled client's
bookkeeping would cost more CPU than the server under test. Every figure here is wall-clock and
depends on the machine; tests/scheduler/runtime/test_load.py checks, on the same flood, only what
does not (every request ends exactly once, the counts agree with /metrics, the order of service).
Needs the `serve` extra: pip install -e '.[serve]'.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import h11
import numpy as np

FLOOD = """
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
QUIET, FLOODER = ("alice", "bob", "carol"), "mallory"
HANG_UP_EVERY = 10  # every 10th request of carol's disconnects after a few tokens
HANG_UP_AFTER = 3  # tokens

# One simulated H100 serving Llama-3-8B, with room for every stream in its queue; long answers
# (paced by the simulated step time) keep the streams open while /health is probed.
HOLD = """
[cluster]
workers = 1

[scheduler]
policy = "vtc"

[[tenants]]
name = "hold"
max_queued = 100000

[serve]
api_keys = { "key-hold" = "hold" }
max_tokens = 100000
"""
PROBE_INTERVAL_S = 0.02
# A health check's own budget: Kubernetes gives a probe 1 s by default (timeoutSeconds; V1Probe,
# kubernetes-client docs) before it counts a failure.
HEALTH_BUDGET_S = 1.0


def prompt(tokens: int, unique: int | None = None) -> str:
    """A prompt of `tokens` tokens under the server's byte-level count (one token per byte). With
    `unique`, it starts with that number, so that it shares no cached prefix with another request
    (as the simulated workload it replays shares none)."""
    head = "" if unique is None else f"{unique}:"
    return (head + "x" * tokens)[:tokens]


def prompt_index(text: str) -> int:
    """The number a `prompt(..., unique=i)` starts with."""
    return int(text.split(":", 1)[0])


# ----- the load client --------------------------------------------------------------------------


class Streams:
    """Streams open now, the most open at once, and the token events drained clients received."""

    def __init__(self) -> None:
        self.open = self.peak = self.tokens = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1


# Every token event of a completion stream has it, and no other event does (the last carries its
# reason); it cannot overlap itself, so counting it in a stream cut anywhere counts each event once.
TOKEN_MARK = b'"finish_reason":null'


def token_events(tail: bytes, chunk: bytes) -> tuple[int, bytes]:
    """The token events that end in `chunk` of a stream whose bytes so far end with `tail`, and
    the tail to go on with (the stream may be cut anywhere, even inside an event)."""
    seen = tail + chunk
    return seen.count(TOKEN_MARK), seen[-(len(TOKEN_MARK) - 1):]


class SSEClient:
    """One streamed completion on its own connection, straight on h11."""

    def __init__(self, url: str, key: str) -> None:
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port, self.key = int(port), key
        self.conn = h11.Connection(h11.CLIENT)

    async def complete(self, body: dict, streams: Streams, hang_up_after: int | None = None,
                       drain: bool = False) -> dict:
        """Send `body` and read its events: a record of the outcome, tokens and TTFT (seconds);
        `drain` reads the bytes without parsing them (the cheapest client there is), only counting
        the token events into `streams.tokens`."""
        payload = json.dumps(body).encode()
        headers = [("host", f"{self.host}:{self.port}"), ("authorization", f"Bearer {self.key}"),
                   ("content-type", "application/json"), ("content-length", str(len(payload)))]
        sent = time.perf_counter()
        async with await anyio.connect_tcp(self.host, self.port) as self.sock:  # leaving it hangs up
            connected = time.perf_counter()
            request = h11.Request(method="POST", target="/v1/completions", headers=headers)
            await self.sock.send(self.conn.send(request) + self.conn.send(h11.Data(data=payload))
                                 + self.conn.send(h11.EndOfMessage()))
            written = time.perf_counter()
            response = await self.next_event()
            if response.status_code != 200:
                error = json.loads(b"".join([chunk async for chunk in self.body()]))["error"]
                return {"outcome": "rejected", "reason": error["code"], "status": response.status_code}
            streams.opened()
            try:
                if drain:
                    await self.count_tokens(streams)
                    return {"outcome": "drained"}
                return await self.read_events(sent, hang_up_after) | {"sent": sent, "connected": connected,
                                                                      "written": written}
            finally:
                streams.closed()

    async def read_events(self, sent: float, hang_up_after: int | None) -> dict:
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
                if tokens == hang_up_after:
                    return {"outcome": "cancelled", "tokens": tokens, "ttft": ttft}
        return {"outcome": "finished" if finish else "broken", "tokens": tokens, "ttft": ttft, "finish": finish}

    async def count_tokens(self, streams: Streams) -> None:
        tail = b""
        async for chunk in self.body():
            count, tail = token_events(tail, chunk)
            streams.tokens += count

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


# ----- flood: TTFT under a flood, and the order of service ----------------------------------------


class AdmissionLog:
    """A runtime's metrics, passed through, that also record each admission in order:
    (tenant, arrival, admitted at), and each first token: (arrival, first token) by the index its
    prompt starts with (`prompt_index`); times from the runtime's clock."""

    def __init__(self, metrics: Any) -> None:
        self.inner = metrics
        self.rows: list[tuple[str, float, float]] = []
        self.first: dict[int, tuple[float, float]] = {}

    def admitted(self, handle: Any) -> None:
        self.rows.append((handle.tenant, handle.arrival, handle.admitted_at))
        self.inner.admitted(handle)

    def first_token(self, handle: Any) -> None:
        self.first[prompt_index(handle.payload.prompt)] = (handle.arrival, handle.first_token_at)
        self.inner.first_token(handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def overtaken(rows: Sequence[tuple[str, float, float]], quiet: Sequence[str], flooder: str) -> dict[str, int]:
    """Per quiet tenant, the most of `flooder`'s requests admitted after one of its requests arrived
    and before it was admitted. Times are only compared, so the figure does not depend on how fast
    the machine is; a fair policy keeps it near 0, FCFS lets the flooder's whole queue go first."""
    tenants = np.array([row[0] for row in rows])
    arrival, admitted = (np.array([row[i] for row in rows], dtype=float) for i in (1, 2))
    flood = np.sort(admitted[tenants == flooder])
    result = {}
    for tenant in quiet:
        mine = tenants == tenant
        ahead = np.searchsorted(flood, admitted[mine], "left") - np.searchsorted(flood, arrival[mine], "right")
        result[tenant] = int(np.maximum(ahead, 0).max(initial=0))
    return result


async def replay(url: str, workload: Any, names: Sequence[str], streams: Streams, speed: float = 1.0,
                 hang_up: Callable[[int, str], bool] = lambda i, tenant: False) -> list[dict]:
    """Send every request of `workload` at its arrival time (x `speed`), streaming; one record each,
    with its index `id` and `tenant`. Requests for which `hang_up(i, tenant)` disconnect early."""
    results: list[dict] = []
    start = anyio.current_time()

    async def one(i: int) -> None:
        await anyio.sleep_until(start + float(workload.arrival_s[i]) * speed)
        tenant = names[workload.tenant[i]]
        body = {"prompt": prompt(int(workload.prompt_tokens[i]), unique=i), "max_tokens": int(workload.output_tokens[i]),
                "stream": True}
        after = HANG_UP_AFTER if hang_up(i, tenant) else None
        record = await SSEClient(url, f"key-{tenant}").complete(body, streams, after)
        results.append(record | {"id": i, "tenant": tenant})

    async with anyio.create_task_group() as task_group:
        for i in range(len(workload)):
            task_group.start_soon(one, i)
    return results


def carol_hangs_up(i: int, tenant: str) -> bool:
    return tenant == "carol" and i % HANG_UP_EVERY == 0


async def run_flood(speed: float = 1.0) -> dict:
    """The flood against an in-process server: what the clients saw, the server's counts, its
    /metrics text, the admission log and the simulator's prediction for the same arrivals."""
    from prometheus_client import CollectorRegistry

    from scheduler.runtime.serving import listen, serve
    from sim.cluster import Simulation
    from sim.results import summarize
    from sim.serve import serve_config_from_dict, service

    config = serve_config_from_dict(tomllib.loads(FLOOD))
    simulation = Simulation(config.sim)
    predicted = summarize(simulation.run())["tenants"]
    registry, streams = CollectorRegistry(), Streams()
    async with anyio.create_task_group() as task_group:
        served = partial(serve, service(config, speed), listen("127.0.0.1", 0), registry=registry)
        url, runtime = await task_group.start(served)
        runtime.metrics = log = AdmissionLog(runtime.metrics)
        results = await replay(url, simulation.workload, config.tenants, streams, speed, carol_hangs_up)
        with anyio.fail_after(60):  # a hang guard: the hung-up clients' cancellations land at once
            while runtime.live:
                await anyio.sleep(0.01)
        status, metrics = await anyio.to_thread.run_sync(fetch, url, "/metrics")
        task_group.cancel_scope.cancel()
    return {"results": results, "counts": dict(runtime.counts), "metrics": metrics, "admissions": log.rows,
            "predicted": predicted, "workload": simulation.workload, "tenants": config.tenants,
            "peak_streams": streams.peak, "kv_used": [runtime.scheduler.kv_usage(w).used for w in runtime.scheduler.worker_ids()]}


def flood_figures(run: dict) -> dict:
    """Outcomes, per-tenant TTFT percentiles (real seconds) next to the prediction, the flooder's
    median over the quiet tenants' and the order of service."""
    results, predicted = run["results"], run["predicted"]
    outcomes: dict[str, int] = {}
    for r in results:
        key = r["outcome"] if r["outcome"] != "rejected" else f"rejected:{r['reason']}"
        outcomes[key] = outcomes.get(key, 0) + 1
    tenants = {}
    for tenant in run["tenants"]:
        ttfts = [r["ttft"] for r in results if r["tenant"] == tenant and r.get("ttft") is not None]
        tenants[tenant] = {"streams": len(ttfts), "ttft_p50_s": _pct(ttfts, 50), "ttft_p99_s": _pct(ttfts, 99),
                           "predicted_p50_s": predicted[tenant]["median_ttft_ms"] / 1e3,
                           "predicted_p99_s": predicted[tenant]["p99_ttft_ms"] / 1e3}
    quiet_p50 = max(tenants[t]["ttft_p50_s"] for t in QUIET)
    return {"requests": len(results), "outcomes": outcomes, "peak_streams": run["peak_streams"],
            "tenants": tenants, "flooder_over_quiet_p50": tenants[FLOODER]["ttft_p50_s"] / quiet_p50,
            "flood_admitted_while_quiet_waited": overtaken(run["admissions"], QUIET, FLOODER)}


def report_flood(runs: list[dict]) -> str:
    """Medians over the runs, one row per tenant."""
    lines = [f"flood: {runs[0]['requests']} requests, {len(runs)} run(s), medians; outcomes "
             f"{runs[0]['outcomes']}, peak streams {_median(runs, lambda r: r['peak_streams']):.0f}",
             f"{'tenant':8} {'ttft p50 s':>10} {'predicted':>10} {'ttft p99 s':>10} {'predicted':>10} "
             f"{'flood ahead':>11}"]
    for tenant in runs[0]["tenants"]:
        row = lambda key: _median(runs, lambda r: r["tenants"][tenant][key])  # noqa: E731
        ahead = _median(runs, lambda r: r["flood_admitted_while_quiet_waited"].get(tenant, 0))
        lines.append(f"{tenant:8} {row('ttft_p50_s'):10.3f} {row('predicted_p50_s'):10.3f} "
                     f"{row('ttft_p99_s'):10.3f} {row('predicted_p99_s'):10.3f} "
                     f"{ahead if tenant in QUIET else '-':>11}")
    ratio = _median(runs, lambda r: r["flooder_over_quiet_p50"])
    lines.append(f"flooder's median TTFT / the slowest quiet tenant's: {ratio:.1f}x (VTC's promise: > 3x)")
    return "\n".join(lines)


# ----- health: /health while N streams are open -------------------------------------------------


def fetch(url: str, path: str, timeout: float = 30.0) -> tuple[int, str]:
    """A blocking GET on its own connection: (status, body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def probe(url: str, seconds: float, interval: float = PROBE_INTERVAL_S) -> list[float]:
    """Seconds each GET /health took, one every `interval` on a kept-alive connection, for `seconds`."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    latencies, end = [], time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"/health answered {response.status}")
        time.sleep(max(0.0, interval - (time.perf_counter() - start)))
    conn.close()
    return latencies


def probe_in_child(url: str, seconds: float) -> list[float]:
    """`probe` in a process of its own, so the load clients' CPU does not delay it."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.serving", "probe", url, "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class ServerProcess:
    """`fairbatch serve --config FILE --port 0` in a child process, until the block ends."""

    def __init__(self, config_text: str, speed: float = 1.0) -> None:
        self.config_text, self.speed = config_text, speed

    def __enter__(self) -> str:
        self.dir = tempfile.TemporaryDirectory()
        path = Path(self.dir.name) / "serve.toml"
        path.write_text(self.config_text)
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.main", "serve", "--config", str(path),
                                      "--port", "0", "--speed", str(self.speed)], stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if found := re.search(r" at (http://\S+)", line):
                # Keep reading what it logs, so a full pipe never blocks it.
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return found.group(1)
        raise RuntimeError(f"fairbatch serve did not start (exit code {self.proc.wait()})")

    def cpu_seconds(self) -> float:
        """User and system CPU seconds the server process has used so far, from /proc/PID/stat
        (utime and stime, in clock ticks; Linux only)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc_info) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.dir.cleanup()


async def run_health(n: int = 500, seconds: float = 5.0, stream_interval: int = 1,
                     output_tokens: int = 4000) -> dict:
    """/health on the idle server, then while `n` streams are open (they are hung up after):
    latencies in seconds, the streams open, and the tokens generated per second meanwhile."""
    with ServerProcess(HOLD + f"stream_interval = {stream_interval}\n") as url:
        idle = await anyio.to_thread.run_sync(probe_in_child, url, min(seconds, 2.0))
        streams = Streams()
        body = {"prompt": prompt(64), "max_tokens": output_tokens, "stream": True}
        async with anyio.create_task_group() as task_group:
            for _ in range(n):
                task_group.start_soon(partial(SSEClient(url, "key-hold").complete, body, streams, drain=True))
            with anyio.fail_after(120):  # a hang guard: the streams open in a second or two
                while streams.open < n:
                    await anyio.sleep(0.01)
            before, start = await anyio.to_thread.run_sync(generated_tokens, url), time.perf_counter()
            busy = await anyio.to_thread.run_sync(probe_in_child, url, seconds)
            generated = await anyio.to_thread.run_sync(generated_tokens, url) - before
            rate = generated / (time.perf_counter() - start)
            still_open = streams.open
            task_group.cancel_scope.cancel()
    return {"streams": n, "stream_interval": stream_interval, "peak_streams": streams.peak,
            "open_after_probe": still_open, "idle": _latency(idle), "busy": _latency(busy), "tokens_per_s": rate,
            "model_tokens_per_s": modelled_decode_rate(n, seconds, output_tokens)}


def counter_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of each sample of counter `name` (without `_total`) in a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(sample.labels, sample.value) for family in text_string_to_metric_families(text) if family.name == name
            for sample in family.samples if sample.name == f"{name}_total"]


def generated_tokens(url: str) -> float:
    """fairbatch_generation_tokens_total over every tenant, from the server's /metrics."""
    return sum(value for _, value in counter_samples(fetch(url, "/metrics")[1], "fairbatch_generation_tokens"))


def modelled_decode_rate(n: int, seconds: float, output_tokens: int) -> float:
    """Tokens per second the simulated worker's cost model produces over `seconds` for HOLD's
    streams: min(n, max_num_seqs) sequences decoding from the 64-token prompt (what the server would
    stream if its own CPU cost nothing)."""
    from sim.serve import serve_config_from_dict

    config = serve_config_from_dict(tomllib.loads(HOLD)).sim
    running = min(n, config.scheduler.max_num_seqs)
    steps = config.cluster.cost_model().decode_step_times(running, running * 64.0, output_tokens)
    done = int(np.searchsorted(np.cumsum(steps), seconds))
    return running * done / seconds


def _latency(seconds: list[float]) -> dict:
    return {"probes": len(seconds), "p50_ms": _pct(seconds, 50) * 1e3, "p99_ms": _pct(seconds, 99) * 1e3,
            "max_ms": max(seconds, default=float("nan")) * 1e3}


def report_health(runs: list[dict]) -> str:
    lines = [f"health: GET /health every {PROBE_INTERVAL_S * 1e3:.0f} ms from its own process, "
             f"{len(runs)} run(s), medians; budget {HEALTH_BUDGET_S * 1e3:.0f} ms",
             f"{'server':28} {'probes':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
    for key, label in (("idle", "idle"), ("busy", f"{runs[0]['streams']} streams open")):
        cell = lambda name: _median(runs, lambda r: r[key][name])  # noqa: E731
        lines.append(f"{label:28} {cell('probes'):7.0f} {cell('p50_ms'):8.2f} {cell('p99_ms'):8.2f} "
                     f"{cell('max_ms'):8.2f}")
    busy, idle = (_median(runs, lambda r: r[k]["p99_ms"]) for k in ("busy", "idle"))
    streamed, modelled = (_median(runs, lambda r: r[k]) for k in ("tokens_per_s", "model_tokens_per_s"))
    lines.append(f"tokens generated while probed (the server's /metrics): {streamed:,.0f}/s, "
                 f"{streamed / modelled:.0%} of the {modelled:,.0f}/s the cost model gives the worker")
    lines.append(f"p99 busy / idle: {busy / idle:.1f}x; streams open at the peak "
                 f"{_median(runs, lambda r: r['peak_streams']):.0f}, still open after the probe "
                 f"{_median(runs, lambda r: r['open_after_probe']):.0f}; "
                 f"p99 within budget: {'yes' if busy <= HEALTH_BUDGET_S * 1e3 else 'no'}")
    return "\n".join(lines)


# ----- throughput: streamed tokens per core, and what serving adds to TTFT ---------------------

# Each stream's answer in the throughput run: 256 of them (max_num_seqs) fit HOLD's worker's KV
# blocks (26,347 of 16 tokens), so nothing is preempted however long the run.
THROUGHPUT_TOKENS = 1000

# One simulated H100, one tenant arriving as a Poisson process at RATE (a fraction of the pool's
# capacity, see `capacity_rate`); 512-token prompts, 64-token answers.
STEADY = """
seed = 11
duration_s = {seconds}

[cluster]
workers = 1

[scheduler]
policy = "vtc"

[[tenants]]
name = "steady"
rate = {rate}
prompt_tokens = 512
output_tokens = 64
max_queued = 100000

[serve]
api_keys = {{ "key-steady" = "steady" }}
"""
FLOOD_RATE = 1000.0  # arrivals per second far beyond what one worker serves, for `capacity_rate`


async def run_throughput(n: int = 500, seconds: float = 5.0, output_tokens: int = THROUGHPUT_TOKENS) -> dict:
    """`n` clients, each streaming one answer of `output_tokens` after another, against `fairbatch
    serve --speed 0` in a child process: the token events they received over `seconds` of wall
    time, and the CPU seconds the server process used meanwhile (from /proc)."""
    server = ServerProcess(HOLD, speed=0.0)
    with server as url:
        streams, body = Streams(), {"prompt": prompt(64), "max_tokens": output_tokens, "stream": True}

        async def client() -> None:
            while True:
                await SSEClient(url, "key-hold").complete(body, streams, drain=True)

        async with anyio.create_task_group() as task_group:
            for _ in range(n):
                task_group.start_soon(client)
            with anyio.fail_after(120):  # a hang guard: the streams open in a second or two
                while streams.open < n:
                    await anyio.sleep(0.01)
            before = await anyio.to_thread.run_sync(request_counts, url)
            tokens, cpu, start = streams.tokens, server.cpu_seconds(), time.perf_counter()
            own = time.process_time()
            await anyio.sleep(seconds)
            tokens, cpu = streams.tokens - tokens, server.cpu_seconds() - cpu
            wall, own = time.perf_counter() - start, time.process_time() - own
            after = await anyio.to_thread.run_sync(request_counts, url)
            task_group.cancel_scope.cancel()
    ended = {key: after[key] - before.get(key, 0) for key in after}
    return {"streams": n, "tokens": tokens, "wall_s": wall, "cpu_s": cpu, "client_cpu_s": own,
            "tokens_per_s": tokens / wall,
            "tokens_per_cpu_s": tokens / cpu if cpu else float("nan"), "ended": ended}


def request_counts(url: str) -> dict[str, float]:
    """fairbatch_requests_total by outcome over every tenant, from the server's /metrics."""
    counts: dict[str, float] = {}
    for labels, value in counter_samples(fetch(url, "/metrics")[1], "fairbatch_requests"):
        counts[labels["outcome"]] = counts.get(labels["outcome"], 0.0) + value
    return counts


def capacity_rate() -> float:
    """Requests per second STEADY's pool finishes when its queue never empties: the simulator's run
    of a flood, requests over the time the last one finished."""
    from sim.cluster import Simulation
    from sim.serve import serve_config_from_dict

    config = serve_config_from_dict(tomllib.loads(STEADY.format(seconds=2.0, rate=FLOOD_RATE)))
    records = Simulation(config.sim).run().records
    return len(records) / float(records["finish"].max())


def steady(load: float, seconds: float) -> tuple[str, float, Any]:
    """STEADY's config text at `load` x the pool's capacity, its rate and the simulation of its arrivals."""
    from sim.cluster import Simulation
    from sim.serve import serve_config_from_dict

    rate = load * capacity_rate()
    text = STEADY.format(seconds=seconds, rate=rate)
    return text, rate, Simulation(serve_config_from_dict(tomllib.loads(text)).sim)


async def replay_steady(url: str, load: float, seconds: float) -> list[dict]:
    """The client's side of `run_ttft`: STEADY's arrivals replayed in real time."""
    _, _, simulation = steady(load, seconds)
    return await replay(url, simulation.workload, ["steady"], Streams())


def replay_in_child(url: str, load: float, seconds: float) -> list[dict]:
    """`replay_steady` in a process of its own, so the clients' CPU does not delay the server."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.serving", "replay", url, "--load", str(load),
                          "--ttft-seconds", str(seconds)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class StepLog:
    """A simulated worker, passed through, that keeps each step's (start, end) on its GPU's
    timeline (the event loop's clock)."""

    def __init__(self, worker: Any) -> None:
        self.inner = worker
        self.kv_blocks = worker.kv_blocks
        self.spans: list[tuple[float, float]] = []

    async def step(self, step: Any) -> Any:
        done = await self.inner.step(step)
        self.spans.append(self.inner.last_step)
        return done


def gpu_time(spans: np.ndarray, start: float, end: float) -> float:
    """Seconds of [start, end] that the (start, end) rows of `spans`, apart and in order, cover."""
    return float(np.sum(np.clip(spans[:, 1], start, end) - np.clip(spans[:, 0], start, end)))


async def run_ttft(load: float = 0.5, seconds: float = 20.0) -> dict:
    """STEADY at `load` x the pool's capacity, replayed in real time from a child process against
    an in-process server (`--speed 1`). Per request: the TTFT its client saw (connect to first token
    event); the TTFT the runtime gave it (submission to its first token handed to the stream); of
    that, what the runtime adds over the simulated GPU's time (the part of it during which the GPU
    ran no step of it or of others, plus the wait from the first token's step ending to its
    delivery); and what HTTP adds on either side (the request written to its submission; the first
    token's delivery to the client's receipt). The simulator's TTFT of the same arrivals is shown
    beside. Both processes read CLOCK_MONOTONIC, so their times compare."""
    from dataclasses import replace

    from prometheus_client import CollectorRegistry

    from scheduler.runtime.serving import listen, serve
    from sim.serve import serve_config_from_dict, service

    text, rate, simulation = steady(load, seconds)
    records = simulation.run().records
    served = service(serve_config_from_dict(tomllib.loads(text)), 1.0)
    logged = {wid: StepLog(worker) for wid, worker in served.workers.items()}
    (worker,) = logged.values()  # STEADY's pool is one worker
    async with anyio.create_task_group() as task_group:
        url, runtime = await task_group.start(partial(serve, replace(served, workers=logged), listen("127.0.0.1", 0),
                                                      registry=CollectorRegistry()))
        runtime.metrics = log = AdmissionLog(runtime.metrics)
        offset = anyio.current_time() - runtime.now()  # the runtime's clock to CLOCK_MONOTONIC
        results = await anyio.to_thread.run_sync(replay_in_child, url, load, seconds)
        task_group.cancel_scope.cancel()
    done = [r for r in results if r["outcome"] == "finished" and r["id"] in log.first]
    ids = np.array([r["id"] for r in done], dtype=int)
    arrival, first = (np.array([log.first[r["id"]][k] for r in done]) + offset for k in (0, 1))
    sent, written, client = (np.array([r[key] for r in done]) for key in ("sent", "written", "ttft"))
    spans = np.array(worker.spans)
    produced = spans[np.searchsorted(spans[:, 1], first, "right") - 1, 1]  # the end of each first token's step
    gpu = np.array([gpu_time(spans, a, end) for a, end in zip(arrival, produced)])
    figures = {"client": client, "runtime": first - arrival, "runtime_added": first - arrival - gpu,
               "simulated": records["first_token"][ids] - records["arrival"][ids],
               "http_in": arrival - written, "http_out": sent + client - first, "client_out": written - sent}
    return {"load": load, "rate": rate, "requests": len(records), "finished": len(done)} | {
        f"{name}_p{q}_ms": _pct(values, q) * 1e3 for name, values in figures.items() for q in (50, 99)}


TTFT_ROWS = (("client", "client's TTFT"), ("runtime", "the runtime's (submit to delivery)"),
             ("runtime_added", "  of which the runtime adds"), ("simulated", "simulator's, same arrivals"),
             ("http_in", "added by HTTP: request to submit"), ("http_out", "  first token to the client"),
             ("client_out", "client: connect and write"))


def report_throughput(runs: dict[int, list[dict]], ttft: list[dict]) -> str:
    """Medians over the runs: a row per stream count, then the TTFT added at moderate load."""
    lines = [f"throughput: clients streaming {THROUGHPUT_TOKENS}-token answers back to back from "
             f"`fairbatch serve --speed 0`, {len(next(iter(runs.values()), []))} run(s), medians; "
             "CPU seconds of the server process from /proc",
             f"{'streams':>7} {'tokens/s':>10} {'per core':>10} {'server CPU':>10} {'client CPU':>10} {'cut off':>7}"]
    for n, rows in runs.items():
        cut = _median(rows, lambda r: r["ended"].get("cancelled", 0))
        lines.append(f"{n:7d} {_median(rows, lambda r: r['tokens_per_s']):10,.0f} "
                     f"{_median(rows, lambda r: r['tokens_per_cpu_s']):10,.0f} "
                     f"{_median(rows, lambda r: r['cpu_s'] / r['wall_s']):10.0%} "
                     f"{_median(rows, lambda r: r['client_cpu_s'] / r['wall_s']):10.0%} {cut:7.0f}")
    if ttft:
        lines += [f"ttft: {ttft[0]['requests']} requests at {ttft[0]['load']:g} x the pool's capacity "
                  f"({_median(ttft, lambda r: r['rate']):.1f}/s), `--speed 1`, clients in a child process, "
                  f"{len(ttft)} run(s), medians", f"{'':36} {'p50 ms':>8} {'p99 ms':>8}"]
        for name, label in TTFT_ROWS:
            p50, p99 = (_median(ttft, lambda r: r[f"{name}_p{q}_ms"]) for q in (50, 99))
            lines.append(f"{label:36} {p50:8.2f} {p99:8.2f}")
    return "\n".join(lines)


# ----- the command ------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _median(runs: list[dict], get: Callable[[dict], float]) -> float:
    return statistics.median(get(r) for r in runs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=("flood", "health", "throughput", "all", "probe", "replay"))
    parser.add_argument("url", nargs="?", help="(probe and replay only) the server's base URL")
    parser.add_argument("--streams", type=_counts, help="health: streams held open (default 500); throughput: "
                                                        "comma-separated stream counts (default 100,500)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="health: seconds of probing; throughput: seconds counted per run (default 5)")
    parser.add_argument("--stream-interval", type=int, default=1,
                        help="health: the server's [serve] stream_interval (default 1: a write per token)")
    parser.add_argument("--load", type=float, default=0.5,
                        help="throughput: the TTFT run's arrival rate, a fraction of the pool's capacity (default 0.5)")
    parser.add_argument("--ttft-seconds", type=float, default=20.0,
                        help="throughput: seconds of arrivals in the TTFT run (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, medians reported (default 3)")
    args = parser.parse_args(argv)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)  # the in-process server's "Running on"
    if args.what == "probe":
        print(json.dumps(probe(args.url, args.seconds)))
        return 0
    if args.what == "replay":
        print(json.dumps(anyio.run(replay_steady, args.url, args.load, args.ttft_seconds)))
        return 0
    if args.what in ("flood", "all"):
        print(report_flood([flood_figures(anyio.run(run_flood)) for _ in range(args.repeat)]), flush=True)
    if args.what in ("health", "all"):
        for n in args.streams or [500]:
            runs = [anyio.run(run_health, n, args.seconds, args.stream_interval) for _ in range(args.repeat)]
            print(report_health(runs), flush=True)
    if args.what in ("throughput", "all"):
        rows = {n: [anyio.run(run_throughput, n, args.seconds) for _ in range(args.repeat)]
                for n in args.streams or [100, 500]}
        ttft = [anyio.run(run_ttft, args.load, args.ttft_seconds) for _ in range(args.repeat)]
        print(report_throughput(rows, ttft))
    return 0


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--streams: must be integers >= 1, comma-separated; got {text!r}")
    return counts


if __name__ == "__main__":
    sys.exit(main())
