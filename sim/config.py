"""Simulation configuration: the TOML schema, its defaults, validation, and CLI overrides.

`load_config` reads a TOML file (or the built-in default) into a frozen `SimConfig`; every error
names the key and the allowed values or range. `config_to_dict` gives the JSON-able form written
with results, so a run can be reproduced from its output.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.core import SchedulerConfig
from scheduler.errors import ConfigError
from scheduler.placement import PLACEMENTS
from scheduler.policies import make_policy

from .costmodel import RooflineCostModel
from .hardware import get_gpu, get_model
from .workload import TenantSpec, _check_keys, _integer, _number

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
max_batched_tokens = 4096
max_seqs = 256
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
    memory_fraction: float = 0.9

    def cost_model(self) -> RooflineCostModel:
        return RooflineCostModel(
            get_gpu(self.gpu), get_model(self.model), self.tensor_parallel, mfu=self.mfu, mbu=self.mbu,
            step_overhead_s=self.step_overhead_ms / 1000, memory_fraction=self.memory_fraction,
        )


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    policy: str = "vtc"
    policy_params: Mapping[str, Any] = field(default_factory=dict)
    placement: str = "global"


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


TOP_KEYS = ("seed", "duration_s", "requests", "load", "horizon_s", "sample_interval_s", "fast_forward", "cluster", "scheduler", "tenants")
CLUSTER_KEYS = tuple(f.name for f in dataclasses.fields(ClusterConfig))
SCHEDULER_KEYS = ("policy", "policy_params", "placement", "max_batched_tokens", "max_seqs", "block_size",
                  "kv_watermark", "service_weights", "max_queued", "max_queued_tokens")


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The table of a TOML file; a missing file or bad TOML is a ConfigError naming the path."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


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
    _check_keys(table, TOP_KEYS, "config")
    duration, requests = _horizon(table)
    horizon = table.get("horizon_s")
    config = SimConfig(
        seed=_integer(table.get("seed", 0), "seed"),
        duration_s=duration,
        requests=requests,
        load=_positive(table.get("load", 1.0), "load"),
        horizon_s=None if horizon is None else _positive(horizon, "horizon_s"),
        sample_interval_s=_positive(table.get("sample_interval_s", 1.0), "sample_interval_s"),
        fast_forward=_boolean(table.get("fast_forward", True), "fast_forward"),
        cluster=_cluster(table.get("cluster", {})),
        policy=_policy(table.get("scheduler", {})),
        scheduler=_scheduler(table.get("scheduler", {})),
        tenants=_tenants(table.get("tenants"), base_dir),
    )
    config.cluster.cost_model()  # fails early, naming the key, if the model does not fit the GPU
    return config


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _positive(value: Any, key: str) -> float:
    number = _number(value, key, "> 0")
    if number <= 0:
        raise ConfigError(f"{key}: must be > 0, got {value!r}")
    return number


def _horizon(table: Mapping[str, Any]) -> tuple[float | None, int | None]:
    if "requests" in table and "duration_s" in table:
        raise ConfigError("duration_s, requests: give one of them, not both")
    if "requests" in table:
        requests = _integer(table["requests"], "requests", ">= 1")
        if requests < 1:
            raise ConfigError(f"requests: must be >= 1, got {requests}")
        return None, requests
    return _positive(table.get("duration_s", 180.0), "duration_s"), None


def _section(table: Any, name: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{name}: must be a table, got {table!r}")
    _check_keys(table, allowed, name)
    return table


def _cluster(table: Any) -> ClusterConfig:
    table = _section(table, "cluster", CLUSTER_KEYS)
    workers = _integer(table.get("workers", 2), "cluster.workers", ">= 1")
    if workers < 1:
        raise ConfigError(f"cluster.workers: must be an integer >= 1, got {workers}")
    tp = _integer(table.get("tensor_parallel", 1), "cluster.tensor_parallel")
    numbers = {k: _number(table[k], f"cluster.{k}") for k in ("mfu", "mbu", "step_overhead_ms", "memory_fraction")
               if k in table}
    get_gpu(table.get("gpu", "h100"))
    get_model(table.get("model", "llama-3-8b"))
    return ClusterConfig(workers=workers, gpu=table.get("gpu", "h100"), model=table.get("model", "llama-3-8b"),
                         tensor_parallel=tp, **numbers)


def _policy(table: Any) -> PolicyConfig:
    table = _section(table, "scheduler", SCHEDULER_KEYS)
    policy = table.get("policy", "vtc")
    placement = table.get("placement", "global")
    params = table.get("policy_params", {})
    if not isinstance(params, Mapping):
        raise ConfigError(f"scheduler.policy_params: must be a table, got {params!r}")
    make_policy(policy, params)  # validates the name and the parameters
    if placement not in PLACEMENTS:
        raise ConfigError(
            f"scheduler.placement: unknown placement {placement!r}; allowed: {', '.join(sorted(PLACEMENTS))}"
        )
    return PolicyConfig(policy=policy, policy_params=dict(params), placement=placement)


def _scheduler(table: Mapping[str, Any]) -> SchedulerConfig:
    keys = ("max_batched_tokens", "max_seqs", "block_size", "kv_watermark", "max_queued", "max_queued_tokens")
    values = {k: table[k] for k in keys if k in table}
    if "service_weights" in table:
        values["service_weights"] = tuple(table["service_weights"])
    return SchedulerConfig(**values)


def _tenants(tables: Any, base_dir: Path | None) -> tuple[TenantSpec, ...]:
    if not isinstance(tables, list) or not tables:
        raise ConfigError("tenants: at least one [[tenants]] table is required")
    specs = tuple(TenantSpec.from_config(t, i, base_dir) for i, t in enumerate(tables))
    names = [spec.name for spec in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"tenants: the name {duplicate!r} is used twice; names must be unique")
    return specs


def config_to_dict(config: SimConfig) -> dict[str, Any]:
    """A JSON-able dict of the whole config (with derived fields such as fitted distributions)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value
