"""`fairbatch serve`: the OpenAI-compatible server on a pool of simulated workers.

This module owns the serving configuration (a simulator config plus a `[serve]` table: API keys,
model name, limits, timeouts, the metrics key) and what it assembles: a Scheduler and one
`SimulatedWorker` per configured worker, priced by the simulator's cost model.
`scheduler.runtime.serving` runs them (the runtime, the HTTP app, hypercorn). The demo keys are
public, so the command refuses to serve them beyond loopback unless told to. `--trace` records the
timeline trace while serving, bounded by a window of time (by default the server's first
`DEFAULT_TRACE_WINDOW` seconds: a server runs until stopped, and a trace keeps a few KB per step),
and writes it at shutdown.
"""

from __future__ import annotations

import ipaddress
import math
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client

from scheduler.core import Scheduler
from scheduler.errors import ConfigError
from scheduler.placement import make_placement, placement_rng
from scheduler.policies import make_policy
from scheduler.request import SLO, Tenant
from scheduler.runtime.driver import DEFAULT_STREAM_BUFFER
from scheduler.runtime.trace_file import TraceFile
from scheduler.runtime.worker import SimulatedWorker

from .config import DEFAULT_CONFIG, SimConfig, config_from_dict, latency_budgets, read_toml
from .trace import TraceSpec
from .validation import INTEGER, MAX_COUNT, NUMBER, STRING, TABLE, at_least, check_keys, in_range
from .workload import check_quota_admits

# The built-in default pool (2 simulated H100s serving Llama-3-8B under VTC) with two demo tenants.
# key-alice and key-bob are DEMO KEYS, public in this file: serve only on a trusted interface.
DEMO_TENANTS = """
[[tenants]]
name = "alice"

[[tenants]]
name = "bob"

[serve]
api_keys = { "key-alice" = "alice", "key-bob" = "bob" }
"""
DEMO_KEYS = ("key-alice", "key-bob")
INTEGER_KEYS = ("max_tokens", "default_max_tokens", "max_body_bytes", "stream_buffer", "stream_interval")
SECONDS_KEYS = ("read_timeout_s", "keep_alive_timeout_s")
SERVE_SCHEMA = {"api_keys": TABLE, "default_tenant": STRING, "model": STRING, "metrics_key": STRING,
                **dict.fromkeys(INTEGER_KEYS, INTEGER), **dict.fromkeys(SECONDS_KEYS, NUMBER)}
SERVE_KEYS = tuple(SERVE_SCHEMA)
# What a server's trace keeps without --trace-window: its first ten minutes. Memory then stays
# bounded however long it serves (a step costs about 3 KB of trace with two tenants).
DEFAULT_TRACE_WINDOW = (0.0, 600.0)
# A serving config's tenants need no traffic: serving takes real requests. These fill what the
# simulator's schema requires.
NO_TRAFFIC = {"rate": 0.0, "prompt_tokens": 1, "output_tokens": 1}


@dataclass(frozen=True, slots=True)
class ServeConfig:
    sim: SimConfig  # pool, scheduler, tenants (quotas, weights, SLOs)
    api_keys: Mapping[str, str]  # bearer key -> tenant name
    default_tenant: str | None = None  # serves requests with a missing or unknown key; None: 401
    model: str = "llama-3-8b"
    max_tokens: int = 4096  # the largest max_tokens a request may ask for
    default_max_tokens: int = 256  # when a request names none
    max_body_bytes: int = 1 << 20
    stream_buffer: int = DEFAULT_STREAM_BUFFER  # tokens a streaming client may fall behind
    stream_interval: int = 1  # tokens per streamed write after the first (SGLang's --stream-interval)
    read_timeout_s: float = 30.0  # the longest a request body may take to arrive after its headers (408)
    keep_alive_timeout_s: float = 5.0  # an idle connection, or one still sending its headers, is closed then
    metrics_key: str | None = None  # a bearer key that /metrics requires; None: anyone who reaches it

    @property
    def tenants(self) -> list[str]:
        return [spec.name for spec in self.sim.tenants]


def default_serve_config_text() -> str:
    """The built-in default: the simulator's default pool with the two demo tenants."""
    pool = DEFAULT_CONFIG.split("[[tenants]]", 1)[0]
    return pool + DEMO_TENANTS.lstrip("\n")


def load_serve_config(path: str | Path | None = None) -> ServeConfig:
    """Read a serving config (the built-in default when None); errors name the key."""
    if path is None:
        table, base_dir = tomllib.loads(default_serve_config_text()), None
    else:
        table, base_dir = read_toml(path), Path(path).resolve().parent
    return serve_config_from_dict(table, base_dir)


def serve_config_from_dict(table: Mapping[str, Any], base_dir: Path | None = None) -> ServeConfig:
    table = dict(table)
    serve = table.pop("serve", {})
    if not isinstance(serve, Mapping):
        raise ConfigError(f"serve: must be a table, got {serve!r}")
    check_keys(serve, SERVE_KEYS, "serve")
    tenants = table.get("tenants")
    if isinstance(tenants, list):
        table["tenants"] = [_with_traffic(t) for t in tenants]
    sim = config_from_dict(table, base_dir)
    names = {spec.name for spec in sim.tenants}
    keys = _api_keys(serve.get("api_keys", {}), names)
    default = serve.get("default_tenant")
    if default is not None and (not isinstance(default, str) or default not in names):
        raise ConfigError(f"serve.default_tenant: {default!r} is not a configured tenant; "
                          f"allowed: {', '.join(sorted(names))}")
    model = serve.get("model", sim.cluster.model)
    if not isinstance(model, str) or not model:
        raise ConfigError(f"serve.model: must be a non-empty string, got {model!r}")
    _check_quotas(sim)
    numbers = {key: in_range(serve[key], f"serve.{key}", 1, MAX_COUNT, integer=True) for key in INTEGER_KEYS if key in serve}
    numbers |= {key: at_least(serve[key], f"serve.{key}", 0, strict=True) for key in SECONDS_KEYS if key in serve}
    metrics_key = _metrics_key(serve.get("metrics_key"), keys)
    return ServeConfig(sim, keys, default, model, metrics_key=metrics_key, **numbers)


def _check_quotas(sim: SimConfig) -> None:
    """A tenant whose quota refuses even the cheapest request a client may send (one prompt token,
    max_tokens 1) could only ever be refused."""
    for index, spec in enumerate(sim.tenants):
        check_quota_admits(spec.quota, 1, 1, f"tenants[{index}]")


def _metrics_key(key: Any, api_keys: Mapping[str, str]) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or any(c.isspace() for c in key):
        raise ConfigError(f"serve.metrics_key: must be a non-empty string without spaces, got {key!r}")
    if key in api_keys:
        raise ConfigError("serve.metrics_key: must differ from every API key (its tenant could read every "
                          "tenant's metrics)")
    return key


def _with_traffic(tenant: Any) -> Any:
    if not isinstance(tenant, Mapping) or "trace" in tenant:
        return tenant
    return {**NO_TRAFFIC, **tenant}


def _api_keys(keys: Any, names: set[str]) -> dict[str, str]:
    if not isinstance(keys, Mapping):
        raise ConfigError(f"serve.api_keys: must be a table of key = tenant, got {keys!r}")
    for key, tenant in keys.items():
        if not key or any(c.isspace() for c in key):
            raise ConfigError(f"serve.api_keys: a key must be non-empty without spaces, got {key!r}")
        if tenant not in names:
            raise ConfigError(f"serve.api_keys.{key}: {tenant!r} is not a configured tenant; "
                              f"allowed: {', '.join(sorted(names))}")
    return dict(keys)


# ----- the process -----------------------------------------------------------------------------


def check_speed(speed: Any) -> float:
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed < 0:
        raise ConfigError(f"--speed: must be a finite number >= 0 (1 = the cost model's step times, "
                          f"0 = no waiting), got {speed!r}")
    return float(speed)


def build_pool(config: SimConfig, speed: float = 1.0) -> tuple[Scheduler, dict[int, SimulatedWorker]]:
    """A Scheduler and its simulated workers, as `sim.cluster.Simulation` builds them."""
    tenants = [Tenant(s.name, s.weight, s.priority, SLO(s.slo_ttft_ms, s.slo_tpot_ms), s.quota)
               for s in config.tenants]
    policy = make_policy(config.policy.policy, config.policy.policy_params)
    placement = make_placement(config.policy.placement, config.policy.placement_params, placement_rng(config.seed))
    scheduler = Scheduler(tenants, policy, placement, config.scheduler, latency_budgets(config, config.tenants))
    cost = config.cluster.cost_model()
    blocks = config.cluster.kv_blocks(config.scheduler)
    return scheduler, {wid: SimulatedWorker(cost, blocks, speed) for wid in range(config.cluster.workers)}


def service(config: ServeConfig, speed: float = 1.0, trace: TraceFile | None = None):
    """What `scheduler.runtime.serving` serves for this config (needs the `serve` extra)."""
    from scheduler.runtime.api import Limits
    from scheduler.runtime.server import ServerConfig
    from scheduler.runtime.serving import Service

    scheduler, workers = build_pool(config.sim, check_speed(speed))
    server = ServerConfig(Limits(config.model, config.max_tokens, config.default_max_tokens), config.api_keys,
                          config.default_tenant, config.max_body_bytes, config.read_timeout_s,
                          config.keep_alive_timeout_s, config.metrics_key, config.stream_interval)
    return Service(scheduler, workers, server, config.stream_buffer, trace)


def trace_file(path: Path | None, spec: TraceSpec | None) -> TraceFile | None:
    """What `--trace PATH` records (the flags' values checked by sim.cli.trace_spec), checked before
    serving: a path that cannot be written, or a request count that a late window would waste."""
    if path is None or spec is None:
        return None
    window = spec.window or DEFAULT_TRACE_WINDOW
    if spec.requests is not None and window[0] > 0:
        raise ConfigError(f"--trace-requests: keeps the first {spec.requests} requests from the server's start, "
                          f"so with --trace-window starting at {window[0]:g} s it would keep requests that end "
                          "before the window; allowed: a --trace-window that starts at 0, or no --trace-requests")
    traced = TraceFile(path, window, spec.requests)
    traced.check()
    return traced


# ----- the command ------------------------------------------------------------------------------


def run(config_path: Path | None, host: str, port: int, speed: float, allow_demo_keys: bool = False,
        trace: TraceFile | None = None) -> int:
    """`fairbatch serve`: serve until SIGINT or SIGTERM (then write the trace, if asked for one)."""
    try:
        from scheduler.runtime import serving
    except ImportError:
        raise ConfigError("serve: needs the 'serve' extra: pip install -e '.[serve]'") from None
    config = load_serve_config(config_path)
    served = service(config, speed, trace)
    sock = serving.listen(host, port)
    try:
        check_demo_keys(config, sock.getsockname()[0], host, allow_demo_keys)
    except ConfigError:
        sock.close()
        raise
    # This process's /metrics leaves out the *_created series (the process start, repeated per series).
    prometheus_client.disable_created_metrics()
    serving.run(served, sock, lambda url: print(banner(config, url, speed, trace), file=sys.stderr, flush=True))
    print("fairbatch: stopped", file=sys.stderr, flush=True)
    if trace is not None:
        print(f"fairbatch: wrote {trace.path}: open it in https://ui.perfetto.dev or chrome://tracing",
              file=sys.stderr, flush=True)
    return 0


def check_demo_keys(config: ServeConfig, address: str, host: str, allowed: bool) -> None:
    """The demo keys are public: serving them beyond loopback needs --allow-demo-keys."""
    demo = [key for key in DEMO_KEYS if key in config.api_keys]
    if not demo or allowed or ipaddress.ip_address(address.split("%")[0]).is_loopback:
        return
    raise ConfigError(f"--host: {host} is not a loopback address, and the demo API keys ({', '.join(demo)}) are "
                      "public; allowed: a loopback address (127.0.0.1, ::1, localhost), a --config whose "
                      "[serve] api_keys are your own, or --allow-demo-keys")


def mask(key: str) -> str:
    """A key as the banner shows it: a few characters of each end (sk-d…ab12), never all of it."""
    shown = min(4, len(key) // 4)
    return f"{key[:shown]}…{key[-shown:]}" if shown else "…"


def banner(config: ServeConfig, url: str, speed: float, trace: TraceFile | None = None) -> str:
    cluster, policy = config.sim.cluster, config.sim.policy
    keys = ", ".join(f"{mask(key)} ({tenant})" for key, tenant in config.api_keys.items()) or "none"
    default = f"; default tenant {config.default_tenant}" if config.default_tenant else ""
    metrics = f"key {mask(config.metrics_key)}" if config.metrics_key else "open to whoever reaches it"
    text = (f"fairbatch: serving {config.model} at {url} on {cluster.workers} simulated {cluster.gpu} "
            f"worker(s), policy {policy.policy}, speed {speed:g}\n"
            f"fairbatch: API keys: {keys}{default}; /metrics: {metrics}")
    if trace is not None:
        start, end = trace.window or (0.0, math.inf)
        requests = "every request" if trace.requests is None else f"the first {trace.requests} requests"
        text += (f"\nfairbatch: tracing seconds {start:g} to {end:g} of serving, {requests}, "
                 f"to {trace.path} at shutdown")
    return text
