"""Simulation configuration: the TOML schema, its defaults, validation, and CLI overrides.

`load_config` reads a TOML file (or the built-in default) into a frozen `SimConfig`; every error
names the key as written and the allowed values or range, within bounds that keep the arithmetic
finite and a run's time and memory in reach. `check_runnable` rejects what only the generated
workload shows (a quota that refuses every request, a timeline too long to keep). `config_to_dict`
gives the JSON-able form written with results, so a run can be reproduced from its output.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scheduler.core import SchedulerConfig
from scheduler.errors import ConfigError
from scheduler.placement import PLACEMENTS, check_params
from scheduler.policies import make_policy

from .costmodel import RooflineCostModel, slo_step_budget
from .hardware import GPU_SPEC_FIELDS, GPUSpec, custom_gpu, get_gpu, get_model, resolve_model
from .validation import (BOOLEAN, FACTOR, INTEGER, LIST, MAX_COUNT, MAX_SECONDS, MAX_TOKENS, NUMBER, STRING, TABLE,
                         as_integer, as_number, check_keys, in_range, seconds, shown, shown_bound)
from .workload import MAX_REQUESTS, TenantSpec, Workload, check_quota_admits, name_tenant

# 4 tenants of different sizes on 2 H100s with Llama-3-8B; lengths shaped like the Azure
# conversation trace (input mean 1,155, p99 4,142; output mean 211, p99 601).
DEFAULT_CONFIG = """\
seed = 0
duration_s = 180

[cluster]
workers = 2
gpu = "h100"
model = "llama-3-8b"
tensor_parallel = 1

[scheduler]
policy = "vtc"
placement = "global"
max_num_batched_tokens = 4096
max_num_seqs = 256
block_size = 16

[[tenants]]
name = "enterprise"
weight = 2.0
rate = 8.0
arrival = "gamma"
cv = 2.0
prompt_tokens = { dist = "lognormal", mean = 1155, p99 = 4142 }
output_tokens = { dist = "lognormal", mean = 211, p99 = 601 }
slo = { ttft_ms = 1000, tpot_ms = 50 }

[[tenants]]
name = "startup"
rate = 4.0
prompt_tokens = { dist = "lognormal", mean = 1155, p99 = 4142 }
output_tokens = { dist = "lognormal", mean = 211, p99 = 601 }
slo = { ttft_ms = 1000, tpot_ms = 50 }

[[tenants]]
name = "research"
rate = 2.0
arrival = "onoff"
on_s = 20
off_s = 40
prompt_tokens = { dist = "lognormal", mean = 2500, p99 = 8000 }
output_tokens = { dist = "lognormal", mean = 300, p99 = 1200 }
slo = { ttft_ms = 3000, tpot_ms = 100 }

[[tenants]]
name = "hobbyist"
rate = 1.0
prompt_tokens = { dist = "lognormal", mean = 600, p99 = 2500 }
output_tokens = { dist = "lognormal", mean = 150, p99 = 500 }
slo = { ttft_ms = 2000, tpot_ms = 100 }
"""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    workers: int = 2
    gpu: str = "h100"
    model: str = "llama-3-8b"
    tensor_parallel: int = 1
    mfu: float = 0.6
    mbu: float = 0.8
    step_overhead_ms: float = 1.0
    gpu_spec: GPUSpec | None = None  # a custom GPU ([cluster.gpu_spec]); then `gpu` is its name
    # Read from [scheduler], under vLLM's names, and written there by config_to_dict:
    gpu_memory_utilization: float = 0.9  # fraction of each GPU's memory for weights, activations and KV
    num_gpu_blocks: int | None = None  # KV blocks per worker, as vLLM's override; None: vLLM's sizing

    def cost_model(self) -> RooflineCostModel:
        gpu = self.gpu_spec or get_gpu(self.gpu)
        return RooflineCostModel(
            gpu, get_model(self.model), self.tensor_parallel, mfu=self.mfu, mbu=self.mbu,
            step_overhead_s=self.step_overhead_ms / 1000, gpu_memory_utilization=self.gpu_memory_utilization,
        )

    def kv_blocks(self, scheduler: SchedulerConfig) -> int:
        """A worker's KV blocks: `num_gpu_blocks` when set, else vLLM's sizing (see `modelled_kv_blocks`)."""
        return self.num_gpu_blocks if self.num_gpu_blocks is not None else self.modelled_kv_blocks(scheduler)

    def modelled_kv_blocks(self, scheduler: SchedulerConfig) -> int:
        """memory x gpu_memory_utilization - weights - the activation peak of a step of the scheduler's
        limits - a reserve, in blocks (RooflineCostModel.kv_blocks)."""
        return self.cost_model().kv_blocks(scheduler.block_size, scheduler.max_num_batched_tokens,
                                           scheduler.max_num_seqs)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    policy: str = "vtc"
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    placement: str = "global"
    placement_params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 0
    duration_s: float | None = 180.0
    requests: int | None = None
    load: float = 1.0  # multiplies every tenant's rate (and speeds up trace timestamps)
    horizon_s: float | None = None  # hard stop of simulated time; None drains every request
    sample_interval_s: float = 1.0  # how often per-tenant service is sampled for fairness metrics
    fast_forward: bool = True  # run the core's `repeat` identical decode steps as one event
    cluster: ClusterConfig = ClusterConfig()
    policy: PolicyConfig = PolicyConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    tenants: tuple[TenantSpec, ...] = ()


# Every key of the schema and the kind of value it takes (the tests feed each a wrong one); the
# tenant tables' keys are workload.TENANT_SCHEMA.
TOP_SCHEMA = {"seed": INTEGER, "duration_s": NUMBER, "requests": INTEGER, "load": NUMBER, "horizon_s": NUMBER,
              "sample_interval_s": NUMBER, "fast_forward": BOOLEAN, "cluster": TABLE, "scheduler": TABLE,
              "tenants": LIST}
CLUSTER_SCHEMA = {"workers": INTEGER, "gpu": STRING, "model": STRING, "tensor_parallel": INTEGER, "mfu": NUMBER,
                  "mbu": NUMBER, "step_overhead_ms": NUMBER, "gpu_spec": TABLE,
                  "calibration": STRING}
CALIBRATED = ("mfu", "mbu", "step_overhead_ms")  # the cost model's free coefficients, which a calibration sets
GPU_SPEC_SCHEMA = {"name": STRING, **{k: NUMBER for k in GPU_SPEC_FIELDS}}
SCHEDULER_SCHEMA = {"policy": STRING, "policy_params": TABLE, "placement": STRING, "placement_params": TABLE,
                    "max_num_batched_tokens": INTEGER,
                    "max_num_seqs": INTEGER, "block_size": INTEGER, "max_model_len": INTEGER,
                    "gpu_memory_utilization": NUMBER, "num_gpu_blocks": INTEGER, "kv_watermark": NUMBER,
                    "service_weights": LIST, "max_queued": INTEGER, "max_queued_tokens": INTEGER,
                    "enable_prefix_caching": BOOLEAN, "cache_isolation": STRING, "isolation": BOOLEAN,
                    "fair_prefill": BOOLEAN, "over_share_prefill_tokens": INTEGER, "slot_headroom": INTEGER,
                    "kv_headroom": NUMBER, "latency_budget_tokens": INTEGER, "share_preempt_after_s": NUMBER}
MEMORY_KEYS = ("gpu_memory_utilization", "num_gpu_blocks")  # [scheduler] keys kept in ClusterConfig
# Keys of earlier versions, each now under vLLM's name: a config using one fails, naming the new key.
RENAMED = {"scheduler.max_seqs": "scheduler.max_num_seqs",
           "scheduler.max_batched_tokens": "scheduler.max_num_batched_tokens",
           "cluster.memory_fraction": "scheduler.gpu_memory_utilization",
           "cluster.num_gpu_blocks": "scheduler.num_gpu_blocks"}
TOP_KEYS = tuple(TOP_SCHEMA)
CLUSTER_KEYS = tuple(CLUSTER_SCHEMA)
SCHEDULER_KEYS = tuple(SCHEDULER_SCHEMA)

MAX_SEED = 2**128 - 1  # numpy's SeedSequence takes any integer >= 0; 128 bits is all the entropy it keeps
# The simulator visits every idle worker at each arrival: time grows as workers x requests.
MAX_WORKERS = 1024
MAX_STEP_OVERHEAD_MS = 1000.0  # a second of fixed cost per step; real engines spend about a millisecond
# Each calibrated coefficient: (low, high, low bound open).
CALIBRATION_RANGES = {"mfu": (0, 1, True), "mbu": (0, 1, True), "step_overhead_ms": (0, MAX_STEP_OVERHEAD_MS, False)}
MAX_BLOCK_SIZE = 1 << 16
# The fairness timeline keeps one sample of every tenant's service per sample_interval_s, in memory.
MAX_SAMPLES = 1_000_000
MAX_TENANT_SAMPLES = 50_000_000  # samples x tenants: about 2 GB of timeline at this size


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The table of a TOML file; a file that cannot be read or is not TOML is a ConfigError naming
    the path as given."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; allowed: a {what}, a TOML text file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); allowed: a {what}, a TOML text file") from None
    except OSError as err:  # permission, a broken link, ...
        raise ConfigError(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    return _parse_toml(text, path)


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except ValueError:  # Python refuses to read integers of more than 4,300 digits
        raise ConfigError(f"{path}: not valid TOML: an integer too long to read; allowed: at most 4,300 digits") \
            from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply to read") from None


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SimConfig:
    """Read `path` (the built-in default when None), apply dotted-key overrides, validate."""
    if path is None:
        table, base_dir = tomllib.loads(DEFAULT_CONFIG), None
    else:
        table, base_dir = read_toml(path), Path(path).resolve().parent
    for dotted, value in (overrides or {}).items():
        set_dotted(table, dotted, value)
    return config_from_dict(table, base_dir)


def set_dotted(table: dict, dotted: str, value: Any) -> None:
    """Set `value` at a dotted key ("scheduler.policy") of a config table, creating tables on the way."""
    *parents, last = dotted.split(".")
    for key in parents:
        table = table.setdefault(key, {})
    table[last] = value
    if last == "requests":  # a request count replaces the duration, and the other way round
        table.pop("duration_s", None)
    elif last == "duration_s":
        table.pop("requests", None)


def config_from_dict(table: Mapping[str, Any], base_dir: Path | None = None) -> SimConfig:
    check_keys(table, TOP_KEYS, "config")
    duration, requests = _horizon(table)
    horizon = table.get("horizon_s")
    config = SimConfig(
        seed=in_range(table.get("seed", 0), "seed", 0, MAX_SEED, integer=True),
        duration_s=duration,
        requests=requests,
        load=in_range(table.get("load", 1.0), "load", *FACTOR),
        horizon_s=None if horizon is None else seconds(horizon, "horizon_s"),
        sample_interval_s=seconds(table.get("sample_interval_s", 1.0), "sample_interval_s"),
        fast_forward=_boolean(table.get("fast_forward", True), "fast_forward"),
        cluster=_cluster(table.get("cluster", {}), base_dir, table.get("scheduler", {})),
        policy=_policy(table.get("scheduler", {})),
        scheduler=_scheduler(table.get("scheduler", {})),
        tenants=_tenants(table.get("tenants"), base_dir),
    )
    config = dataclasses.replace(config, scheduler=_model_len(config.scheduler, config.cluster))
    _check_pool(config)
    return config


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {shown(value)}")
    return value


def _horizon(table: Mapping[str, Any]) -> tuple[float | None, int | None]:
    if "requests" in table and "duration_s" in table:
        raise ConfigError("duration_s, requests: give one of them, not both")
    if "requests" in table:
        return None, in_range(table["requests"], "requests", 1, MAX_REQUESTS, integer=True)
    return seconds(table.get("duration_s", 180.0), "duration_s"), None


def _section(table: Any, name: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{name}: must be a table, got {shown(table)}")
    _check_renamed(table, name)
    check_keys(table, allowed, name)
    return table


def _check_renamed(table: Mapping[str, Any], name: str) -> None:
    old = next((f"{name}.{k}" for k in table if f"{name}.{k}" in RENAMED), None)
    if old is not None:
        raise ConfigError(f"{old}: renamed; allowed: {RENAMED[old]} (vLLM's name)")


def _name(table: Mapping[str, Any], key: str, where: str, default: str) -> str:
    """A catalogue name (gpu, model, policy, placement): a string; whether it exists is the lookup's check."""
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: must be a string, got {shown(value)}")
    return value


def _cluster(table: Any, base_dir: Path | None = None, scheduler: Any = None) -> ClusterConfig:
    table = _section(table, "cluster", CLUSTER_KEYS)
    memory = _memory(_section({} if scheduler is None else scheduler, "scheduler", SCHEDULER_KEYS))
    workers = in_range(table.get("workers", 2), "cluster.workers", 1, MAX_WORKERS, integer=True)
    tp = as_integer(table.get("tensor_parallel", 1), "cluster.tensor_parallel")
    numbers = {k: in_range(table[k], f"cluster.{k}", 0, 1, open_low=True)
               for k in ("mfu", "mbu") if k in table}
    if "step_overhead_ms" in table:
        numbers["step_overhead_ms"] = in_range(table["step_overhead_ms"], "cluster.step_overhead_ms", 0,
                                               MAX_STEP_OVERHEAD_MS)
    gpu, model = _name(table, "gpu", "cluster", "h100"), _name(table, "model", "cluster", "llama-3-8b")
    if "gpu_spec" in table:
        if "gpu" in table:
            raise ConfigError("cluster.gpu, cluster.gpu_spec: give one of them, not both")
        numbers["gpu_spec"] = custom_gpu(table["gpu_spec"])
        gpu = numbers["gpu_spec"].name
    else:
        get_gpu(gpu)
    model = resolve_model(model, base_dir)  # a config.json path, like a trace's, is relative to the config file
    get_model(model)
    if "calibration" in table:
        numbers |= _calibration(table, base_dir, gpu, get_model(model).name)
    return ClusterConfig(workers=workers, gpu=gpu, model=model, tensor_parallel=tp, **numbers, **memory)


def _memory(table: Mapping[str, Any]) -> dict[str, Any]:
    """[scheduler] gpu_memory_utilization and num_gpu_blocks, which size the cluster's KV cache."""
    memory = {}
    if "gpu_memory_utilization" in table:
        memory["gpu_memory_utilization"] = in_range(table["gpu_memory_utilization"],
                                                    "scheduler.gpu_memory_utilization", 0, 1, open_low=True)
    if "num_gpu_blocks" in table:
        memory["num_gpu_blocks"] = in_range(table["num_gpu_blocks"], "scheduler.num_gpu_blocks", 1, MAX_COUNT,
                                            integer=True)
    return memory


def _calibration(table: Mapping[str, Any], base_dir: Path | None, gpu: str, model: str) -> dict[str, float]:
    """The coefficients of the calibration file `fairbatch calibrate` wrote, refused for another GPU
    or model, or beside coefficients given by hand."""
    given = [key for key in CALIBRATED if key in table]
    if given:
        raise ConfigError(f"cluster.calibration, cluster.{given[0]}: give one of them, not both")
    name = _name(table, "calibration", "cluster", "")
    path = Path(name) if Path(name).is_absolute() or base_dir is None else Path(base_dir) / name
    calibration = read_toml(path, "calibration file")
    for key, expected in (("gpu", gpu), ("model", model)):
        if calibration.get(key) != expected:
            raise ConfigError(f"cluster.calibration: {path} was fitted for {key} {calibration.get(key)!r}, not "
                              f"{expected!r}; allowed: a calibration of this cluster's GPU and model")
    ranges = {key: CALIBRATION_RANGES[key] for key in CALIBRATED}
    return {key: in_range(calibration.get(key), f"cluster.calibration: {path}: {key}", low, high, open_low=open_low)
            for key, (low, high, open_low) in ranges.items()}


def _policy(table: Any) -> PolicyConfig:
    table = _section(table, "scheduler", SCHEDULER_KEYS)
    policy = _name(table, "policy", "scheduler", "vtc")
    placement = _name(table, "placement", "scheduler", "global")
    params = table.get("policy_params", {})
    if not isinstance(params, Mapping):
        raise ConfigError(f"scheduler.policy_params: must be a table, got {shown(params)}")
    for key, value in params.items():  # every policy parameter is a number; each policy checks its range
        in_range(value, f"scheduler.policy_params.{key}", -1e12, 1e12)
    make_policy(policy, params)  # validates the name and the parameters
    if placement not in PLACEMENTS:
        raise ConfigError(
            f"scheduler.placement: unknown placement {placement!r}; allowed: {', '.join(sorted(PLACEMENTS))}"
        )
    placement_params = table.get("placement_params", {})
    if not isinstance(placement_params, Mapping):
        raise ConfigError(f"scheduler.placement_params: must be a table, got {shown(placement_params)}")
    check_params(placement, placement_params)  # each key a parameter of the placement, in its range
    return PolicyConfig(policy=policy, policy_params=dict(params), placement=placement,
                        placement_params=dict(placement_params))


def _scheduler(table: Mapping[str, Any]) -> SchedulerConfig:
    """Types and bounds here, the rules between keys in SchedulerConfig (max_num_seqs <= max_num_batched_tokens)."""
    limits = {"max_num_batched_tokens": MAX_TOKENS, "max_num_seqs": MAX_TOKENS, "block_size": MAX_BLOCK_SIZE,
              "max_model_len": MAX_TOKENS, "max_queued": MAX_COUNT, "max_queued_tokens": MAX_COUNT}
    values = {k: in_range(table[k], f"scheduler.{k}", 1, high, integer=True)
              for k, high in limits.items() if k in table}
    values.update(_isolation(table))
    if "kv_watermark" in table:
        values["kv_watermark"] = as_number(table["kv_watermark"], "scheduler.kv_watermark", "in [0, 1)")
    if "service_weights" in table:
        values["service_weights"] = _service_weights(table["service_weights"])
    if "enable_prefix_caching" in table:
        values["enable_prefix_caching"] = _boolean(table["enable_prefix_caching"], "scheduler.enable_prefix_caching")
    if "cache_isolation" in table:
        values["cache_isolation"] = _name(table, "cache_isolation", "scheduler", "none")
    return SchedulerConfig(**values)


def _isolation(table: Mapping[str, Any]) -> dict[str, Any]:
    """The isolation keys' types; their bounds against the step's limits are SchedulerConfig's."""
    values: dict[str, Any] = {}
    for key in ("isolation", "fair_prefill"):
        if key in table:
            values[key] = _boolean(table[key], f"scheduler.{key}")
    for key in ("over_share_prefill_tokens", "slot_headroom", "latency_budget_tokens"):
        if key in table:
            values[key] = in_range(table[key], f"scheduler.{key}", 0, MAX_TOKENS, integer=True)
    if "kv_headroom" in table:
        values["kv_headroom"] = as_number(table["kv_headroom"], "scheduler.kv_headroom", "in [0, 0.5)")
    if "share_preempt_after_s" in table:
        bound = table["share_preempt_after_s"]
        never = isinstance(bound, float) and bound == float("inf")  # inf: never, as unset
        values["share_preempt_after_s"] = None if never else in_range(bound, "scheduler.share_preempt_after_s", 0,
                                                                      MAX_SECONDS)
    return values


def latency_budgets(config: SimConfig, specs: Sequence[TenantSpec]) -> tuple[int, ...]:
    """Per tenant, the step's tokens while its first token waits (the core's `latency_budgets`):
    what its SLO allows by the cost model, or scheduler.latency_budget_tokens for a tenant without
    one; none at all (0) where latency_budget_tokens is 0."""
    sched = config.scheduler
    if not sched.step_latency_budget:
        return (0,) * len(specs)
    cost = config.cluster.cost_model()
    return tuple(slo_step_budget(cost, s.slo_ttft_ms, s.slo_tpot_ms, sched.max_num_seqs, sched.max_num_batched_tokens,
                                 sched.step_latency_budget) for s in specs)


def _model_len(scheduler: SchedulerConfig, cluster: ClusterConfig) -> SchedulerConfig:
    """max_model_len defaults to the model's context length where its spec has one (else None: what
    a worker's KV cache holds), and may not exceed it, as vLLM refuses."""
    model = get_model(cluster.model)
    context, asked = model.context_len, scheduler.max_model_len
    if asked is not None and context and asked > context:
        raise ConfigError(f"scheduler.max_model_len: {asked:,} is longer than {model.name}'s context length "
                          f"(max_position_embeddings {context:,}); allowed: <= {context:,}")
    if asked is not None or not context:
        return scheduler
    return dataclasses.replace(scheduler, max_model_len=context)


def _service_weights(value: Any) -> tuple[float, ...]:
    key = "scheduler.service_weights"
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise ConfigError(f"{key}: must be a list of two or three numbers [w_p, w_q] or [w_p, w_q, w_cached] "
                          f"in [0, {shown_bound(FACTOR[1])}], got {shown(value)}")
    return tuple(in_range(w, f"{key}[{i}]", 0, FACTOR[1]) for i, w in enumerate(value))


def _check_pool(config: SimConfig) -> None:
    """Rules that need the cost model: the model fits the GPU, and a worker's KV holds a block."""
    cost = config.cluster.cost_model()  # names cluster.tensor_parallel if the weights do not fit
    if config.cluster.num_gpu_blocks is not None:
        return
    sched = config.scheduler
    tokens = cost.kv_tokens(sched.max_num_batched_tokens, sched.max_num_seqs)
    if tokens < sched.block_size:
        raise ConfigError(f"scheduler.block_size: a worker's KV cache holds {max(tokens, 0):,} tokens after the "
                          f"activations of max_num_batched_tokens {sched.max_num_batched_tokens:,}, less than one "
                          f"block of {sched.block_size:,}; allowed: <= {max(tokens, 0):,}, or fewer "
                          f"max_num_batched_tokens, or a higher gpu_memory_utilization")


def check_runnable(config: SimConfig, workload: Workload) -> None:
    """Reject, before the run, what would make it useless or unbounded: a tenant whose quota refuses
    its smallest request (every one of them would be rejected), a pool cap on queued prompt tokens
    below the smallest prompt, and a timeline of more samples than memory holds."""
    smallest = np.full(len(workload.tenants), np.iinfo(np.int64).max)
    np.minimum.at(smallest, workload.tenant, workload.prompt_tokens)
    for i, spec in enumerate(workload.tenants):
        if smallest[i] == np.iinfo(np.int64).max:  # a tenant with no requests cannot be refused
            continue
        try:
            check_quota_admits(spec.quota, int(smallest[i]), spec.max_new_tokens, f"tenants[{i}]")
        except ConfigError as err:
            name_tenant(err, spec.name)
            raise
    _check_shared_prefixes(config)
    cap, least = config.scheduler.max_queued_tokens, int(workload.prompt_tokens.min(initial=MAX_TOKENS))
    if cap is not None and cap < least:
        raise ConfigError(f"scheduler.max_queued_tokens: a cap of {cap:,} prompt tokens cannot queue the smallest "
                          f"prompt ({least:,} tokens), so every request would be rejected; allowed: >= {least:,}")
    _check_samples(config, workload)


def _check_shared_prefixes(config: SimConfig) -> None:
    """A group's system prompt must leave room for the request's own tokens within max_model_len:
    else every request of the tenant would be refused as prompt_too_long."""
    limit = config.scheduler.max_model_len
    for i, spec in enumerate(config.tenants):
        shared = spec.shared_prefix
        if limit is not None and shared is not None and shared.tokens + 2 > limit:
            raise ConfigError(f"tenants[{i}].shared_prefix.tokens: a system prompt of {shared.tokens:,} tokens leaves "
                              f"no room within max_model_len {limit:,} (tenant {spec.name!r}); allowed: <= {limit - 2:,}")


def _check_samples(config: SimConfig, workload: Workload) -> None:
    span = float(workload.arrival_s[-1]) if len(workload) else 0.0
    if config.horizon_s is not None:
        span = min(span, config.horizon_s)
    tenants = max(len(workload.tenants), 1)
    limit = min(MAX_SAMPLES, MAX_TENANT_SAMPLES // tenants)
    interval = config.sample_interval_s
    if span / interval + 1 > limit:
        need = span / (limit - 1)
        shorter = "arrivals over less virtual time (duration_s, horizon_s, higher rates or load)"
        allowed = f">= {need:.3g} s, or {shorter}" if need <= MAX_SECONDS else shorter
        raise ConfigError(
            f"sample_interval_s: {interval:g} s over {span:.4g} s of arrivals would keep more than {limit:,} samples "
            f"of {tenants:,} tenants' service in memory (at most {MAX_SAMPLES:,} samples and "
            f"{MAX_TENANT_SAMPLES:,} tenant-samples); allowed: {allowed}")


def _tenants(tables: Any, base_dir: Path | None) -> tuple[TenantSpec, ...]:
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"tenants: at least one [[tenants]] table is required, got {shown(tables)}")
    specs = tuple(TenantSpec.from_config(t, i, base_dir) for i, t in enumerate(tables))
    names = [spec.name for spec in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"tenants: the name {duplicate!r} is used twice; names must be unique")
    return specs


def config_to_dict(config: SimConfig) -> dict[str, Any]:
    """A JSON-able dict of the whole config (with derived fields such as fitted distributions); a
    tenant's `stages`, `shared_prefix` and `multi_turn` only where it has them."""
    out = _plain(dataclasses.asdict(config))
    for key in MEMORY_KEYS:  # written where the TOML takes them
        out["scheduler"][key] = out["cluster"].pop(key)
    if not out["policy"]["placement_params"]:  # left out unset, so earlier runs' JSON reads the same
        del out["policy"]["placement_params"]
    for tenant in out["tenants"]:
        for key in OPTIONAL_TENANT_KEYS:
            if tenant[key] is None:
                del tenant[key]
    return out


OPTIONAL_TENANT_KEYS = ("stages", "shared_prefix", "multi_turn")  # left out of a config's JSON when unset


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value
