"""`fairbatch bench compare`: one scenario under several policies (and placements) at several load
levels (the `load` key: a multiplier on every tenant's rate, and on a trace's speed).

The points are the product loads x policies x placements; the output is one results table per load
with the DESIGN metric keys, per-tenant tables (p99 TTFT with SLO attainment, service share) and
the fairness figures (Jain's index, the largest service gap) in the results table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scheduler.errors import ConfigError

from .points import Point, load_table, make_point, with_overrides
from .store import Outcome
from .tables import group, results_table, tenant_tables

POLICIES = ("fcfs", "priority", "vtc", "drr", "edf", "slo")


def scenario_label(scenario: str | Path) -> str:
    return Path(scenario).stem


def compare_points(scenario: str | Path, policies: Sequence[str] = POLICIES, loads: Sequence[float] = (1.0,),
                   placements: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
                   table: Mapping[str, Any] | None = None, label: str | None = None) -> list[Point]:
    """The grid of a comparison. `table` replaces reading `scenario` (a built scenario, e.g. ServeGen)."""
    for name, values in (("--policies", policies), ("--loads", loads), ("--placements", placements)):
        if values is not None and len(values) == 0:
            raise ConfigError(f"{name}: give at least one value")
    base = with_overrides(table if table is not None else load_table(scenario), overrides or {})
    placements = placements or [base.get("scheduler", {}).get("placement", "global")]
    label = label or scenario_label(scenario)
    points = []
    for load in loads:
        for policy in policies:
            for placement in placements:
                labels = {"scenario": label, "policy": policy, "placement": placement, "load": load}
                keys = {"scheduler.policy": policy, "scheduler.placement": placement, "load": load}
                points.append(make_point(labels, with_overrides(base, keys)))
    return points


def compare_markdown(outcomes: Sequence[Outcome], heading: str = "###") -> str:
    """Per scenario and load: the results table and the per-tenant tables; failed points listed."""
    points = [{"key": o.point.key, "labels": o.point.labels} for o in outcomes]
    docs = {o.point.key: o.doc for o in outcomes if o.doc is not None}
    blocks = []
    for scenario, loads in group(points, docs).items():
        for load, rows in loads.items():
            blocks.append(f"{heading} {scenario}, {load_heading(load, rows)}")
            blocks += [results_table(rows), tenant_tables(rows)]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        blocks.append("Failed points:\n\n" + "\n".join(
            f"- {', '.join(f'{k}={v}' for k, v in o.point.labels.items())}: {o.error}" for o in failed))
    return "\n\n".join(blocks) + "\n"


def load_heading(load: Any, rows: list[tuple[str, dict]]) -> str:
    rate = rows[0][1].get("goodput", {}).get("offered_request_rate") if rows else None
    text = "all points" if load is None else f"load x{load:g}"
    return text + (f" (offered {rate:.2f} req/s)" if rate is not None else "")
