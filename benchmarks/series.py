"""Distributions and time series of one run, for plots: derived from RunData, kept small.

Latency CDFs are quantiles of TTFT and TPOT. Service over time is each tenant's cumulative
weight-normalised service (the Timeline) at a few evenly spaced times. Worker busy time and KV
usage over time are not recorded by the simulator, so they are rebuilt from the per-request
records: a worker is busy while it holds a running request (exact when no request was preempted,
since admissions start steps and finishes end them), and a running request holds the KV blocks of
its prompt plus the tokens generated so far (assumed to grow evenly from first token to finish).
"""

from __future__ import annotations

import math

import numpy as np

from scheduler.outcomes import Outcome
from sim.fairness import cumulative_service_at
from sim.results import RunData

QUANTILES = np.linspace(0.0, 100.0, 201)
BINS = 120  # time bins of the over-time series
_CHUNK = 1 << 21  # request x sample elements per block when summing KV blocks


def series(data: RunData, block_size: int, bins: int = BINS) -> dict:
    end = float(data.duration_s)
    edges = np.linspace(0.0, end, bins + 1) if end > 0 else np.zeros(1)
    busy, kv = worker_activity(data, block_size, edges)
    return {
        "quantiles": _round(QUANTILES),
        **latency_quantiles(data),
        "time_s": _round(edges),
        "service": _round(cumulative_service_at(data.timeline, edges).T),
        "busy": _round(busy),
        "kv_usage": _round(kv),
    }


def latency_quantiles(data: RunData) -> dict:
    """TTFT and TPOT (ms) of finished requests at QUANTILES; empty lists when there are none."""
    fin = data.records[data.records["outcome"] == Outcome.FINISHED.code]
    ttft = (fin["first_token"] - fin["arrival"]) * 1e3
    multi = fin[fin["output_tokens"] > 1]
    tpot = (multi["finish"] - multi["first_token"]) * 1e3 / (multi["output_tokens"] - 1)
    return {name: _round(np.percentile(v, QUANTILES)) if v.size else []
            for name, v in (("ttft_ms", ttft), ("tpot_ms", tpot))}


def worker_activity(data: RunData, block_size: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(workers, bins) busy fraction per time bin, and KV blocks in use / total at bin midpoints."""
    recs = data.records
    admitted = recs[~np.isnan(recs["admit"]) & (recs["worker"] >= 0)]
    end = float(edges[-1])
    stop = np.where(admitted["outcome"] == Outcome.FINISHED.code, admitted["finish"], end)
    mids = (edges[:-1] + edges[1:]) / 2
    busy = np.zeros((len(data.workers), mids.size))
    kv = np.zeros_like(busy)
    for w, stats in enumerate(data.workers):
        mine = admitted["worker"] == w
        busy[w] = busy_fraction(admitted["admit"][mine], stop[mine], edges)
        blocks = kv_blocks(admitted[mine], stop[mine], block_size, mids)
        kv[w] = blocks / stats.kv_blocks_total if stats.kv_blocks_total else 0.0
    return busy, kv


def busy_fraction(starts: np.ndarray, stops: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of each bin between edges covered by the union of the intervals [start, stop)."""
    if edges.size < 2:
        return np.zeros(0)
    if starts.size == 0:
        return np.zeros(edges.size - 1)
    times = np.concatenate([starts, stops])
    step = np.concatenate([np.ones(starts.size), -np.ones(stops.size)])
    order = np.argsort(times, kind="stable")
    times, running = times[order], np.cumsum(step[order])
    # Busy time accumulated up to each event: the gaps after events that leave something running.
    covered = np.concatenate([[0.0], np.cumsum(np.diff(times) * (running[:-1] > 0))])
    at_edges = np.interp(edges, times, covered)
    width = np.diff(edges)
    return np.divide(np.diff(at_edges), width, out=np.zeros_like(width), where=width > 0)


def kv_blocks(recs: np.ndarray, stops: np.ndarray, block_size: int, times: np.ndarray) -> np.ndarray:
    """KV blocks held at each of `times` by requests running then: prompt plus tokens generated
    so far (linear from the first token to the finish), rounded up to whole blocks."""
    total = np.zeros(times.size)
    rows = max(1, _CHUNK // max(times.size, 1))
    for lo in range(0, recs.size, rows):
        r, stop = recs[lo:lo + rows], stops[lo:lo + rows, None]
        t = times[None, :]
        first, finish = r["first_token"][:, None], r["finish"][:, None]
        span = np.where(np.isfinite(finish) & (finish > first), finish - first, np.inf)
        with np.errstate(invalid="ignore"):
            progress = np.clip((t - first) / span, 0.0, 1.0)
        progress = np.where(t >= first, progress, 0.0)  # NaN first token: nothing generated yet
        generated = np.where(t >= first, 1 + (r["output_tokens"][:, None] - 1) * progress, 0.0)
        tokens = r["prompt_tokens"][:, None] + generated
        running = (t >= r["admit"][:, None]) & (t < stop)
        total += np.where(running, np.ceil(tokens / block_size), 0.0).sum(axis=0)
    return total


def _round(values) -> list:
    """Six significant digits: enough for plots, a fraction of the bytes of full floats."""
    array = np.asarray(values, dtype=np.float64)
    out = np.vectorize(_sig, otypes=[float])(array) if array.size else array
    return out.tolist()


def _sig(x: float) -> float:
    if not math.isfinite(x) or x == 0:
        return float(x)
    return round(x, 5 - int(math.floor(math.log10(abs(x)))))
