"""PNG figures of benchmark results (matplotlib, the `plot` extra), drawn from run documents.

Each function takes rows of (series name, run document) and a path, and writes one figure:
latency CDFs per load, throughput and p99 latency against load, per-tenant service over time,
worker utilisation and KV usage over time, and capacity per series; and `timeline_figure`, a window
of a run's steps from its trace (`fairbatch simulate --trace`). Only matplotlib's object API
is used (no pyplot), so nothing global changes and no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.errors import ConfigError

Rows = Sequence[tuple[str, dict]]
MAX_LINES = 8  # workers drawn per panel; more make an unreadable tangle
SMOOTH_BINS = 5  # service rates are averaged over this many time bins


def _figure(rows: int, cols: int, width: float = 4.2, height: float = 3.2):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install -e '.[plot]'") from None
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _panels(n: int, cols: int = 3):
    """A figure of n panels, at most `cols` a row; returns it and the n axes in reading order."""
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    return path


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _log_axis(ax, which: str) -> None:
    """A log scale labelled in plain numbers (1, 2, 5, 10, ... 1k, 10k): latencies span decades.
    Call after plotting: the ticks depend on the range drawn."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    low, high = ax.get_xlim() if which == "x" else ax.get_ylim()
    decades = np.log10(high / low) if low > 0 and high > low else 0
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: _compact(x)))
    axis.set_minor_formatter(NullFormatter())


def _compact(x: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def colours(names: Sequence[str]) -> dict[str, Any]:
    """One colour per series name, the same in every figure of a report."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(dict.fromkeys(names))}


def timeline_figure(steps: Sequence[Mapping[str, Any]], workers: Sequence[int], tenants: Sequence[str],
                    window: tuple[float, float], path: Path, title: str = "") -> Path:
    """A window of a run's timeline: a row per worker, each step a bar from its start to its end,
    split from the bottom up into the tenants' shares of its tokens (`steps`: the trace's step
    events, times in microseconds)."""
    fig, axes = _figure(1, 1, width=10.0, height=0.9 + 0.7 * max(1, len(workers)))
    ax = axes[0, 0]
    colour = colours(tenants)
    row = {worker: i for i, worker in enumerate(workers)}
    for tenant in tenants:
        lefts, widths, bottoms, heights = [], [], [], []
        for step in steps:
            shares = step["args"].get("tenant_tokens", {})
            total = sum(shares.values())
            if not total or tenant not in shares:
                continue
            below = sum(shares[t] for t in tenants[:tenants.index(tenant)] if t in shares)
            lefts.append(step["ts"] / 1e6)
            widths.append(step["dur"] / 1e6)
            bottoms.append(row[step["tid"]] - 0.4 + 0.8 * below / total)
            heights.append(0.8 * shares[tenant] / total)
        ax.bar(lefts, heights, widths, bottoms, align="edge", color=colour[tenant], linewidth=0, label=tenant)
    ax.set_xlim(*window)
    ax.set_yticks(range(len(workers)), [f"worker {w}" for w in workers])
    ax.set_ylim(-0.6, len(workers) - 0.4)
    _label(ax, "time (s)", "", title or "steps, by tenant share of their tokens")
    ax.legend(fontsize="small", loc="upper right", ncols=min(len(tenants), 6))
    return _save(fig, path)


def cdf_figure(by_load: Mapping[Any, Rows], path: Path, title: str = "") -> Path:
    """TTFT and TPOT CDFs, a column per load, a line per series."""
    loads = list(by_load)
    fig, axes = _figure(2, len(loads))
    palette = colours([name for rows in by_load.values() for name, _ in rows])
    for col, load in enumerate(loads):
        for row, (metric, label) in enumerate((("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)"))):
            ax = axes[row, col]
            for name, doc in by_load[load]:
                values = doc["series"][metric]
                if values:
                    ax.plot(values, np.asarray(doc["series"]["quantiles"]) / 100, label=name, color=palette[name])
            _log_axis(ax, "x")
            _label(ax, label, "fraction of requests",
                   f"{title} load x{load:g}" if isinstance(load, (int, float)) else title)
    axes[0, 0].legend(fontsize="small")
    return _save(fig, path)


def load_figure(by_series: Mapping[str, Sequence[tuple[float, dict]]], path: Path, title: str = "") -> Path:
    """Output throughput, goodput, p99 TTFT and p99 TPOT against load, a line per series."""
    panels = (("summary", "output_throughput", "output tokens/s", False),
              ("summary", "request_goodput", "goodput (req/s)", False),
              ("summary", "p99_ttft_ms", "p99 TTFT (ms)", True),
              ("summary", "p99_tpot_ms", "p99 TPOT (ms)", True))
    fig, axes = _figure(1, len(panels))
    palette = colours(list(by_series))
    for ax, (section, key, label, log) in zip(axes[0], panels):
        for name, points in by_series.items():
            xs = [load for load, doc in points if doc[section].get(key) is not None]
            ys = [doc[section][key] for _, doc in points if doc[section].get(key) is not None]
            ax.plot(xs, ys, marker="o", label=name, color=palette[name])
        _label(ax, "load (x the scenario's rates)", label, title)
        if log:
            _log_axis(ax, "y")
    axes[0, 0].legend(fontsize="small")
    return _save(fig, path)


def service_figure(rows: Rows, path: Path, title: str = "") -> Path:
    """Each tenant's weight-normalised service rate over time, a panel per series."""
    fig, axes = _panels(len(rows))
    for ax, (name, doc) in zip(axes, rows):
        time = np.asarray(doc["series"]["time_s"])
        service = np.asarray(doc["series"]["service"])
        if time.size > 1:
            rate = np.diff(service, axis=1) / np.diff(time)
            kernel = np.ones(SMOOTH_BINS) / SMOOTH_BINS
            mids = (time[:-1] + time[1:]) / 2
            for tenant, values in zip(doc["tenants"], rate):
                ax.plot(mids, np.convolve(values, kernel, mode="same"), label=tenant)
        _label(ax, "time (s)", "service / weight (tokens/s)", f"{title} {name}".strip())
    axes[0].legend(fontsize="small")
    return _save(fig, path)


def workers_figure(rows: Rows, path: Path, title: str = "") -> Path:
    """Busy fraction (solid) and KV usage (dashed) per worker over time, a panel per series."""
    fig, axes = _panels(len(rows))
    for ax, (name, doc) in zip(axes, rows):
        time = np.asarray(doc["series"]["time_s"])
        mids = (time[:-1] + time[1:]) / 2
        busy, kv = doc["series"]["busy"][:MAX_LINES], doc["series"]["kv_usage"][:MAX_LINES]
        for worker, (b, k) in enumerate(zip(busy, kv)):
            line, = ax.plot(mids, b, linewidth=1, label=f"worker {worker} busy")
            ax.plot(mids, k, linewidth=1, linestyle="--", color=line.get_color(), label=f"worker {worker} KV")
        ax.set_ylim(0, 1.05)
        _label(ax, "time (s)", "busy fraction, KV blocks in use", f"{title} {name}".strip())
    axes[0].legend(fontsize="small")
    return _save(fig, path)


def capacity_figure(results: Mapping[str, Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Goodput capacity per series, as offered req/s at the largest passing load."""
    fig, axes = _figure(1, 1, width=max(4.0, 0.9 * len(results) + 1.5))
    ax = axes[0, 0]
    names = list(results)
    rates = [((r.get("at_capacity") or {}).get("offered_request_rate") or 0.0) for r in results.values()]
    palette = colours(names)
    ax.bar(names, rates, color=[palette[n] for n in names])
    ax.set_ylabel("capacity (req/s)")
    ax.set_title(f"{title}: goodput capacity (>= 90% SLO attainment)".lstrip(": "))
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def validation_figure(runs: Sequence[tuple[str, Mapping[str, Mapping[str, np.ndarray]]]], path: Path) -> Path:
    """Measured and predicted CDFs of TTFT, TPOT and E2E, a row per run: each run is (title,
    {"measured": {metric: seconds}, "predicted": {...}, maybe more series})."""
    metrics = (("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)"), ("e2e", "E2E (ms)"))
    fig, axes = _figure(len(runs), len(metrics))
    for row, (title, series) in enumerate(runs):
        palette = colours(list(series))
        for col, (metric, label) in enumerate(metrics):
            ax = axes[row, col]
            for name, values in series.items():
                ms = np.sort(np.asarray(values[metric]) * 1e3)
                ax.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=name, color=palette[name])
            _log_axis(ax, "x")
            _label(ax, label, "fraction of requests", title)
        axes[row, 0].legend(fontsize="small")
    return _save(fig, path)


def bars_figure(panels: Sequence[tuple[str, Sequence[str], Sequence[float], float | None]], path: Path,
                baseline: str = "") -> Path:
    """Bar charts two a row: each panel is (title, bar names, values, a baseline drawn dashed or None)."""
    fig, axes = _panels(len(panels), cols=2)
    for ax, (title, names, values, line) in zip(axes, panels):
        ax.bar(list(names), list(values))
        if line is not None:
            ax.axhline(line, color="grey", linestyle="--", label=baseline)
            ax.legend(fontsize="small")
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


Line = tuple[str, str, bool, Sequence[float], Sequence[float]]  # label, colour key, dashed, xs, ys


def lines_figure(panels: Sequence[tuple[str, Sequence[Line]]], path: Path, xlabel: str, ylabel: str,
                 reference: float | None = None) -> Path:
    """A panel per (title, lines), log-log, one colour per colour key in every panel (dashed lines
    share their key's colour), and a dotted horizontal line at `reference`."""
    fig, axes = _panels(len(panels))
    palette = colours([key for _, lines in panels for _, key, _, _, _ in lines])
    for ax, (title, lines) in zip(axes, panels):
        for label, key, dashed, xs, ys in lines:
            ax.plot(xs, ys, "--" if dashed else "-", marker="o", color=palette[key], label=label)
        if reference is not None:
            ax.axhline(reference, color="grey", linewidth=0.8, linestyle=":")
        _log_axis(ax, "x")
        _log_axis(ax, "y")
        _label(ax, xlabel, ylabel, title)
    if axes:
        axes[0].legend(fontsize="x-small")
    return _save(fig, path)
