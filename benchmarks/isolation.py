"""`fairbatch bench isolation`: the noisy-neighbour family, with the isolation mechanisms off and on.

Three quiet tenants with a TTFT SLO share the pool with a flooder (scenarios/isolation_*.toml):

  short  many short requests (they fill the sequence slots and the queue)
  long   few prompts of 16k to 30k tokens (they hold little but take the whole step)
  onoff  bursts of the quiet tenants' own lengths, 10 s on and 10 s off

The flood is 2x to 50x the pool's capacity for its traffic alone (the scenarios set 2x), on one
worker and on four (every rate scaled by the workers), under every policy. Policies that share by
weight (`Policy.shares_fairly`) run with `scheduler.isolation` off (before) and on with its
defaults (after); for the others isolation does nothing, so they run once. Each case is compared
with the quiet tenants alone (the flooder removed) under the same policy and settings.
Throughput is the tokens the pool computed per second (prompt tokens prefilled and output tokens
decoded, every tenant's): under a flood the requests that finish differ by policy, the work done
should not.

A run's figures are those of the requests that arrive after the warm-up (every tenant and the
flood start together from an empty pool, which no running service sees) and before the arrivals
stop; the run goes on for a drain so that the last of them can be served. A quiet request not
served by then counts with the time it waited so far (a lower bound; tables mark such ratios
with >=). The worst ratio of a case is the largest, over the quiet tenants, of p99 TTFT with the
flood over p99 TTFT without it.

`--mechanisms` measures each mechanism alone under vtc (fair prefill, the slot and KV headroom,
the latency budget, and share preemption on top of the defaults): its throughput against
isolation off, and the worst ratio it reaches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.errors import ConfigError
from scheduler.policies import POLICIES as POLICY_CLASSES
from sim.cluster import simulate
from sim.config import config_from_dict
from sim.results import summarize

from .points import FORMAT, Point, load_table, make_point, point_key, with_overrides
from .store import Outcome
from .tables import fmt, md_table

KINDS = {"short": "isolation_short", "long": "isolation_long", "onoff": "isolation_onoff"}
FLOODER = "flooder"
SCENARIO_SIZE = 2.0  # the scenarios' flood rate, over the capacity for the flood alone
SIZES = (2, 5, 10, 20, 50)
WORKERS = (1, 4)
POLICIES = tuple(POLICY_CLASSES)
FAIR = tuple(name for name, cls in POLICY_CLASSES.items() if cls.shares_fairly)
DURATION_S, WARMUP_S, DRAIN_S = 60.0, 6.0, 10.0
QUICK = {"sizes": (2, 50), "workers": (1,), "policies": ("fcfs", "vtc"), "duration_s": 20.0}
TARGET_RATIO = 2.0  # the quiet tenants' p99 TTFT with the flood, at most this times without it
# name: overrides of the scheduler (vtc); "off" and "defaults" are the references
MECHANISMS = {
    "off": {"scheduler.isolation": False},
    "fair prefill": {"scheduler.slot_headroom": 0, "scheduler.kv_headroom": 0, "scheduler.latency_budget_tokens": 0},
    "slot and KV headroom": {"scheduler.fair_prefill": False, "scheduler.latency_budget_tokens": 0},
    "latency budget": {"scheduler.fair_prefill": False, "scheduler.slot_headroom": 0, "scheduler.kv_headroom": 0},
    "defaults": {},
    "defaults + share preemption 0.1 s": {"scheduler.share_preempt_after_s": 0.1},
}
MECHANISM_SIZE = 10


# ----- points ----------------------------------------------------------------------------------


def isolation_points(sizes: Sequence[float] = SIZES, workers: Sequence[int] = WORKERS,
                     policies: Sequence[str] = POLICIES, duration_s: float = DURATION_S,
                     overrides: Mapping[str, Any] | None = None) -> list[Point]:
    """Every run of the family: each kind x size x workers x policy x isolation, and the quiet
    tenants alone for each workers x policy x isolation. fcfs, the reference of throughput and
    utilisation, always runs. `overrides` (dotted keys) apply to every run, before the policy
    and isolation of each."""
    unknown = [p for p in policies if p not in POLICY_CLASSES]
    if unknown:
        raise ConfigError(f"--policies: unknown {', '.join(unknown)}; allowed: {', '.join(POLICY_CLASSES)}")
    policies = list(dict.fromkeys(("fcfs", *policies)))
    points = []
    for n in workers:
        for policy in policies:
            for isolation in _settings(policy):
                labels = {"workers": n, "policy": policy, "isolation": isolation}
                keys = dict(overrides or {}) | _overrides(n, policy, isolation)
                points.append(_point(_quiet_alone(), labels | {"kind": "none", "size": 0}, duration_s, keys))
                points += [_point(_flood(kind, size), labels | {"kind": kind, "size": size}, duration_s, keys)
                           for kind in KINDS for size in sizes]
    return points


def mechanism_points(workers: Sequence[int] = WORKERS, duration_s: float = DURATION_S,
                     size: float = MECHANISM_SIZE) -> list[Point]:
    """vtc with each mechanism alone, every kind at one flood size, and the quiet tenants alone."""
    points = []
    for n in workers:
        for name, overrides in MECHANISMS.items():
            keys = {"load": float(n), "cluster.workers": n, "scheduler.policy": "vtc", **overrides}
            labels = {"workers": n, "policy": "vtc", "mechanism": name}
            points.append(_point(_quiet_alone(), labels | {"kind": "none", "size": 0}, duration_s, keys))
            points += [_point(_flood(kind, size), labels | {"kind": kind, "size": size}, duration_s, keys)
                       for kind in KINDS]
    return points


def _settings(policy: str) -> tuple[str, ...]:
    return ("off", "on") if policy in FAIR else ("n/a",)


def _overrides(workers: int, policy: str, isolation: str) -> dict[str, Any]:
    keys: dict[str, Any] = {"load": float(workers), "cluster.workers": workers, "scheduler.policy": policy}
    if isolation == "off":
        keys["scheduler.isolation"] = False
    return keys


def _flood(kind: str, size: float) -> dict[str, Any]:
    table = load_table(KINDS[kind])
    flooder = _flooder(table)
    flooder["rate"] = flooder["rate"] * size / SCENARIO_SIZE
    return table


def _quiet_alone() -> dict[str, Any]:
    table = load_table(KINDS["short"])
    _flooder(table)
    table["tenants"] = [t for t in table["tenants"] if t["name"] != FLOODER]
    return table


def _flooder(table: dict) -> dict:
    for tenant in table["tenants"]:
        if tenant["name"] == FLOODER:
            return tenant
    raise ConfigError(f"isolation scenario: no tenant named {FLOODER!r}")


def _point(table: dict, labels: dict, duration_s: float, overrides: dict) -> Point:
    timing = {"duration_s": duration_s, "horizon_s": duration_s + DRAIN_S}
    point = make_point(labels, with_overrides(table, timing | overrides))
    return Point(point.labels, point.table, _key(point.key))


def _key(config_key: str) -> str:
    """Its own cache key: a run document here is not `run_point`'s, whatever cache it shares."""
    return f"isolation-{config_key}"


# ----- one run ---------------------------------------------------------------------------------


def run_isolation_point(table: Mapping[str, Any]) -> dict[str, Any]:
    """Simulate one case: each quiet tenant's TTFT over the measured window, and the pool's
    throughput and utilisation (a plain, deterministic JSON document)."""
    config = config_from_dict(table)
    data = simulate(config)
    summary = summarize(data)["summary"]
    recs = data.records
    window = (recs["arrival"] >= min(WARMUP_S, config.duration_s / 10)) & (recs["arrival"] < config.duration_s)
    tenants = {}
    for index, spec in enumerate(data.tenants):
        if spec.name != FLOODER:
            tenants[spec.name] = _ttft(recs[window & (recs["tenant"] == index)], config.horizon_s, spec.slo_ttft_ms)
    keys = ("utilisation", "output_throughput", "request_throughput", "mean_batch_size", "kv_usage_mean")
    computed = float(data.served[:, :2].sum()) / data.duration_s if data.duration_s > 0 else 0.0
    return {"format": FORMAT, "key": _key(point_key(config)), "seed": config.seed, "config": dict(table),
            "summary": {key: summary[key] for key in keys} | {"computed_token_throughput": computed},
            "tenants": tenants}


def _ttft(recs: np.ndarray, horizon: float, slo_ms: float | None) -> dict[str, Any]:
    """p99 TTFT of these requests in ms; one without a first token by the horizon counts with its
    wait so far (censored)."""
    served = ~np.isnan(recs["first_token"])
    ttft = np.where(served, recs["first_token"], horizon) - recs["arrival"]
    queue = np.where(np.isnan(recs["admit"]), horizon, recs["admit"]) - recs["arrival"]
    decoded = served & ~np.isnan(recs["finish"]) & (recs["output_tokens"] > 1)
    tpot = (recs["finish"][decoded] - recs["first_token"][decoded]) / (recs["output_tokens"][decoded] - 1)
    return {"requests": int(recs.size), "censored": int(np.count_nonzero(~served)), "p99_ttft_ms": _ms(ttft, 99),
            "p99_queue_ms": _ms(queue, 99), "median_tpot_ms": _ms(tpot, 50), "slo_ttft_ms": slo_ms}


def _ms(seconds: np.ndarray, q: float) -> float | None:
    return float(np.percentile(seconds, q) * 1e3) if seconds.size else None


# ----- running ---------------------------------------------------------------------------------


def run_isolation(out: Path, figures: Path | None = None, quick: bool = False, mechanisms: bool = False,
                  policies: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None,
                  **session: Any) -> tuple[str, dict]:
    """Run the family (cached in OUT/runs); returns the markdown and the headline figures."""
    from .session import Session

    options = QUICK if quick else {}
    policies = policies or options.get("policies", POLICIES)
    points = isolation_points(options.get("sizes", SIZES), options.get("workers", WORKERS),
                              policies, options.get("duration_s", DURATION_S), overrides)
    extra = mechanism_points(options.get("workers", WORKERS), options.get("duration_s", DURATION_S)) if mechanisms else []
    with Session("isolation", out, total=len(points) + len(extra), runner=run_isolation_point, **session) as run:
        outcomes = run.run(points)
        extra_outcomes = run.run(extra) if extra else []
    failed = [o for o in outcomes + extra_outcomes if o.doc is None]
    if failed:
        raise ConfigError(f"bench isolation: {len(failed)} runs failed, the first: {failed[0].error}")
    cases = family(outcomes)
    figure = isolation_figure(cases, (figures or out) / "isolation.png")
    parts = [targets_markdown(cases), family_markdown(cases), vtc_markdown(cases)]
    if extra_outcomes:
        parts.append(mechanisms_markdown(extra_outcomes))
    return "\n\n".join(p for p in parts if p), headline(cases) | {"figure": figure}


def isolation_section(figures: Path, report_dir: Path, work: Path, **session: Any) -> str:
    """The RESULTS.md section: the targets, the family's tables, the mechanisms' costs, the figure."""
    markdown, head = run_isolation(work, figures, mechanisms=True, **session)
    relative = os.path.relpath(head["figure"], report_dir)
    return "\n\n".join([
        HEADING,
        "`fairbatch bench isolation --results` (benchmarks/isolation.py): three quiet tenants "
        "(Azure-conversation-shaped lengths, 9 req/s per worker, a 500 ms TTFT SLO) and a flooder on H100s "
        "serving Llama-3-8B (scenarios/isolation_short.toml, isolation_long.toml, isolation_onoff.toml): many "
        "short requests, few 16k-30k-token prompts, or 10 s bursts; 2x to 50x the pool's capacity for the "
        "flood alone, on 1 and 4 workers. Ratio: a quiet tenant's p99 TTFT with the flood over its p99 TTFT "
        f"alone under the same policy and settings, the worst of the three; requests arriving in the first "
        f"{WARMUP_S:g} s (a cold start of every tenant at once) are left out, and a request still unserved "
        f"{DRAIN_S:g} s after the arrivals stop counts with its wait so far (>=). Before: scheduler.isolation = "
        "false; after: the defaults.",
        markdown, f"![worst quiet-tenant ratio against flood size]({relative})"])


HEADING = "## Isolation under floods"


# ----- tables ----------------------------------------------------------------------------------


def family(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """A row per flood case: its labels, the worst quiet ratio, whether any p99 is censored, the
    largest quiet p99 TTFT and its SLO, and throughput and utilisation against fcfs's."""
    docs = {_case_key(o.point.labels): o.doc for o in outcomes if o.doc is not None}
    rows = []
    for labels, doc in docs.items():
        kind, size, workers, policy, isolation = labels
        alone = docs.get(("none", 0, workers, policy, isolation))
        if kind == "none" or alone is None:
            continue
        fcfs = docs.get((kind, size, workers, "fcfs", "n/a"))
        off = docs.get((kind, size, workers, policy, "off")) if isolation == "on" else None
        rows.append({"kind": kind, "size": size, "workers": workers, "policy": policy, "isolation": isolation,
                     **_compare(doc, alone, fcfs), "alone": _compare(alone, alone, None),
                     "throughput_off": _over(doc["summary"]["computed_token_throughput"],
                                             off["summary"]["computed_token_throughput"]) if off else None})
    return sorted(rows, key=lambda r: (list(KINDS).index(r["kind"]), r["workers"], r["size"],
                                       POLICIES.index(r["policy"]), r["isolation"]))


def _case_key(labels: Mapping[str, Any]) -> tuple:
    return (labels["kind"], labels["size"], labels["workers"], labels["policy"],
            labels.get("isolation", labels.get("mechanism")))


def _compare(doc: dict, alone: dict, fcfs: dict | None) -> dict[str, Any]:
    ratios, worst_p99, censored, slo = [], 0.0, False, None
    for name, quiet in doc["tenants"].items():
        base = alone["tenants"][name]["p99_ttft_ms"]
        if quiet["p99_ttft_ms"] is None or not base:
            continue
        ratios.append(quiet["p99_ttft_ms"] / base)
        worst_p99 = max(worst_p99, quiet["p99_ttft_ms"])
        censored |= quiet["censored"] > 0.01 * quiet["requests"]
        slo = quiet["slo_ttft_ms"] if slo is None else min(slo, quiet["slo_ttft_ms"] or slo)
    mine, theirs = doc["summary"], (fcfs or doc)["summary"]
    quiet = doc["tenants"].values()
    return {"ratio": max(ratios) if ratios else None, "censored": censored, "p99_ttft_ms": worst_p99,
            "p99_queue_ms": max((q.get("p99_queue_ms") or 0.0 for q in quiet), default=None),
            "median_tpot_ms": max((q.get("median_tpot_ms") or 0.0 for q in quiet), default=None),
            "mean_batch_size": mine.get("mean_batch_size"), "kv_usage_mean": mine.get("kv_usage_mean"),
            "slo_ttft_ms": slo, "utilisation": _over(mine["utilisation"], theirs["utilisation"]),
            "throughput": _over(mine["computed_token_throughput"], theirs["computed_token_throughput"])}


def _over(value: float, reference: float) -> float | None:
    return value / reference if reference else None


def _ratio_cell(row: Mapping[str, Any] | None) -> str:
    if row is None or row["ratio"] is None:
        return "-"
    return (">=" if row["censored"] else "") + f"{row['ratio']:.2f}"


def family_markdown(cases: Sequence[Mapping[str, Any]]) -> str:
    """A table per kind: a row per workers x size, the worst ratio of each policy (off -> on)."""
    policies = list(dict.fromkeys(r["policy"] for r in cases))
    blocks = []
    for kind in KINDS:
        rows = [r for r in cases if r["kind"] == kind]
        if not rows:
            continue
        lines = []
        for workers, size in dict.fromkeys((r["workers"], r["size"]) for r in rows):
            cells = []
            for policy in policies:
                mine = {r["isolation"]: r for r in rows if (r["workers"], r["size"], r["policy"]) == (workers, size, policy)}
                cells.append(f"{_ratio_cell(mine.get('off'))} -> {_ratio_cell(mine.get('on'))}" if "on" in mine
                             else _ratio_cell(mine.get("n/a")))
            lines.append([str(workers), f"{size:g}x", *cells])
        blocks.append(f"### {kind}: worst quiet-tenant p99 TTFT ratio (isolation off -> on)\n\n"
                      + md_table(["workers", "flood", *policies], lines))
    return "\n\n".join(blocks)


def vtc_markdown(cases: Sequence[Mapping[str, Any]]) -> str:
    """vtc before and after, case by case, against the targets."""
    rows = []
    for r in (r for r in cases if r["policy"] == "vtc" and r["isolation"] == "on"):
        off = next((o for o in cases if o["policy"] == "vtc" and o["isolation"] == "off"
                    and (o["kind"], o["size"], o["workers"]) == (r["kind"], r["size"], r["workers"])), None)
        rows.append([r["kind"], str(r["workers"]), f"{r['size']:g}x", _ratio_cell(off), _ratio_cell(r),
                     fmt(r["p99_ttft_ms"]), fmt(r["slo_ttft_ms"]), fmt(r["p99_queue_ms"]), fmt(r["median_tpot_ms"]),
                     fmt(r["mean_batch_size"]), _percent(r["kv_usage_mean"]), _percent(r["utilisation"]),
                     _percent(r["throughput"]), _percent(r["throughput_off"])])
    if not rows:
        return ""
    alone = [r for r in cases if r["policy"] == "vtc" and r["isolation"] == "on"]
    return ("### vtc, case by case\n\nWhere the time goes, with isolation on: the worst quiet tenant's p99 wait "
            "in the queue and median TPOT, the mean batch and KV use (the quiet tenants alone: "
            + _alone_figures(alone) + ").\n\n" + md_table(
                ["flood", "workers", "size", "ratio off", "ratio on", "worst quiet p99 TTFT ms (on)", "TTFT SLO ms",
                 "quiet p99 queue ms", "quiet TPOT p50 ms", "batch", "KV", "utilisation / fcfs",
                 "throughput / fcfs", "throughput / off"], rows))


def _alone_figures(rows: Sequence[Mapping[str, Any]]) -> str:
    parts = [f"{n} worker(s): queue {fmt(a['p99_queue_ms'])} ms, TPOT {fmt(a['median_tpot_ms'])} ms, "
             f"batch {fmt(a['mean_batch_size'])}, KV {_percent(a['kv_usage_mean'])}"
             for n, a in sorted({r["workers"]: r["alone"] for r in rows if r.get("alone")}.items())]
    return "; ".join(parts) or "-"


def mechanisms_markdown(outcomes: Sequence[Outcome]) -> str:
    """Each mechanism alone under vtc: worst ratio per kind, throughput against isolation off."""
    docs = {_case_key(o.point.labels): o.doc for o in outcomes if o.doc is not None}
    workers = sorted({key[2] for key in docs})
    rows = []
    for n in workers:
        for name in MECHANISMS:
            alone = docs.get(("none", 0, n, "vtc", name))
            off = {kind: docs.get((kind, MECHANISM_SIZE, n, "vtc", "off")) for kind in KINDS}
            cells, costs = [], []
            for kind in KINDS:
                doc = docs.get((kind, MECHANISM_SIZE, n, "vtc", name))
                if doc is None or alone is None or off[kind] is None:
                    cells.append("-")
                    continue
                compared = _compare(doc, alone, off[kind])
                cells.append(_ratio_cell(compared))
                costs.append(compared["throughput"])
            rows.append([str(n), name, *cells, _percent(min(costs)) if costs else "-"])
    return (f"### Each mechanism alone (vtc, floods at {MECHANISM_SIZE}x)\n\nWorst quiet-tenant ratio per flood, "
            "and the lowest token throughput of the three against isolation off.\n\n"
            + md_table(["workers", "mechanisms", *KINDS, "throughput / off (lowest)"], rows))


def targets_markdown(cases: Sequence[Mapping[str, Any]]) -> str:
    head = headline(cases)
    if not head:
        return ""
    return (f"vtc with isolation on: the worst quiet-tenant ratio is {head['worst_ratio']:.2f} "
            f"({head['worst_case']}; with isolation off it is {head['worst_ratio_off']:.2f}); "
            f"{head['within_ratio']} of {head['cases']} cases are within {TARGET_RATIO:g}x and "
            f"{head['within_slo']} within the TTFT SLO; utilisation is at least {head['min_utilisation']:.1%} of fcfs's, "
            f"token throughput at least {head['min_throughput']:.1%} of fcfs's and {head['min_throughput_off']:.1%} of "
            f"vtc's own with isolation off.")


def headline(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    on = [r for r in cases if r["policy"] == "vtc" and r["isolation"] == "on" and r["ratio"] is not None]
    off = [r for r in cases if r["policy"] == "vtc" and r["isolation"] == "off" and r["ratio"] is not None]
    if not on:
        return {}
    worst = max(on, key=lambda r: r["ratio"])
    return {"cases": len(on), "worst_ratio": worst["ratio"],
            "worst_case": f"{worst['kind']}, {worst['size']:g}x, {worst['workers']} worker(s)",
            "worst_ratio_off": max((r["ratio"] for r in off), default=float("nan")),
            "within_ratio": sum(r["ratio"] <= TARGET_RATIO for r in on),
            "within_slo": sum(r["slo_ttft_ms"] is not None and r["p99_ttft_ms"] <= r["slo_ttft_ms"] for r in on),
            "min_utilisation": min(r["utilisation"] for r in on), "min_throughput": min(r["throughput"] for r in on),
            "min_throughput_off": min((r["throughput_off"] for r in on if r["throughput_off"]), default=float("nan"))}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# ----- figure ----------------------------------------------------------------------------------


def isolation_figure(cases: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Worst quiet-tenant ratio against flood size, a line per policy (isolation on solid, off
    dashed), a panel per kind x workers."""
    from .plots import lines_figure

    panels = []
    for kind, workers in dict.fromkeys((r["kind"], r["workers"]) for r in cases):
        mine = [r for r in cases if (r["kind"], r["workers"]) == (kind, workers) and r["ratio"] is not None]
        lines = []
        for policy in (p for p in POLICIES if any(r["policy"] == p for r in mine)):
            for isolation in ("on", "n/a", "off"):
                line = [r for r in mine if r["policy"] == policy and r["isolation"] == isolation]
                if line:
                    label = f"{policy} (isolation off)" if isolation == "off" else policy
                    lines.append((label, policy, isolation == "off", [r["size"] for r in line],
                                  [r["ratio"] for r in line]))
        panels.append((f"{kind}, {workers} worker(s)", lines))
    return lines_figure(panels, path, "flood (x capacity)", "worst quiet p99 TTFT ratio", reference=TARGET_RATIO)
