"""`fairbatch bench report DIR [DIR ...]`: a markdown report with PNG figures from saved results.

Reads the directories written by compare, sweep and capacity (their points.json and run
documents; nothing is simulated). Per scenario: the setup, one results table per load, per-tenant
tables, the capacity table, and figures: TTFT and TPOT CDFs per policy, throughput and p99 latency
against load, per-tenant service over time, worker utilisation and KV usage over time, capacity;
and, given a trace of one run (`--timeline`), a short window of its timeline as a picture.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scheduler.errors import ConfigError
from scheduler.trace import TENANT_PID, WORKERS_PID

from . import plots
from .compare import load_heading
from .store import load_results
from .tables import capacity_table, group, md_table, results_table, series_names, tenant_tables


def write_report(dirs: Sequence[str | Path], output: str | Path, *, figures: str | Path | None = None,
                 title: str = "Benchmark report", intro: str = "", load: float | None = None,
                 timeline: str | Path | None = None, timeline_window: tuple[float, float] | None = None) -> Path:
    """Write the report to `output`, its figures to `figures` (default: beside it, in figures/);
    with `timeline` (a trace file of `fairbatch simulate --trace`), also a section with a window
    of it as a picture (`timeline_window` seconds; default: TIMELINE_SPAN_S in its middle)."""
    output = Path(output)
    figures = Path(figures) if figures is not None else output.parent / "figures"
    points, docs, capacity = collect(dirs)
    if not docs and not capacity:
        raise ConfigError(f"report: no finished runs in {', '.join(map(str, dirs))}")
    blocks = [f"# {title}", intro] if intro else [f"# {title}"]
    scenarios = list(dict.fromkeys([*group(points, docs), *capacity]))
    for scenario in scenarios:
        blocks.append(scenario_section(scenario, group(points, docs).get(scenario, {}), capacity.get(scenario, {}),
                                       figures, output.parent, load))
    if timeline is not None:
        blocks.append(timeline_section(Path(timeline), timeline_window, figures, output.parent))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n\n".join(b for b in blocks if b) + "\n")
    return output


def collect(dirs: Sequence[str | Path]) -> tuple[list[dict], dict[str, dict], dict[str, dict[str, dict]]]:
    """Points of compare/sweep results, their documents, and capacity results by scenario and series."""
    points: list[dict] = []
    docs: dict[str, dict] = {}
    capacity: dict[str, dict[str, dict]] = {}
    for directory in dirs:
        manifest, found = load_results(directory)
        docs |= found
        if manifest["command"] == "capacity":
            results = manifest.get("capacity", [])
            for result, name in zip(results, series_names([r["labels"] for r in results])):
                capacity.setdefault(result["labels"].get("scenario"), {})[name] = result
        else:
            points += manifest["points"]
    return points, docs, capacity


def scenario_section(scenario: str | None, loads: Mapping[Any, list], capacity: Mapping[str, dict],
                     figures: Path, root: Path, chosen: float | None) -> str:
    name = scenario or "results"
    blocks = [f"## {name}"]
    first = next((rows[0][1] for rows in loads.values() if rows), None)
    if first is not None:
        blocks.append(setup(first["config"]))
    for load, rows in loads.items():
        blocks += [f"### {load_heading(load, rows)}", results_table(rows), tenant_tables(rows)]
    if capacity:
        blocks += ["### Goodput capacity", capacity_note(), capacity_table(capacity)]
    blocks.append(figure_block(name, loads, capacity, figures, root, chosen))
    return "\n\n".join(blocks)


def capacity_note() -> str:
    return ("The largest load (and offered request rate) at which >= 90% of all submitted requests met "
            "their TTFT SLO and >= 90% met their TPOT SLO (DistServe's definition), found by bisection.")


def setup(config: Mapping[str, Any]) -> str:
    """The scenario's pool and tenants, from a run's config table."""
    cluster, sched = config.get("cluster", {}), config.get("scheduler", {})
    span = (f"{config['duration_s']:g} s of arrivals" if "duration_s" in config
            else f"{config.get('requests')} requests")
    if "horizon_s" in config:
        span += f", stopped at {config['horizon_s']:g} s"
    pool = (f"{cluster.get('workers', 2)} x {cluster.get('gpu', 'h100')} serving {cluster.get('model', 'llama-3-8b')}"
            f" (tp {cluster.get('tensor_parallel', 1)}),"
            f" max_num_batched_tokens {sched.get('max_num_batched_tokens', 4096)},"
            f" {span}, seed {config.get('seed', 0)}.")
    header = ["tenant", "weight", "priority", "arrivals", "lengths (prompt / output)", "SLO TTFT / TPOT ms"]
    rows = [[t["name"], f"{t.get('weight', 1.0):g}", str(t.get("priority", 0)), _arrivals(t), _lengths(t),
             _slo(t.get("slo", {}))] for t in config.get("tenants", [])]
    return pool + "\n\n" + md_table(header, rows)


def _arrivals(t: Mapping[str, Any]) -> str:
    if "trace" in t and "rate" not in t:
        return f"{Path(t['trace']).name}, share {t.get('share', 1.0):g}"
    kind = t.get("arrival", "poisson")
    extra = f" cv {t['cv']:g}" if kind == "gamma" and "cv" in t else ""
    return f"{kind} {t.get('rate', 0):g} req/s{extra}"


def _lengths(t: Mapping[str, Any]) -> str:
    if "trace" in t:
        return "from the trace"
    return f"{_dist(t.get('prompt_tokens'))} / {_dist(t.get('output_tokens'))}"


def _dist(d: Any) -> str:
    if isinstance(d, Mapping) and d.get("dist") == "lognormal":
        return f"lognormal mean {d['mean']:g} p99 {d['p99']:g}"
    if isinstance(d, Mapping):
        return str(d.get("dist"))
    return str(d)


def _slo(slo: Mapping[str, Any]) -> str:
    return " / ".join(f"{slo[k]:g}" if k in slo else "-" for k in ("ttft_ms", "tpot_ms"))


def figure_block(name: str, loads: Mapping[Any, list], capacity: Mapping[str, dict], figures: Path,
                 root: Path, chosen: float | None) -> str:
    if importlib.util.find_spec("matplotlib") is None:
        return "### Figures\n\n(not drawn: they need matplotlib, `pip install -e '.[plot]'`)"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    lines = []

    def add(caption: str, path: Path) -> None:
        lines.append(f"![{caption}]({Path(_relative(path, root)).as_posix()})")

    numeric = [load for load in loads if isinstance(load, (int, float))]
    if loads:
        add("TTFT and TPOT CDFs per policy", plots.cdf_figure(loads, figures / f"{stem}-cdf.png", name))
    if len(numeric) > 1:
        by_series: dict[str, list] = {}
        for load in sorted(numeric):
            for series, doc in loads[load]:
                by_series.setdefault(series, []).append((load, doc))
        add("Throughput, goodput and p99 latency against load",
            plots.load_figure(by_series, figures / f"{stem}-load.png", name))
    if loads:
        at = chosen if chosen in loads else (max(numeric) if numeric else next(iter(loads)))
        rows = loads[at]
        suffix = f" at load x{at:g}" if isinstance(at, (int, float)) else ""
        add(f"Per-tenant service over time{suffix}", plots.service_figure(rows, figures / f"{stem}-service.png",
                                                                          name + suffix))
        add(f"Worker utilisation and KV usage over time{suffix}",
            plots.workers_figure(rows, figures / f"{stem}-workers.png", name + suffix))
    if capacity:
        add("Goodput capacity per policy", plots.capacity_figure(capacity, figures / f"{stem}-capacity.png", name))
    return "### Figures\n\n" + "\n\n".join(lines) if lines else ""


TIMELINE_SPAN_S = 2.0  # seconds of the timeline drawn when no window is given


def timeline_section(trace: Path, window: tuple[float, float] | None, figures: Path, root: Path) -> str:
    """A window of a run's trace as a picture: workers as rows, steps as bars by tenant share."""
    steps, workers, tenants = read_trace(trace)
    if not steps:
        raise ConfigError(f"--timeline: {trace} holds no steps; allowed: a file `fairbatch simulate --trace` wrote")
    first, last = steps[0]["ts"] / 1e6, max((s["ts"] + s["dur"]) / 1e6 for s in steps)
    if window is None:
        middle = (first + last) / 2
        window = (max(first, middle - TIMELINE_SPAN_S / 2), min(last, middle + TIMELINE_SPAN_S / 2))
    elif window[0] > last or window[1] < first:
        raise ConfigError(f"--timeline-window: {window[0]:g}:{window[1]:g} is outside the trace's steps, "
                          f"{first:.3f} to {last:.3f} s; allowed: a window that overlaps them")
    heading = f"## Timeline: {trace.name}, {window[0]:.2f} to {window[1]:.2f} s"
    if importlib.util.find_spec("matplotlib") is None:
        return heading + "\n\n(not drawn: it needs matplotlib, `pip install -e '.[plot]'`)"
    shown = [s for s in steps if s["ts"] / 1e6 <= window[1] and (s["ts"] + s["dur"]) / 1e6 >= window[0]]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", trace.stem)
    path = plots.timeline_figure(shown, workers, tenants, window, figures / f"{stem}-timeline.png", trace.name)
    caption = ("Each row is a worker; each bar a step (or a run of identical decode steps), from its start to "
               "its end, split from the bottom up into the tenants' shares of its tokens.")
    return f"{heading}\n\n{caption}\n\n![Timeline]({Path(_relative(path, root)).as_posix()})"


def read_trace(trace: Path) -> tuple[list[dict], list[int], list[str]]:
    """The step events of a trace file (by start), its workers and its tenants, in order."""
    try:
        events = json.loads(trace.read_text())["traceEvents"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = getattr(err, "strerror", None) or "not a trace file"
        raise ConfigError(f"--timeline: cannot read {trace}: {reason}; allowed: a file `fairbatch simulate --trace` "
                          "wrote") from None
    steps = sorted((e for e in events if e.get("cat") == "step"), key=lambda e: (e["ts"], e["tid"]))
    workers = sorted({e["tid"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
                      and e.get("pid") == WORKERS_PID} | {e["tid"] for e in steps})
    names = sorted(((e["pid"], e["args"]["name"]) for e in events if e.get("ph") == "M"
                    and e.get("name") == "process_name" and e.get("pid", 0) >= TENANT_PID))
    tenants = [name.removeprefix("tenant ") for _, name in names]
    return steps, workers, tenants


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())
