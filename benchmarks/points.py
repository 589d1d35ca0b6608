"""Grid points of the benchmark suite: scenario tables, overrides by dotted key, cache keys, one run.

A point is a plain config table (the TOML schema of sim.config, trace paths made absolute) and the
labels that place it in a grid (scenario, policy, load, ...). `run_point(table)` is a pure function
of the table, whose seed is in it: the same table gives a byte-identical JSON document on any
machine and under any executor, so results can be cached by `point_key`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.errors import ConfigError
from scheduler.outcomes import Outcome
from sim.cluster import simulate
from sim.config import (CLUSTER_KEYS, SCHEDULER_KEYS, TOP_KEYS, SimConfig, config_from_dict, config_to_dict, read_toml,
                        set_dotted)
from sim.results import RunData, summarize
from sim.workload import TENANT_KEYS

from .series import series

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# Bump when the run document or the simulator's results change meaning: old cache entries then miss.
FORMAT = 1
TOP_SCALARS = tuple(k for k in TOP_KEYS if k not in ("cluster", "scheduler", "tenants"))
# Short label names for the keys every comparison varies.
LABEL_ALIASES = {"scheduler.policy": "policy", "scheduler.placement": "placement"}


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    labels: dict[str, Any]
    table: dict[str, Any]
    key: str


# ---------------------------------------------------------------------------------------------
# scenarios


def scenario_path(name: str | Path) -> Path:
    """A scenario file: a name in benchmarks/scenarios (without .toml) or a path."""
    path = Path(name)
    if path.suffix == ".toml" or path.parent != Path("."):
        if not path.is_file():
            raise ConfigError(f"scenario: file not found: {path}")
        return path
    candidate = SCENARIOS / f"{name}.toml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.toml")))
        raise ConfigError(f"scenario: unknown scenario {str(name)!r}; allowed: {known}, or a path to a .toml file")
    return candidate


def load_table(name: str | Path) -> dict[str, Any]:
    """A scenario's TOML table with its relative trace paths made absolute."""
    path = scenario_path(name)
    return resolve_paths(read_toml(path, "scenario"), path.resolve().parent)


def resolve_paths(table: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """A copy of `table` whose trace paths are absolute, so it runs the same from anywhere."""
    table = copy.deepcopy(dict(table))
    tenants = table.get("tenants")
    for tenant in (t for t in tenants if isinstance(t, dict)) if isinstance(tenants, list) else ():
        lengths = [tenant[k] for k in ("prompt_tokens", "output_tokens") if isinstance(tenant.get(k), dict)]
        for holder in [tenant, *lengths]:
            if isinstance(holder.get("trace"), str):
                holder["trace"] = str((base_dir / Path(holder["trace"]).expanduser()).resolve())
    return table


# ---------------------------------------------------------------------------------------------
# overrides by dotted key


def allowed_keys() -> str:
    return (", ".join(TOP_SCALARS) + ", cluster.{" + ", ".join(CLUSTER_KEYS) + "}, scheduler.{"
            + ", ".join(SCHEDULER_KEYS) + "}, scheduler.policy_params.<name>, tenants.<name or *>.<key>")


def check_key(table: Mapping[str, Any], dotted: str) -> None:
    """Raise ConfigError naming `dotted` unless it is a config key that can be set."""
    if not isinstance(dotted, str) or not dotted:
        raise ConfigError(f"config key: must be a non-empty dotted string, got {dotted!r}")
    parts = dotted.split(".")
    head, rest = parts[0], parts[1:]
    ok = (
        (head in TOP_SCALARS and not rest)
        or (head == "cluster" and len(rest) == 1 and rest[0] in CLUSTER_KEYS)
        or (head == "scheduler" and len(rest) == 1 and rest[0] in SCHEDULER_KEYS)
        or (head == "scheduler" and len(rest) == 2 and rest[0] == "policy_params")
        or (head == "tenants" and len(rest) >= 2 and rest[1] in TENANT_KEYS)
    )
    if not ok:
        raise ConfigError(f"{dotted}: unknown config key; allowed: {allowed_keys()}")
    if head == "tenants":
        tenants = table.get("tenants")
        names = [t.get("name") for t in tenants if isinstance(t, Mapping)] if isinstance(tenants, list) else []
        if not names:
            raise ConfigError(f"{dotted}: the scenario has no [[tenants]] to set")
        if rest[0] != "*" and rest[0] not in names:
            raise ConfigError(f"{dotted}: no tenant named {rest[0]!r}; tenants: {', '.join(map(str, names))}, or *")


def with_overrides(table: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `table` with each dotted key set. A new policy drops the scenario's policy_params
    (they belong to the old policy); params among the overrides are set after that."""
    out = copy.deepcopy(dict(table))
    old_policy = out.get("scheduler", {}).get("policy", "vtc")
    for dotted in overrides:
        check_key(out, dotted)
    if overrides.get("scheduler.policy", old_policy) != old_policy:
        out.get("scheduler", {}).pop("policy_params", None)
    for dotted, value in overrides.items():
        _set(out, dotted, copy.deepcopy(value))
    return out


def _set(table: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if parts[0] != "tenants":
        set_dotted(table, dotted, value)  # sim.config's own rule (requests replaces duration_s, ...)
        return
    for tenant in table["tenants"]:
        if isinstance(tenant, dict) and parts[1] in ("*", tenant.get("name")):
            set_dotted(tenant, ".".join(parts[2:]), value)


def label_name(dotted: str) -> str:
    return LABEL_ALIASES.get(dotted, dotted)


# ---------------------------------------------------------------------------------------------
# points


def make_point(labels: Mapping[str, Any], table: Mapping[str, Any]) -> Point:
    """Validate `table` (errors name the point) and key it by its resolved config."""
    try:
        config = config_from_dict(table)
    except ConfigError as err:
        where = ", ".join(f"{k}={v}" for k, v in labels.items())
        raise ConfigError(f"{err} (point {where})" if where else str(err)) from None
    return Point(dict(labels), dict(table), point_key(config))


def point_key(config: SimConfig) -> str:
    """16 hex digits of SHA-256 over the resolved config (defaults filled in), so two spellings of
    one config share a cache entry."""
    text = json.dumps({"format": FORMAT, "config": config_to_dict(config)}, sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_point(table: Mapping[str, Any]) -> dict[str, Any]:
    """Simulate one config table: the run document (JSON-ready, deterministic)."""
    config = config_from_dict(table)
    data = simulate(config)
    return {
        "format": FORMAT,
        "key": point_key(config),
        "seed": config.seed,
        "config": dict(table),
        **summarize(data),
        "goodput": slo_attainment(data, config),
        "series": series(data, config.scheduler.block_size),
    }


def slo_attainment(data: RunData, config: SimConfig) -> dict[str, Any]:
    """DistServe's attainment: the fraction of all submitted requests (rejected and unfinished ones
    count as misses) whose TTFT met their tenant's SLO, whose TPOT did, and both; overall and per
    tenant. Overall, a request whose tenant has no SLO meets it; a tenant without any SLO has no
    attainment of its own (None, not 100%). A single-token request has no TPOT and meets that SLO
    once finished."""
    recs = data.records
    ttft_slo = np.array([_ms(t.slo_ttft_ms) for t in data.tenants])[recs["tenant"]]
    tpot_slo = np.array([_ms(t.slo_tpot_ms) for t in data.tenants])[recs["tenant"]]
    finished = recs["outcome"] == Outcome.FINISHED.code
    with np.errstate(invalid="ignore"):
        ttft = (recs["first_token"] - recs["arrival"]) * 1e3
        tpot = (recs["finish"] - recs["first_token"]) * 1e3 / np.maximum(recs["output_tokens"] - 1, 1)
        ttft_ok = np.isinf(ttft_slo) | (ttft <= ttft_slo)
        tpot_ok = np.isinf(tpot_slo) | (finished & ((recs["output_tokens"] <= 1) | (tpot <= tpot_slo)))
    n = int(recs.size)
    arrivals = config.duration_s if config.duration_s is not None else float(recs["arrival"].max(initial=0.0))
    return {
        "requests": n,
        "offered_request_rate": n / arrivals if arrivals > 0 else None,
        **_fractions(ttft_ok, tpot_ok, np.ones(n, dtype=bool)),
        "tenants": {t.name: {"requests": int(np.count_nonzero(recs["tenant"] == i)),
                             **_fractions(ttft_ok, tpot_ok, recs["tenant"] == i, t.has_slo)}
                    for i, t in enumerate(data.tenants)},
    }


def _fractions(ttft_ok: np.ndarray, tpot_ok: np.ndarray, mask: np.ndarray,
               has_slo: bool = True) -> dict[str, float | None]:
    n = int(np.count_nonzero(mask))
    share = (lambda ok: float(np.count_nonzero(ok & mask)) / n) if n and has_slo else (lambda ok: None)
    return {"ttft_attainment": share(ttft_ok), "tpot_attainment": share(tpot_ok),
            "attainment": share(ttft_ok & tpot_ok)}


def _ms(slo: float | None) -> float:
    return np.inf if slo is None else float(slo)
