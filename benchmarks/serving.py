"""Serving under load, over real sockets on loopback: a tenant's flood, and /health during it.

    python -m benchmarks.serving [flood|health|all] [--streams N] [--seconds S] [--repeat N]

flood   four tenants on one simulated H100, one of them (mallory) flooding at about 2.5 times what
        it can serve, replayed in real time over HTTP against an in-process `fairbatch serve`:
        every tenant's TTFT p50/p99 next to what the simulator predicts for the same arrivals, the
        flooder's median TTFT over the quiet tenants' (VTC keeps it above 3), and the most flood
        requests admitted while one quiet request waited (its order of service).
health  N streams (default 500) held open against `fairbatch serve` in a child process while a
        third process asks for /health every 20 ms: latency p50/p99/max with the streams open, next
        to the same probe of the idle server in the same run, and the streams open meanwhile.

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


# ----- the load client --------------------------------------------------------------------------


class Streams:
    """Streams open now, and the most open at once."""

    def __init__(self) -> None:
        self.open = self.peak = 0

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1


class SSEClient:
    """One streamed completion on its own connection, straight on h11."""

    def __init__(self, url: str, key: str) -> None:
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port, self.key = int(port), key
        self.conn = h11.Connection(h11.CLIENT)

    async def complete(self, body: dict, streams: Streams, hang_up_after: int | None = None,
                       drain: bool = False) -> dict:
        """Send `body` and read its events: a record of the outcome, tokens and TTFT (seconds);
        `drain` reads the bytes without parsing them (the cheapest client there is)."""
        payload = json.dumps(body).encode()
        headers = [("host", f"{self.host}:{self.port}"), ("authorization", f"Bearer {self.key}"),
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
                if drain:
                    async for _ in self.body():
                        pass
                    return {"outcome": "drained"}
                return await self.read_events(sent, hang_up_after)
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
    (tenant, arrival, admitted at), both times from the runtime's clock."""

    def __init__(self, metrics: Any) -> None:
        self.inner = metrics
        self.rows: list[tuple[str, float, float]] = []

    def admitted(self, handle: Any) -> None:
        self.rows.append((handle.tenant, handle.arrival, handle.admitted_at))
        self.inner.admitted(handle)

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


# ----- the command ------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _median(runs: list[dict], get: Callable[[dict], float]) -> float:
    return statistics.median(get(r) for r in runs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=("flood", "health", "all", "probe"))
    parser.add_argument("url", nargs="?", help="(probe only) the server's base URL")
    parser.add_argument("--streams", type=int, default=500, help="health: streams held open (default 500)")
    parser.add_argument("--seconds", type=float, default=5.0, help="health: seconds of probing (default 5)")
    parser.add_argument("--stream-interval", type=int, default=1,
                        help="health: the server's [serve] stream_interval (default 1: a write per token)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, medians reported (default 3)")
    args = parser.parse_args(argv)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)  # the in-process server's "Running on"
    if args.what == "probe":
        print(json.dumps(probe(args.url, args.seconds)))
        return 0
    if args.what in ("flood", "all"):
        print(report_flood([flood_figures(anyio.run(run_flood)) for _ in range(args.repeat)]), flush=True)
    if args.what in ("health", "all"):
        runs = [anyio.run(run_health, args.streams, args.seconds, args.stream_interval) for _ in range(args.repeat)]
        print(report_health(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
