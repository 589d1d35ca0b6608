"""Speed of the simulator and of the scheduler core.

    python -m benchmarks.speed [standard|large|core|fastforward|all] [--quick] [--sizes N,N,...]
                               [--requests N]
    python -m benchmarks.speed against OTHER_CHECKOUT [--sizes N,..] [--requests N] [--pairs 3]

standard     Vidur's workload (Llama-3-8B on one A100-80GB, fcfs, Poisson 10 req/s, 512 prompt and
             128 output tokens, max_new_tokens 128) at 1k and 10k requests (`--sizes 1000,10000,
             100000,1000000` for more): wall time, simulated requests/s, us/request, events/request,
             peak RSS, us/request relative to the smallest size (flat = 1.0), against Vidur 0.0.26.
large        64 H100 workers, 1,000 tenants (weights and rates drawn from a fixed seed), vtc, global
             placement, offered ~90% of the pool's capacity (measured by an overloaded one-worker
             run first): wall, req/s, peak RSS and their extrapolation to 1M requests.
core         the core alone: us per plan + complete pair in steady decode (a request ends by EOS
             every few steps and a queued one is admitted) against running batch size, queued
             requests and tenants, fcfs and vtc, and as a share of the simulated step it plans.
fastforward  the standard workload at 10k with fast_forward on and off: wall, events, speed-up, and
             whether summaries and per-request records are identical.
against      a change's before and after: the standard workload (100k) and the large pool (20k) run
             in this checkout and in another (the code before the change), alternating, --pairs
             times each: median walls, speed-up, events, peak RSS, and whether both give the same
             results to the bit.

Wall times (time.perf_counter) cover building the simulation (workload generation included) and
running it; imports, config parsing and metrics are left out. Each simulation of `standard` and
`large` runs in a fresh child process, whose peak RSS (getrusage ru_maxrss) is reported; short runs
are repeated and the median is reported. `--quick` runs tiny sizes as a smoke test. The functions
return plain dicts, so tests and notebooks can use them without parsing the tables.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scheduler.core import Scheduler, SchedulerConfig
from scheduler.events import StepResult
from scheduler.outcomes import Outcome
from scheduler.request import Request, Tenant
from sim.cluster import Simulation
from sim.config import SimConfig, config_from_dict
from sim.costmodel import RooflineCostModel
from sim.results import summarize
from sim.workload import generate

ROOT = Path(__file__).resolve().parent.parent
VIDUR = {10_000: (22.6, None), 100_000: (189.0, 2600.0)}  # requests: (wall s, peak RSS MB), Vidur 0.0.26
# requests, wall s, MB: half of 12.8 s (the standard workload at 100k requests on 2 cores, and 159 s
# for the large pool's 1M, before prefill steps ran on into decodes and runs were cut one at a time)
STANDARD_TARGET = (100_000, 6.4, 300.0)
LARGE_TARGET = (1_000_000, 80.0, 1000.0)
CORE_BASE = {"running": 256, "queued": 10_000, "tenants": 1_000}
CORE_AXES = {"running": (32, 64, 128, 256, 512), "queued": (100, 1_000, 10_000, 100_000),
             "tenants": (1, 100, 1_000, 10_000)}
CORE_TARGET_US = 50.0
REPEAT_BUDGET_S = 3.0  # a child repeats a run while its runs took less than this in total (at most 5)


# ----- configs -------------------------------------------------------------------------------------

def standard_config(requests: int, fast_forward: bool = True) -> SimConfig:
    return config_from_dict(standard_table(requests, fast_forward))


def standard_table(requests: int, fast_forward: bool = True) -> dict[str, Any]:
    return {
        "seed": 0, "requests": requests, "fast_forward": fast_forward,
        "cluster": {"workers": 1, "gpu": "a100-80gb", "model": "llama-3-8b"},
        "scheduler": {"policy": "fcfs", "placement": "global"},
        "tenants": [{"name": "vidur", "rate": 10.0, "prompt_tokens": 512, "output_tokens": 128,
                     "max_new_tokens": 128}],
    }


def large_config(requests: int, pool_rate: float, workers: int = 64, tenants: int = 1_000) -> SimConfig:
    return config_from_dict(large_table(requests, pool_rate, workers, tenants))


def large_table(requests: int, pool_rate: float, workers: int = 64, tenants: int = 1_000) -> dict[str, Any]:
    """`tenants` tenants with weights 1, 2 or 4 and lognormal rate shares summing to pool_rate, arriving
    for requests / pool_rate seconds (about `requests` requests: a request count would make the
    workload generator draw that many arrivals for every tenant)."""
    rng = np.random.default_rng(1)
    weights = rng.choice([1.0, 2.0, 4.0], size=tenants)
    shares = rng.lognormal(0.0, 1.0, size=tenants)
    rates = pool_rate * shares / shares.sum()
    return {
        "seed": 0, "duration_s": requests / pool_rate,
        "cluster": {"workers": workers, "gpu": "h100", "model": "llama-3-8b"},
        "scheduler": {"policy": "vtc", "placement": "global"},
        "tenants": [{"name": f"t{i}", "weight": float(w), "rate": float(r), "prompt_tokens": 512,
                     "output_tokens": 128, "max_new_tokens": 128} for i, (w, r) in enumerate(zip(weights, rates))],
    }


def saturation_config(requests: int) -> SimConfig:
    """One H100 worker of the large pool, offered far more than it serves."""
    return large_config(requests, pool_rate=200.0, workers=1, tenants=1)


# ----- one simulation (in a child process for its peak RSS) -----------------------------------------

def time_simulation(config: SimConfig, repeats: int = 1, budget_s: float = 0.0) -> dict[str, Any]:
    """Build and run `config`; repeat (up to `repeats` runs) while the runs so far took < budget_s."""
    walls, workload_walls = [], []
    while True:
        start = time.perf_counter()
        workload = generate(config.tenants, np.random.default_rng(config.seed), duration_s=config.duration_s,
                            requests=config.requests, load=config.load)  # what Simulation(config) draws
        workload_walls.append(time.perf_counter() - start)
        sim = Simulation(config, workload)
        data = sim.run()
        walls.append(time.perf_counter() - start)
        if len(walls) >= repeats or sum(walls) >= budget_s:
            break
        del sim, data, workload
        gc.collect()
    busy = sum(w.busy_s for w in data.workers) / (len(data.workers) * data.duration_s)
    return {"requests": len(data.records), "wall_s": statistics.median(walls), "walls_s": walls,
            "workload_s": statistics.median(workload_walls),
            "events": sim.loop._seq, "sim_s": float(data.duration_s), "busy": busy,
            "finished": int((data.records["outcome"] == Outcome.FINISHED.code).sum())}


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "standard":
        config = standard_config(spec["requests"])
    elif spec["kind"] == "large":
        config = large_config(spec["requests"], spec["pool_rate"], spec["workers"], spec["tenants"])
    else:
        config = saturation_config(spec["requests"])
    rss_before = _peak_rss_mb()
    result = time_simulation(config, spec.get("repeats", 1), spec.get("budget_s", 0.0))
    return result | {"rss_mb": _peak_rss_mb(), "rss_before_mb": rss_before}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # Linux: KiB


def in_child(**spec: Any) -> dict[str, Any]:
    """Run `_child(spec)` in a fresh Python process; returns its JSON."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.speed", "_child", json.dumps(spec)],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----- the benchmarks ----------------------------------------------------------------------------

def standard(sizes: Sequence[int] = (1_000, 10_000)) -> list[dict[str, Any]]:
    rows = [in_child(kind="standard", requests=n, repeats=5, budget_s=REPEAT_BUDGET_S) for n in sizes]
    base_us = rows[0]["wall_s"] / rows[0]["requests"] * 1e6
    for row in rows:
        row["us_per_req"] = row["wall_s"] / row["requests"] * 1e6
        row["req_per_s"] = row["requests"] / row["wall_s"]
        row["flatness"] = row["us_per_req"] / base_us
        vidur = VIDUR.get(row["requests"])
        row["vidur_speedup"] = vidur[0] / row["wall_s"] if vidur else None
    return rows


def saturation(requests: int = 2_000) -> float:
    """Requests/s one H100 worker completes when overloaded (512/128 requests, max_num_seqs 256)."""
    run = in_child(kind="saturation", requests=requests)
    return run["finished"] / run["sim_s"]


def large(requests: int = 20_000, workers: int = 64, tenants: int = 1_000, load: float = 0.9,
          saturation_requests: int = 2_000, target_requests: int = LARGE_TARGET[0]) -> dict[str, Any]:
    per_worker = saturation(saturation_requests)
    pool_rate = load * per_worker * workers
    row = in_child(kind="large", requests=requests, pool_rate=pool_rate, workers=workers, tenants=tenants)
    scale = target_requests / row["requests"]
    return row | {
        "workers": workers, "tenants": tenants, "worker_capacity": per_worker, "pool_rate": pool_rate,
        "utilisation": load, "req_per_s": row["requests"] / row["wall_s"],
        "us_per_req": row["wall_s"] / row["requests"] * 1e6, "target_requests": target_requests,
        "extrapolated_wall_s": row["wall_s"] * scale,
        "extrapolated_rss_mb": row["rss_before_mb"] + (row["rss_mb"] - row["rss_before_mb"]) * scale,
    }


def core_point(policy: str, running: int, queued: int, tenants: int, steps: int = 2_000,
               eos_every: int = 8, prompt: int = 1_000) -> dict[str, Any]:
    """Median and mean us of plan + complete on one worker with `running` decoding requests and
    `queued` waiting ones spread over `tenants` tenants; every `eos_every` steps one request ends by
    EOS, a queued one is admitted in the next plan, and a new one is submitted (untimed)."""
    names = [f"t{i}" for i in range(tenants)]
    sched = Scheduler([Tenant(n) for n in names], policy, "global",
                      SchedulerConfig(max_num_batched_tokens=max(4_096, 2 * running), max_num_seqs=running))
    sched.add_worker(0, 1 << 24, 0.0)
    submitted = 0

    def submit(now: float) -> None:
        nonlocal submitted
        sched.submit(Request(submitted, names[submitted % tenants], prompt, 1 << 20), now)
        submitted += 1

    now, dt = 0.0, 0.02
    for _ in range(running + queued):
        submit(now)
    while True:  # admit and prefill until the batch is full and every request decodes
        plan = sched.plan(0, now)
        sched.complete(0, StepResult(1), now)
        now += dt
        if plan.decodes == running and not plan.chunks:
            break
    waiting = queued + running - sched.num_running_on(0)
    while waiting < queued:
        submit(now)
        waiting += 1
    times = []
    warmup = min(50, steps // 4)
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        plan = sched.plan(0, now)
        t1 = time.perf_counter()
        eos: frozenset = frozenset()
        if step % eos_every == 0:
            decoding = sched.decoding(0)
            eos = frozenset((decoding[step % len(decoding)],))
        t2 = time.perf_counter()
        sched.complete(0, StepResult(1, eos), now)
        t3 = time.perf_counter()
        if step >= warmup:
            times.append((t1 - t0) + (t3 - t2))
        now += dt
        waiting -= len(plan.admitted)
        while waiting < queued:
            submit(now)
            waiting += 1
    us = np.array(times) * 1e6
    return {"policy": policy, "running": running, "queued": queued, "tenants": tenants,
            "median_us": float(np.median(us)), "mean_us": float(us.mean()), "p99_us": float(np.percentile(us, 99))}


def core(axes: dict[str, Sequence[int]] = CORE_AXES, base: dict[str, int] = CORE_BASE,
         policies: Sequence[str] = ("fcfs", "vtc"), steps: int = 2_000) -> list[dict[str, Any]]:
    """core_point along each axis around `base` (the base point measured once per policy)."""
    cost = RooflineCostModel.from_names("h100", "llama-3-8b")
    points = [(axis, base | {axis: value}) for axis, values in axes.items() for value in values]
    measured: dict[tuple, dict[str, dict]] = {}
    rows = []
    for axis, point in points:
        key = (point["running"], point["queued"], point["tenants"])
        if key not in measured:
            measured[key] = {p: core_point(p, *key, steps=steps) for p in policies}
        step_s = cost.step_time(point["running"], 0.0, point["running"] * 1024, point["running"])
        by_policy = measured[key]
        rows.append({"axis": axis, **point, "step_ms": step_s * 1e3, "policies": by_policy,
                     "share": {p: r["median_us"] * 1e-6 / step_s for p, r in by_policy.items()}})
    return rows


def fastforward(requests: int = 10_000) -> dict[str, Any]:
    runs = {}
    for on in (True, False):
        config = standard_config(requests, fast_forward=on)
        start = time.perf_counter()
        sim = Simulation(config)
        data = sim.run()
        runs[on] = {"wall_s": time.perf_counter() - start, "events": sim.loop._seq, "data": data}
    a, b = runs[True]["data"], runs[False]["data"]
    differences = _differences(summarize(a), summarize(b), "summary")
    for field in a.records.dtype.names:
        x, y = a.records[field], b.records[field]
        same = (np.allclose(x, y, rtol=1e-9, atol=0, equal_nan=True) if x.dtype.kind == "f"
                else np.array_equal(x, y))
        if not same:
            differences.append(f"records.{field}")
    return {"requests": requests, "on_wall_s": runs[True]["wall_s"], "off_wall_s": runs[False]["wall_s"],
            "speedup": runs[False]["wall_s"] / runs[True]["wall_s"], "on_events": runs[True]["events"],
            "off_events": runs[False]["events"], "identical": not differences, "differences": differences}


# A run in another checkout: this program runs with that checkout as its working directory, so it
# imports that checkout's code; it needs only what every version has (config_from_dict, Simulation).
AGAINST_CHILD = """
import hashlib, json, resource, sys, time
from sim.cluster import Simulation
from sim.config import config_from_dict
config = config_from_dict(json.loads(sys.argv[1]))
start = time.perf_counter()
simulation = Simulation(config)
data = simulation.run()
wall = time.perf_counter() - start
digest = hashlib.sha256()
for part in (data.records, data.itl_values, data.itl_weights, data.timeline.service):
    digest.update(part.tobytes())
print(json.dumps({"wall_s": wall, "events": simulation.loop._seq, "digest": digest.hexdigest()[:16],
                  "workers": [[w.busy_s, w.kv_block_seconds, w.steps, w.token_steps] for w in data.workers],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6}))
"""


def run_in(tree: Path, table: dict[str, Any]) -> dict[str, Any]:
    """Simulate `table` with the code of the checkout at `tree`, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", AGAINST_CHILD, json.dumps(table)], cwd=tree, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(f"the run in {tree} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def against(tree: Path, tables: dict[str, dict[str, Any]], pairs: int = 3) -> list[dict[str, Any]]:
    """Each table run in this checkout and in `tree`, alternating, `pairs` times: median walls,
    their ratio (before / after) and whether both gave the same results to the bit (per-request
    records, inter-token gaps, service over time, the workers' busy and KV block-seconds)."""
    rows = []
    for label, table in tables.items():
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for _ in range(pairs):
            runs["after"].append(run_in(ROOT, table))
            runs["before"].append(run_in(tree, table))
        before, after = (statistics.median(r["wall_s"] for r in runs[k]) for k in ("before", "after"))
        rows.append({"workload": label, "before_s": before, "after_s": after, "speedup": before / after,
                     "before_events": runs["before"][0]["events"], "after_events": runs["after"][0]["events"],
                     "before_rss_mb": max(r["rss_mb"] for r in runs["before"]),
                     "after_rss_mb": max(r["rss_mb"] for r in runs["after"]),
                     "identical": len({r["digest"] for r in runs["before"] + runs["after"]}) == 1,
                     "workers_off": _largest_difference(runs["before"][0]["workers"], runs["after"][0]["workers"])})
    return rows


def _largest_difference(x: list[list[float]], y: list[list[float]]) -> float:
    """The largest relative difference between two runs' worker figures (0.0: equal to the bit)."""
    pairs = [(a, b) for u, v in zip(x, y) for a, b in zip(u, v)]
    if len(x) != len(y) or any(len(u) != len(v) for u, v in zip(x, y)):
        return math.inf
    return max((abs(a - b) / max(abs(a), abs(b)) for a, b in pairs if a != b), default=0.0)


def against_tables(sizes: Sequence[int], large_requests: int, quick: bool) -> dict[str, dict[str, Any]]:
    tables = {f"standard {n:,}": standard_table(n) for n in sizes}
    kwargs = {"workers": 4, "tenants": 50} if quick else {}
    rate = 0.9 * saturation(300 if quick else 2_000) * kwargs.get("workers", 64)
    tables[f"large {large_requests:,}"] = large_table(large_requests, rate, **kwargs)
    return tables


def report_against(tree: Path, rows: list[dict[str, Any]]) -> str:
    body = table(["workload", "before s", "after s", "speed-up", "events before", "events after", "RSS MB before",
                  "RSS MB after", "records", "workers' busy, KV s"],
                 [[r["workload"], r["before_s"], r["after_s"], r["speedup"], r["before_events"], r["after_events"],
                   r["before_rss_mb"], r["after_rss_mb"], "identical" if r["identical"] else "DIFFERENT",
                   "identical" if r["workers_off"] == 0 else f"{r['workers_off']:.1e} apart"] for r in rows])
    return "\n".join([f"against: this checkout (after) and {tree} (before), alternating, medians; records: "
                      "per-request records, inter-token gaps and service over time, to the bit", body])


def _differences(x: Any, y: Any, path: str) -> list[str]:
    """Paths where two summaries differ (floats compared with rtol 1e-9)."""
    if isinstance(x, dict) and isinstance(y, dict):
        if x.keys() != y.keys():
            return [path]
        return [d for k in x for d in _differences(x[k], y[k], f"{path}.{k}")]
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return [path]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in _differences(u, v, f"{path}[{i}]")]
    if isinstance(x, float) and isinstance(y, (int, float)):
        return [] if math.isclose(x, y, rel_tol=1e-9) or (math.isnan(x) and math.isnan(y)) else [path]
    return [] if x == y else [path]


# ----- tables ------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def report_standard(rows: list[dict[str, Any]]) -> str:
    base = rows[0]["requests"]
    body = table(
        ["requests", "wall s", "of which workload s", "runs", "req/s", "us/req", "events/req", "peak RSS MB",
         f"us/req vs {base:,}", "Vidur s", "x faster than Vidur"],
        [[r["requests"], r["wall_s"], r["workload_s"], len(r["walls_s"]), r["req_per_s"], r["us_per_req"],
          r["events"] / r["requests"], r["rss_mb"], r["flatness"], VIDUR.get(r["requests"], (None,))[0],
          r["vidur_speedup"]] for r in rows])
    n, wall, rss = STANDARD_TARGET
    measured = next((r for r in rows if r["requests"] == n), None)
    last = rows[-1]
    if measured:
        verdict = (f"measured {measured['wall_s']:.2f} s, {measured['rss_mb']:.0f} MB: "
                   f"{_verdict(measured['wall_s'] <= wall and measured['rss_mb'] <= rss)}")
    else:
        guess = last["us_per_req"] * n / 1e6
        verdict = (f"not run (add it with --sizes); at the {last['requests']:,} run's cost: ~{guess:.1f} s "
                   f"({_verdict(guess <= wall)} the time target)")
    return "\n".join([
        "standard: Llama-3-8B, 1x A100-80GB, fcfs, Poisson 10 req/s, 512 in / 128 out (Vidur's workload)",
        body,
        "Vidur 0.0.26 on this machine kind: 22.6 s for 10k; 189 s and 2,600 MB for 100k",
        f"target: {n:,} requests in <= {wall} s and <= {rss:.0f} MB; {verdict}",
    ])


def report_large(r: dict[str, Any]) -> str:
    _, wall, rss = LARGE_TARGET
    n = r["target_requests"]
    body = table(
        ["requests", "workers", "tenants", "wall s", "of which workload s", "req/s", "us/req", "events/req",
         "peak RSS MB", "sim s", "busy", f"wall s @{n:,}", f"RSS MB @{n:,}"],
        [[r["requests"], r["workers"], r["tenants"], r["wall_s"], r["workload_s"], r["req_per_s"], r["us_per_req"],
          r["events"] / r["requests"], r["rss_mb"], r["sim_s"], r["busy"], r["extrapolated_wall_s"],
          r["extrapolated_rss_mb"]]])
    return "\n".join([
        f"large: {r['workers']} H100 workers, {r['tenants']:,} tenants (weights 1/2/4), vtc, global placement, "
        "512 in / 128 out",
        f"one worker serves {r['worker_capacity']:.1f} req/s overloaded; offered {r['pool_rate']:,.0f} req/s "
        f"= {r['utilisation']:.0%} of the pool",
        body,
        f"target: {n:,} requests in <= {wall:.0f} s and <= {rss:,.0f} MB; extrapolated (linear in requests): "
        f"{_verdict(r['extrapolated_wall_s'] <= wall)} time, {_verdict(r['extrapolated_rss_mb'] <= rss)} memory",
    ])


def report_core(rows: list[dict[str, Any]]) -> str:
    policies = list(rows[0]["policies"])
    headers = ["axis", "running", "queued", "tenants"]
    for p in policies:
        headers += [f"{p} median us", f"{p} mean us", f"{p} p99 us"]
    headers += ["step ms"] + [f"{p} % of step" for p in policies]
    body = []
    for r in rows:
        cells = [r["axis"], r["running"], r["queued"], r["tenants"]]
        for p in policies:
            cells += [r["policies"][p][k] for k in ("median_us", "mean_us", "p99_us")]
        body.append(cells + [r["step_ms"]] + [100 * r["share"][p] for p in policies])
    base = next((r for r in rows if all(r[k] == v for k, v in CORE_BASE.items())), None)
    lines = ["core: plan + complete per decode step, one worker (steps=1; one EOS and one admission every 8 steps); "
             "step = roofline Llama-3-8B on H100 at context 1,024", table(headers, body)]
    if base is not None and "vtc" in base["policies"]:
        us, share = base["policies"]["vtc"]["median_us"], base["share"]["vtc"]
        lines.append(f"target at 256 running, 10k queued, 1,000 tenants, vtc: median <= {CORE_TARGET_US:.0f} us and "
                     f"< 1% of the step; measured {us:.1f} us, {100 * share:.2f}%: "
                     f"{_verdict(us <= CORE_TARGET_US and share < 0.01)}")
    return "\n".join(lines)


def report_fastforward(r: dict[str, Any]) -> str:
    body = table(["requests", "fast_forward", "wall s", "events", "events/req"],
                 [[r["requests"], "on", r["on_wall_s"], r["on_events"], r["on_events"] / r["requests"]],
                  [r["requests"], "off", r["off_wall_s"], r["off_events"], r["off_events"] / r["requests"]]])
    same = "identical" if r["identical"] else "DIFFERENT: " + ", ".join(r["differences"][:10])
    return "\n".join(["fastforward: the standard workload, fast_forward on and off", body,
                      f"speed-up {r['speedup']:.2f}x, {r['off_events'] / r['on_events']:.2f}x fewer events; "
                      f"summaries and records: {same}"])


# ----- command line ------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        print(json.dumps(_child(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="?", default="all",
                        choices=("standard", "large", "core", "fastforward", "against", "all"))
    parser.add_argument("tree", nargs="?", type=Path, help="against: another checkout (the code before a change)")
    parser.add_argument("--pairs", type=int, default=3, help="against: runs of each checkout (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--sizes", help="standard: comma-separated request counts (default 1000,10000)")
    parser.add_argument("--requests", type=int, help="large: requests (default 20000); fastforward: (default 10000)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.which == "against":
        if args.tree is None or not (args.tree / "sim" / "cluster.py").is_file():
            parser.error(f"against: give another checkout of fairbatch (a folder with sim/cluster.py), got {args.tree}")
        if args.pairs < 1:
            parser.error(f"--pairs: must be >= 1, got {args.pairs}")
    elif args.tree is not None:
        parser.error(f"a checkout to compare with is for 'against' only, got {args.tree}")
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([100, 300] if quick else [1_000, 10_000])
    sections = ["standard", "large", "core", "fastforward"] if args.which == "all" else [args.which]
    for name in sections:
        start = time.perf_counter()
        if name == "standard":
            text = report_standard(standard(sizes))
        elif name == "large":
            kwargs = {"workers": 4, "tenants": 50, "saturation_requests": 300} if quick else {}
            text = report_large(large(args.requests or (500 if quick else 20_000), **kwargs))
        elif name == "core":
            if quick:
                text = report_core(core({"running": (8, 16), "queued": (10, 100), "tenants": (1, 10)},
                                        {"running": 16, "queued": 100, "tenants": 10}, steps=50))
            else:
                text = report_core(core())
        elif name == "against":
            sizes_against = sizes if args.sizes else ([300] if quick else [100_000])
            tables = against_tables(sizes_against, args.requests or (500 if quick else 20_000), quick)
            text = report_against(args.tree, against(args.tree, tables, 1 if quick else args.pairs))
        else:
            text = report_fastforward(fastforward(args.requests or (300 if quick else 10_000)))
        print(f"{text}\n({name}: {time.perf_counter() - start:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
