"""`fairbatch bench prefix`: prefix caching and cache-aware routing, measured.

Two workloads, each with the cache off and on under every placement:

  mooncake  the Mooncake conversation trace on eight H100s (scenarios/prefix_mooncake.toml), with
            the hit rate an unlimited cache gives as the reference: the same arrivals on one worker,
            and on the eight under prefix_affinity, with KV blocks beyond any need (nothing evicted)
  shared    three tenants on four H100s (scenarios/prefix_shared.toml): users behind shared system
            prompts, multi-turn agents, and long prompts that share nothing; under vtc and dlpm
  contended the same mix on one worker with 6,000 KV blocks, past its capacity (late binding, vtc
            and dlpm): a backlog to choose from and a cache that evicts

For each run: the token hit rate, TTFT and TPOT p50/p99, request and output throughput, and each
tenant's share of the service. The tables are markdown (`prefix_markdown`), the figure a bar
chart of hit rate and TTFT p50 per placement (`prefix_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scheduler.errors import ConfigError
from scheduler.placement import PLACEMENTS

from .points import Point, load_table, make_point, with_overrides
from .store import Outcome
from .tables import fmt, md_table

ORDER = ("global", "round_robin", "least_loaded", "power_of_two", "prefix_affinity", "scorer")
PLACEMENT_ORDER = tuple(p for p in ORDER if p in PLACEMENTS) + tuple(sorted(set(PLACEMENTS) - set(ORDER)))
UNLIMITED_BLOCKS = 20_000_000  # KV blocks per worker no run fills: nothing is ever evicted
# name: (scenario, policies, placements with the cache on (None: every one), overrides)
WORKLOADS = {
    "mooncake": ("prefix_mooncake", ("fcfs",), None, {}),
    "shared": ("prefix_shared", ("vtc", "dlpm"), None, {}),
    # The shared mix on one worker with 6,000 KV blocks, past its capacity: a backlog to choose
    # from and a cache that evicts, where locality-aware order can raise throughput.
    "contended": ("prefix_shared", ("vtc", "dlpm"), ("global",),
                  {"cluster.workers": 1, "scheduler.num_gpu_blocks": 6000, "horizon_s": 300.0}),
}


def prefix_points(data: Path | None = None, duration_s: float | None = None) -> list[Point]:
    """Every run of the benchmark. `data` replaces the scenarios' ../shared/data folder."""
    points = []
    for workload, (scenario, policies, placements, overrides) in WORKLOADS.items():
        base = with_overrides(_base(scenario, data, duration_s), overrides)
        for policy in policies:
            points.append(_point(base, workload, policy, "global", cache=False))
            points += [_point(base, workload, policy, placement, cache=True)
                       for placement in placements or PLACEMENT_ORDER]
        if workload == "mooncake":
            points += _references(base, workload)
    return points


def _base(scenario: str, data: Path | None, duration_s: float | None) -> dict[str, Any]:
    table = load_table(scenario)
    if data is not None:
        for tenant in table["tenants"]:
            if "trace" in tenant:
                tenant["trace"] = str(Path(data) / Path(tenant["trace"]).name)
    return with_overrides(table, {"duration_s": duration_s}) if duration_s is not None else table


def _point(base: dict, workload: str, policy: str, placement: str, cache: bool, reference: str | None = None,
           overrides: dict | None = None) -> Point:
    labels = {"scenario": workload, "policy": policy, "placement": placement, "cache": "on" if cache else "off"}
    if reference is not None:
        labels["reference"] = reference
    keys = {"scheduler.policy": policy, "scheduler.placement": placement, "scheduler.enable_prefix_caching": cache}
    return make_point(labels, with_overrides(base, keys | (overrides or {})))


def _references(base: dict, workload: str) -> list[Point]:
    """The unlimited cache: nothing evicted, on one worker (every request sees every earlier one)
    and on the pool under prefix_affinity (what routing leaves of it)."""
    unlimited = {"scheduler.num_gpu_blocks": UNLIMITED_BLOCKS}
    return [_point(base, workload, "fcfs", "global", True, "unlimited, 1 worker", unlimited | {"cluster.workers": 1}),
            _point(base, workload, "fcfs", "prefix_affinity", True, "unlimited, prefix_affinity", unlimited)]


def prefix_section(data: Path, figures: Path, report_dir: Path, work: Path, **session: Any) -> str:
    """The RESULTS.md section: the runs' tables, the targets' figures and the figure."""
    markdown, head = run_prefix(work, figures, data, **session)
    relative = os.path.relpath(head["figure"], report_dir)
    return "\n\n".join([
        "## Prefix caching and cache-aware routing",
        "`fairbatch bench prefix` (benchmarks/prefix.py): the Mooncake conversation trace (Qin et al., FAST'25; "
        "Apache-2.0) at 3x its rate on eight H100s serving Llama-3.1-8B, and a three-tenant shared-prefix mix on "
        "four, with the prefix cache off and on under every placement; the mix again on one worker with "
        "6,000 KV blocks past its capacity, vtc against dlpm. Hit rate: prompt tokens found cached over those "
        "looked up. The unlimited references run the same arrivals with KV blocks beyond any need, on one "
        "worker (every request sees every earlier one) and on the eight under prefix_affinity.",
        _targets(head), markdown, f"![hit rate and TTFT p50 per placement]({relative})"])


def _targets(head: dict) -> str:
    if not head:
        return ""
    return (f"Mooncake: prefix_affinity finds {head['affinity_hit_rate']:.1%} of prompt tokens cached, an unlimited "
            f"cache {head['unlimited_hit_rate']:.1%} (one worker) and {head['unlimited_affinity_hit_rate']:.1%} "
            f"(eight, prefix_affinity): routing keeps "
            f"{head['unlimited_affinity_hit_rate'] / head['unlimited_hit_rate']:.0%} of the reuse, and the rest is "
            f"lost to the KV memory of real workers, which evict the least recently used blocks first. TTFT p50 "
            f"under round robin is {head['ttft_p50_ratio']:.1f}x that under prefix_affinity." + _contended(head))


def _contended(head: dict) -> str:
    if "contended_vtc_request_throughput" not in head:
        return ""
    vtc, dlpm = head["contended_vtc_request_throughput"], head["contended_dlpm_request_throughput"]
    return (f" Contended mix: dlpm completes {dlpm:.2f} req/s against vtc's {vtc:.2f} ({dlpm / vtc - 1:+.1%}), "
            f"finding {head['contended_dlpm_prefix_cache_hit_rate']:.1%} of prompt tokens cached against "
            f"{head['contended_vtc_prefix_cache_hit_rate']:.1%}, with a max service gap of "
            f"{head['contended_dlpm_max_service_gap']:,.0f} against vtc's {head['contended_vtc_max_service_gap']:,.0f} "
            f"(its stated bound is VTC's plus 2 x bound, README \"Policies\").")


def run_prefix(out: Path, figures: Path | None = None, data: Path | None = None, duration_s: float | None = None,
               **session: Any) -> tuple[str, dict]:
    """Run every point (cached in OUT/runs); returns the markdown section and the headline figures."""
    from .session import Session

    points = prefix_points(data, duration_s)
    with Session("prefix", out, total=len(points), **session) as run:
        outcomes = run.run(points)
    failed = [o for o in outcomes if o.doc is None]
    if failed:
        raise ConfigError(f"bench prefix: {len(failed)} runs failed, the first: {failed[0].error}")
    figure = prefix_figure(outcomes, (figures or out) / "prefix-cache.png")
    return prefix_markdown(outcomes), headline(outcomes) | {"figure": figure}


# ----- tables ----------------------------------------------------------------------------------


def prefix_markdown(outcomes: Sequence[Outcome]) -> str:
    """A table per workload: a row per run, and the per-tenant service shares under it."""
    blocks = []
    for workload in WORKLOADS:
        runs = [o for o in outcomes if o.point.labels["scenario"] == workload and o.doc is not None]
        if runs:
            blocks.append("\n\n".join(part for part in (f"### {workload}", _run_table(runs), _share_table(runs)) if part))
    return "\n\n".join(blocks)


def _run_table(runs: Sequence[Outcome]) -> str:
    header = ["policy", "placement", "cache", "hit rate", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms",
              "TPOT p99 ms", "req/s", "output tok/s"]
    rows = []
    for o in runs:
        s, labels = o.doc["summary"], o.point.labels
        rows.append([labels["policy"], labels.get("reference") or labels["placement"], labels["cache"],
                     fmt(s.get("prefix_cache_hit_rate"), "prefix_cache_hit_rate"), fmt(s["median_ttft_ms"]), fmt(s["p99_ttft_ms"]),
                     fmt(s["median_tpot_ms"]), fmt(s["p99_tpot_ms"]), fmt(s["request_throughput"]),
                     fmt(s["output_throughput"])])
    return md_table(header, rows)


def _share_table(runs: Sequence[Outcome]) -> str:
    tenants = list(runs[0].doc["tenants"])
    if len(tenants) < 2:
        return ""
    header = ["policy", "placement", "cache", *(f"{t} service share" for t in tenants),
              *(f"{t} hit rate" for t in tenants), "Jain"]
    rows = []
    for o in runs:
        if o.point.labels.get("reference"):
            continue
        t, labels = o.doc["tenants"], o.point.labels
        rows.append([labels["policy"], labels["placement"], labels["cache"],
                     *(fmt(t[name]["service_share"], "service_share") for name in tenants),
                     *(fmt(t[name]["prefix_cache_hit_rate"], "prefix_cache_hit_rate") for name in tenants),
                     fmt(o.doc["fairness"]["jain_index"], "jain_index")])
    return md_table(header, rows)


def headline(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The figures the targets judge, from the mooncake runs: hit rates of affinity and of the
    unlimited references, and TTFT p50 of affinity against round robin."""
    def find(**labels) -> dict | None:
        for o in outcomes:
            if o.doc is not None and all(o.point.labels.get(k) == v for k, v in labels.items()):
                return o.doc["summary"]
        return None

    def fairness(**labels) -> dict:
        for o in outcomes:
            if o.doc is not None and all(o.point.labels.get(k) == v for k, v in labels.items()):
                return o.doc["fairness"]
        return {}

    affinity = find(scenario="mooncake", placement="prefix_affinity", cache="on", reference=None)
    robin = find(scenario="mooncake", placement="round_robin", cache="on")
    unlimited = find(scenario="mooncake", reference="unlimited, 1 worker")
    routed = find(scenario="mooncake", reference="unlimited, prefix_affinity")
    if not (affinity and robin and unlimited and routed):
        return {}
    head = {"affinity_hit_rate": affinity["prefix_cache_hit_rate"], "unlimited_hit_rate": unlimited["prefix_cache_hit_rate"],
            "unlimited_affinity_hit_rate": routed["prefix_cache_hit_rate"],
            "ttft_p50_ratio": robin["median_ttft_ms"] / affinity["median_ttft_ms"]}
    contended = {p: find(scenario="contended", policy=p, cache="on") for p in ("vtc", "dlpm")}
    if all(contended.values()):
        head |= {f"contended_{p}_{key}": contended[p][key] for p in contended
                 for key in ("request_throughput", "prefix_cache_hit_rate")}
        head |= {f"contended_{p}_max_service_gap": fairness(scenario="contended", policy=p, cache="on").get(
            "max_service_gap") for p in contended}
    return head


# ----- figure ----------------------------------------------------------------------------------


def prefix_figure(outcomes: Sequence[Outcome], path: Path) -> Path:
    """Hit rate and TTFT p50 per placement with the cache on (the cache off as a dashed line), a
    row per workload that runs every placement."""
    from .plots import bars_figure

    panels = []
    for workload in (w for w in WORKLOADS if WORKLOADS[w][2] is None):
        policy = WORKLOADS[workload][1][0]
        mine = [o for o in outcomes if o.doc is not None and o.point.labels["scenario"] == workload
                and o.point.labels["policy"] == policy and not o.point.labels.get("reference")]
        runs = {o.point.labels["placement"]: o.doc["summary"] for o in mine if o.point.labels["cache"] == "on"}
        off = next((o.doc["summary"] for o in mine if o.point.labels["cache"] == "off"), {})
        names = [p for p in PLACEMENT_ORDER if p in runs]
        for key, label in (("prefix_cache_hit_rate", "token hit rate"), ("median_ttft_ms", "TTFT p50 (ms)")):
            panels.append((f"{workload} ({policy}): {label}", names, [runs[n].get(key) or 0.0 for n in names],
                           off.get(key) if key == "median_ttft_ms" else None))
    return bars_figure(panels, path, baseline="cache off (global)")
