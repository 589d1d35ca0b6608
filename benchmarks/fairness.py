"""Fairness benchmarks: a noisy neighbour, the VTC paper's setups, and goodput under SLOs.

    python -m benchmarks.fairness [noisy|vtc-paper|goodput|all] [--quick]

noisy      three well-behaved tenants and one that floods at ~4x the pool's capacity, under fcfs,
           vtc, drr and priority, against the same tenants without the flooder: per-tenant TTFT
           and service share, the p99 TTFT ratio (with / without flooder), pool utilisation,
           and how much of what the others leave the flooder gets (work conservation).
vtc-paper  the setups of Sheng et al., OSDI'24, section 5 (overload, proportional, on/off, short
           and long, weighted) under fcfs, lcf and vtc: the paper's windowed service difference
           (max and mean over 60 s windows), the accumulated service difference over time, and
           throughput.
goodput    the Azure conversation trace sped up to about the pool's capacity (0.85-1.1x by minute)
           under fcfs, edf, slo and vtc: goodput, SLO attainment, p99 TTFT and TPOT.

Every scenario has a hard stop (`horizon_s`): the noisy-neighbour and VTC-paper runs stop when
arrivals stop, so measurements cover the loaded period; the goodput run allows 60 s more for the
requests in flight to finish. Requests still queued or running at the stop are counted as
unfinished, and latency percentiles count a request that has no first token yet at its waiting
time so far, a lower bound marked ">=".
`--quick` runs short versions of everything (well under a minute). The functions below return
plain dicts so tests and notebooks can use them without parsing the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scheduler.outcomes import Outcome
from sim.cluster import simulate
from sim.config import SimConfig, load_config
from sim.fairness import (
    accumulated_service_difference,
    censored_latency,
    censored_percentile,
    cumulative_service_at,
    windowed_service_difference,
)
from sim.results import RunData, summarize
from sim.workload import Workload, generate

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

NOISY_POLICIES = ("fcfs", "vtc", "drr", "priority")
VTC_PAPER_POLICIES = ("fcfs", "lcf", "vtc")
GOODPUT_POLICIES = ("fcfs", "edf", "slo", "vtc")
VTC_SETUPS = ("overload", "proportional", "onoff", "short_long", "weighted")
FLOODER = "flooder"
WINDOW_S = 60.0
# Latency statistics leave out arrivals in this last fraction of the run: they have had too little
# time to get a first token before the horizon, with or without a flooder.
TAIL_FRACTION = 0.1
# Simulated seconds of each section's scenarios under --quick (the full runs use the files' own).
QUICK_DURATION_S = {"noisy": 60.0, "vtc-paper": 120.0, "goodput": 90.0}
TARGET_TTFT_RATIO = 2.0
TARGET_UTILISATION = 0.95


@dataclass(frozen=True, slots=True, eq=False)
class Run:
    config: SimConfig
    workload: Workload
    data: RunData
    wall_s: float


def load_scenario(name: str, *, policy: str | None = None, duration_s: float | None = None) -> SimConfig:
    """A scenario file from benchmarks/scenarios by name, optionally with another policy or another
    duration (the horizon keeps its distance from the end of arrivals)."""
    path = SCENARIOS / f"{name}.toml"
    overrides: dict[str, Any] = {}
    if policy is not None:
        overrides["scheduler.policy"] = policy
    if duration_s is not None:
        base = load_config(path)
        overrides["duration_s"] = duration_s
        if base.horizon_s is not None:
            overrides["horizon_s"] = duration_s + max(0.0, base.horizon_s - (base.duration_s or 0.0))
    return load_config(path, overrides)


def with_policy(config: SimConfig, policy: str) -> SimConfig:
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, policy=policy, policy_params={}))


def without_tenants(config: SimConfig, names: Sequence[str]) -> SimConfig:
    return dataclasses.replace(config, tenants=tuple(t for t in config.tenants if t.name not in names))


def run(config: SimConfig) -> Run:
    """Simulate `config`, keeping the workload (true output lengths, for demand)."""
    start = time.perf_counter()
    workload = generate(config.tenants, np.random.default_rng(config.seed), duration_s=config.duration_s,
                        requests=config.requests, load=config.load)
    data = simulate(config, workload)
    return Run(config, workload, data, time.perf_counter() - start)


def end_time(r: Run) -> float:
    """Where measurement ends: the horizon when there is one, else the last event."""
    return float(r.config.horizon_s) if r.config.horizon_s is not None else float(r.data.duration_s)


def service_totals(r: Run) -> np.ndarray:
    """Each tenant's service (w_p x prompt + w_q x output tokens, not weight-normalised) by the end."""
    weights = np.array([t.weight for t in r.data.tenants])
    return cumulative_service_at(r.data.timeline, [end_time(r)])[0] * weights


def tenant_ttft(r: Run, tenant: int | Sequence[int], arrived_before: float | None = None) -> dict[str, Any]:
    """p50 / p99 TTFT and p99 queueing time (ms) of a tenant's (or tenants') requests, censored at
    the run's end; `*_exact` is False where a censored request could move the percentile."""
    recs = r.data.records
    mask = np.isin(recs["tenant"], np.atleast_1d(tenant))
    if arrived_before is not None:
        mask &= recs["arrival"] < arrived_before
    ttft, censored = censored_latency(recs[mask], end_time(r))
    out: dict[str, Any] = {"requests": int(mask.sum()), "waiting": int(censored.sum())}
    for name, q in (("p50", 50.0), ("p99", 99.0)):
        value, exact = censored_percentile(ttft * 1e3, censored, q)
        out[f"{name}_ttft_ms"], out[f"{name}_exact"] = value, exact
    queue, queued = censored_latency(recs[mask], end_time(r), "admit")
    out["p99_queue_ms"], out["p99_queue_exact"] = censored_percentile(queue * 1e3, queued, 99.0)
    return out


# ---------------------------------------------------------------------------------------------
# noisy neighbour


def capacity(config: SimConfig, tenant: str = FLOODER) -> dict[str, float]:
    """What the pool serves when saturated by `tenant`'s traffic alone (fcfs): req/s and service/s."""
    probe = run(with_policy(without_tenants(config, [t.name for t in config.tenants if t.name != tenant]), "fcfs"))
    end = end_time(probe)
    finished = int(np.count_nonzero(probe.data.records["outcome"] == Outcome.FINISHED.code))
    return {"request_rate": finished / end, "service_rate": float(service_totals(probe).sum() / end),
            "wall_s": probe.wall_s}


def noisy_neighbour(duration_s: float | None = None, policies: Sequence[str] = NOISY_POLICIES,
                    scenario: str = "noisy_neighbour") -> dict[str, Any]:
    """Run the noisy-neighbour scenario under each policy, with and without the flooder."""
    config = load_scenario(scenario, duration_s=duration_s)
    names = [t.name for t in config.tenants]
    good = [i for i, n in enumerate(names) if n != FLOODER]
    flooder = names.index(FLOODER)
    cap = capacity(config)
    measured_until = config.duration_s * (1 - TAIL_FRACTION)
    result: dict[str, Any] = {"capacity": cap, "duration_s": config.duration_s, "tenants": names,
                              "latency_arrivals_before_s": measured_until, "policies": {}}
    for policy in policies:
        loaded = run(with_policy(config, policy))
        alone = run(with_policy(without_tenants(config, [FLOODER]), policy))
        result["policies"][policy] = _noisy_policy(loaded, alone, good, flooder, cap, measured_until)
    return result


def _noisy_policy(loaded: Run, alone: Run, good: list[int], flooder: int, cap: dict, until: float) -> dict:
    names = [t.name for t in loaded.data.tenants]
    recs = loaded.data.records
    end = end_time(loaded)
    service = service_totals(loaded)
    share = service / service.sum() if service.sum() > 0 else np.zeros_like(service)
    summary = summarize(loaded.data)["summary"]
    tenants = {}
    for i, name in enumerate(names):
        mine = recs[recs["tenant"] == i]
        tenants[name] = {
            "submitted": int(mine.size),
            "finished": int(np.count_nonzero(mine["outcome"] == Outcome.FINISHED.code)),
            "unfinished": int(np.count_nonzero(mine["outcome"] != Outcome.FINISHED.code)),
            "share": float(share[i]),
            "service_rate": float(service[i] / end),
            **tenant_ttft(loaded, i, until),
        }
    base_names = [t.name for t in alone.data.tenants]
    ratios = {}
    for i in good:
        name = names[i]
        with_f = tenants[name]
        without = tenant_ttft(alone, base_names.index(name), until)
        tenants[name]["baseline_p99_ttft_ms"] = without["p99_ttft_ms"]
        ratios[name] = _ratio(with_f["p99_ttft_ms"], without["p99_ttft_ms"])
        tenants[name]["p99_ratio_exact"] = with_f["p99_exact"] and without["p99_exact"]
    pooled_with = tenant_ttft(loaded, good, until)
    tpot_with = median_tpot_ms(loaded.data.records, good)
    tpot_alone = median_tpot_ms(alone.data.records, list(range(len(base_names))))
    pooled_without = tenant_ttft(alone, list(range(len(base_names))), until)
    good_rate = float(service[good].sum() / end)
    flood_rate = float(service[flooder] / end)
    left_over = cap["service_rate"] - good_rate
    worst = max(ratios.values(), default=math.nan)
    return {
        "tenants": tenants,
        "p99_ratio": ratios,
        "worst_p99_ratio": worst,
        "worst_p99_exact": all(tenants[names[i]]["p99_ratio_exact"] for i in good),
        "pooled_p99_ratio": _ratio(pooled_with["p99_ttft_ms"], pooled_without["p99_ttft_ms"]),
        "pooled_p99_exact": pooled_with["p99_exact"] and pooled_without["p99_exact"],
        "median_tpot_ms": tpot_with,
        "alone_median_tpot_ms": tpot_alone,
        "utilisation": summary["utilisation"],
        "service_rate": float(service.sum() / end),
        "throughput_vs_capacity": float(service.sum() / end / cap["service_rate"]),
        "flooder_share": float(share[flooder]),
        "flooder_vs_left_over": flood_rate / left_over if left_over > 0 else math.nan,
        "unfinished": int(np.count_nonzero(recs["outcome"] != Outcome.FINISHED.code)),
        "preemptions": summary["preemptions"],
        "meets_ratio_target": bool(worst <= TARGET_TTFT_RATIO),
        "meets_utilisation_target": bool((summary["utilisation"] or 0) >= TARGET_UTILISATION),
        "wall_s": loaded.wall_s + alone.wall_s,
    }


def median_tpot_ms(records: np.ndarray, tenants: Sequence[int]) -> float | None:
    """Median time per output token (ms) of the finished multi-token requests of `tenants`."""
    r = records[np.isin(records["tenant"], tenants) & (records["outcome"] == Outcome.FINISHED.code) & (records["output_tokens"] > 1)]
    if r.size == 0:
        return None
    return float(np.median((r["finish"] - r["first_token"]) / (r["output_tokens"] - 1)) * 1e3)


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else math.nan


def format_noisy(result: dict) -> str:
    cap = result["capacity"]
    lines = [
        f"Noisy neighbour: {len(result['tenants']) - 1} well-behaved tenants + {FLOODER}, "
        f"{result['duration_s']:g} s of arrivals (hard stop there)",
        f"Pool capacity (saturated by the flooder's traffic alone, fcfs): {cap['request_rate']:.2f} req/s completed, "
        f"{cap['service_rate']:,.0f} service/s (service = prompt + 2 x output tokens)",
        f"TTFT and queueing (arrival to admission) over arrivals before {result['latency_arrivals_before_s']:g} s; "
        "'>=' marks a lower bound\n(requests still without a first token at the end count their wait so far); "
        "alone: the same tenants and policy without the flooder",
        "",
    ]
    head = (f"{'policy':<9}{'tenant':<9}{'sent':>7}{'done':>7}{'unfin':>7}{'p50 TTFT':>11}{'p99 TTFT':>11}"
            f"{'p99 queue':>11}{'alone p99':>11}{'ratio':>11}{'share':>8}")
    lines += [head, "-" * len(head)]
    for policy, p in result["policies"].items():
        for k, (name, t) in enumerate(p["tenants"].items()):
            ratio = p["p99_ratio"].get(name)
            lines.append(
                f"{policy if k == 0 else '':<9}{name:<9}{t['submitted']:>7,}{t['finished']:>7,}{t['unfinished']:>7,}"
                f"{_ms(t['p50_ttft_ms'], t['p50_exact']):>11}{_ms(t['p99_ttft_ms'], t['p99_exact']):>11}"
                f"{_ms(t['p99_queue_ms'], t['p99_queue_exact']):>11}{_ms(t.get('baseline_p99_ttft_ms'), True):>11}"
                f"{_x(ratio, t.get('p99_ratio_exact', True)):>11}{100 * t['share']:>7.1f}%")
        lines.append("")
    head = (f"{'policy':<9}{'worst p99 ratio':>16}{'pooled':>11}{'TPOT (alone)':>14}{'busy':>8}{'served/cap':>11}"
            f"{'flooder share':>14}{'flooder/left':>13}{'unfinished':>11}{'ratio<=2x':>10}{'busy>=95%':>10}")
    lines += ["Targets (vtc): well-behaved p99 TTFT ratio <= 2x, utilisation >= 95%", head, "-" * len(head)]
    for policy, p in result["policies"].items():
        lines.append(
            f"{policy:<9}{_x(p['worst_p99_ratio'], p['worst_p99_exact']):>16}"
            f"{_x(p['pooled_p99_ratio'], p['pooled_p99_exact']):>11}"
            f"{_ms(p['median_tpot_ms'], True) + ' (' + _ms(p['alone_median_tpot_ms'], True) + ')':>14}"
            f"{100 * (p['utilisation'] or 0):>7.1f}%{100 * p['throughput_vs_capacity']:>10.1f}%"
            f"{100 * p['flooder_share']:>13.1f}%{100 * p['flooder_vs_left_over']:>12.1f}%{p['unfinished']:>11,}"
            f"{'yes' if p['meets_ratio_target'] else 'NO':>10}{'yes' if p['meets_utilisation_target'] else 'NO':>10}")
    lines.append("pooled: p99 TTFT of the three together; TPOT: median ms per output token of the well-behaved "
                 "tenants' finished requests;\nbusy: fraction of time the worker ran a step; served/cap: service rate "
                 "over the saturated capacity;\nflooder/left: the flooder's service rate over capacity less what the "
                 "others got (100% = work conserving)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the VTC paper's setups


def vtc_paper(duration_s: float | None = None, setups: Sequence[str] = VTC_SETUPS,
              policies: Sequence[str] = VTC_PAPER_POLICIES, window_s: float = WINDOW_S) -> dict[str, Any]:
    """Each setup under each policy: windowed and accumulated service difference, throughput."""
    out: dict[str, Any] = {}
    for setup in setups:
        config = load_scenario(f"vtc_{setup}", duration_s=duration_s)
        out[setup] = {"tenants": [t.name for t in config.tenants],
                      "weights": [t.weight for t in config.tenants],
                      "duration_s": config.duration_s, "policies": {}}
        for policy in policies:
            out[setup]["policies"][policy] = _vtc_policy(run(with_policy(config, policy)), window_s)
    return out


def _vtc_policy(r: Run, window_s: float) -> dict[str, Any]:
    end = end_time(r)
    wf = windowed_service_difference(r.data, window_s, true_output=r.workload.output_tokens,
                                     max_new_tokens=r.workload.max_new_tokens, end=end)
    ticks = np.arange(window_s, end + 1e-9, window_s)
    recs = r.data.records
    summary = summarize(r.data)["summary"]
    tokens = recs["prompt_tokens"][~np.isnan(recs["admit"])].sum() + recs["output_tokens"].sum()
    service = service_totals(r)
    return {
        "max_diff": wf.max,
        "mean_diff": wf.mean,
        "windows": int(wf.difference.size),
        "per_window": wf.difference.tolist(),
        "ticks_s": ticks.tolist(),
        "accumulated_diff": accumulated_service_difference(r.data.timeline, ticks).tolist(),
        "service_rate": float(service.sum() / end),
        "token_throughput": float(tokens / end),
        "request_throughput": summary["request_throughput"],
        "client_service_rate": (service / end).tolist(),
        "client_demand_rate": (wf.demand.mean(axis=0) * np.array([t.weight for t in r.data.tenants])).tolist()
        if wf.demand.size else [],
        "wall_s": r.wall_s,
    }


def format_vtc_paper(result: dict) -> str:
    lines = ["VTC paper setups (Sheng et al., OSDI'24, section 5) on 1x L40S, Llama-3-8B, max_num_seqs 12",
             "diff: per 60 s window, sum_j min(max_k s_k - s_j, |r_j - s_j|) (s service rate, r demand rate, "
             "weight-normalised), service/s",
             "acc diff: max_k W_k - min_k W_k of accumulated (weight-normalised) service", ""]
    for setup, s in result.items():
        weighted = any(w != 1 for w in s["weights"])
        names = ", ".join(f"{n} (w {w:g})" if weighted else n for n, w in zip(s["tenants"], s["weights"]))
        lines.append(f"{setup}: {names}; {s['duration_s']:g} s")
        head = (f"  {'policy':<7}{'max diff':>10}{'mean diff':>11}{'tok/s':>8}{'service/s':>11}{'req/s':>7}"
                f"   service/s per client (demand/s)")
        lines += [head, "  " + "-" * (len(head) - 2)]
        for policy, p in s["policies"].items():
            clients = "  ".join(f"{sv:,.0f} ({dv:,.0f})" for sv, dv in zip(p["client_service_rate"],
                                                                           p["client_demand_rate"]))
            lines.append(f"  {policy:<7}{_num(p['max_diff']):>10}{_num(p['mean_diff']):>11}"
                         f"{p['token_throughput']:>8,.0f}{p['service_rate']:>11,.0f}"
                         f"{p['request_throughput'] or 0:>7.2f}   {clients}")
        first = next(iter(s["policies"].values()))
        step = max(1, math.ceil(len(first["ticks_s"]) / 10))
        ticks = first["ticks_s"][::step]
        lines.append("  acc diff at t (s) = " + "".join(f"{t:>9,.0f}" for t in ticks))
        for policy, p in s["policies"].items():
            lines.append(f"  {policy:<20}" + "".join(f"{v:>9,.0f}" for v in p["accumulated_diff"][::step]))
        lines.append("")
    return "\n".join(lines).rstrip()


# ---------------------------------------------------------------------------------------------
# goodput


def goodput(duration_s: float | None = None, policies: Sequence[str] = GOODPUT_POLICIES,
            scenario: str = "goodput_azure") -> dict[str, Any]:
    """Goodput and SLO attainment of the Azure conversation trace at high load, per policy."""
    out: dict[str, Any] = {"policies": {}}
    for policy in policies:
        config = load_scenario(scenario, policy=policy, duration_s=duration_s)
        out["load"], out["duration_s"] = config.load, config.duration_s
        out["drain_s"] = (config.horizon_s or config.duration_s) - config.duration_s
        r = run(config)
        out["policies"][policy] = _goodput_policy(r)
    return out


def _goodput_policy(r: Run) -> dict[str, Any]:
    result = summarize(r.data)
    s = result["summary"]
    n_good = sum(int(round((t["request_goodput"] or 0) * r.data.duration_s)) for t in result["tenants"].values())
    all_ttft = tenant_ttft(r, list(range(len(r.data.tenants))))
    return {
        "requests": s["requests"],
        "completed": s["completed"],
        "unfinished": s["unfinished"],
        "goodput": n_good / r.config.duration_s,
        "attainment": s["slo_attainment"],
        "attainment_finished": n_good / s["completed"] if s["completed"] else None,
        "p99_ttft_ms": s["p99_ttft_ms"],
        "p99_ttft_all_ms": all_ttft["p99_ttft_ms"],
        "p99_ttft_all_exact": all_ttft["p99_exact"],
        "p99_tpot_ms": s["p99_tpot_ms"],
        "tenant_attainment": {name: t["slo_attainment"] for name, t in result["tenants"].items()},
        "wall_s": r.wall_s,
    }


def format_goodput(result: dict) -> str:
    policies = result["policies"]
    tenants = list(next(iter(policies.values()))["tenant_attainment"])
    lines = [f"Goodput: Azure conversation trace x{result['load']:g} load, {result['duration_s']:g} s of arrivals "
             f"(+{result['drain_s']:g} s to finish), 1x H100, Llama-3-8B",
             "goodput: requests meeting every SLO per second of arrivals; attain: over all submitted (unfinished "
             "ones miss);\nfin: over finished only; p99 TTFT all: also counts requests without a first token", ""]
    head = (f"{'policy':<8}{'sent':>7}{'done':>7}{'unfin':>7}{'goodput':>9}{'attain':>8}{'fin':>8}"
            f"{'p99 TTFT':>11}{'all':>11}{'p99 TPOT':>10}  " + "".join(f"{n[:10]:>11}" for n in tenants))
    lines += [head, "-" * len(head)]
    for policy, p in policies.items():
        lines.append(
            f"{policy:<8}{p['requests']:>7,}{p['completed']:>7,}{p['unfinished']:>7,}{p['goodput']:>9.2f}"
            f"{_pct(p['attainment']):>8}{_pct(p['attainment_finished']):>8}{_ms(p['p99_ttft_ms'], True):>11}"
            f"{_ms(p['p99_ttft_all_ms'], p['p99_ttft_all_exact']):>11}{_ms(p['p99_tpot_ms'], True):>10}  "
            + "".join(f"{_pct(p['tenant_attainment'][n]):>11}" for n in tenants))
    lines.append("goodput in req/s; per-tenant columns: SLO attainment over submitted")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# formatting and the command line


def _ms(x: float | None, exact: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    text = f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
    return text if exact else ">=" + text


def _x(x: float | None, exact: bool) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:.2f}x" if exact else f">={x:.1f}x"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


SECTIONS = {
    "noisy": (noisy_neighbour, format_noisy),
    "vtc-paper": (vtc_paper, format_vtc_paper),
    "goodput": (goodput, format_goodput),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness", description=__doc__.split("\n")[0])
    parser.add_argument("section", nargs="?", default="all", choices=[*SECTIONS, "all"])
    parser.add_argument("--quick", action="store_true", help="short runs (well under a minute in all)")
    args = parser.parse_args(argv)
    names = list(SECTIONS) if args.section == "all" else [args.section]
    total = time.perf_counter()
    for k, name in enumerate(names):
        measure, report = SECTIONS[name]
        start = time.perf_counter()
        result = measure(duration_s=QUICK_DURATION_S[name] if args.quick else None)
        print(("\n" if k else "") + report(result))
        print(f"[{name}: {time.perf_counter() - start:.1f} s wall]", flush=True)
    if len(names) > 1:
        print(f"[total: {time.perf_counter() - total:.1f} s wall]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
