"""Fairness over time: windowed service and demand rates, the VTC paper's service difference,
accumulated service gaps, and latency percentiles that count requests still waiting at the end.

Service is VTC's cost, w_p x prompt tokens + w_q x output tokens, divided by the tenant's weight
(the simulator's Timeline already holds it that way). Service rates per window come from the
Timeline, exact up to its sampling (linear interpolation between samples); demand rates come from
the requests that arrive in the window, each asking for w_p x prompt + w_q x min(true output,
max_new_tokens). The VTC paper's metric (Sheng et al., OSDI'24, section 5) is, per window,
sum over tenants j of min(max_k s_k - s_j, |r_j - s_j|): a tenant that gets less than the most
served one counts only as far as it also got less (or more) than it asked for, so tenants that
are simply idle, or served all they asked, add nothing. Every function is vectorised over windows
and tenants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.outcomes import Outcome
from scheduler.service import ServiceWeights, service

from .results import RunData, Timeline, finite_or_none

__all__ = [
    "WindowedFairness",
    "accumulated_service_difference",
    "censored_latency",
    "censored_percentile",
    "cumulative_service_at",
    "demand_rates",
    "request_costs",
    "service_difference",
    "service_rates",
    "window_edges",
    "windowed_service_difference",
]

_FAR = 1e300  # stands for "somewhere above every value" in censored_percentile


def window_edges(start: float, end: float, window_s: float) -> np.ndarray:
    """Edges of the whole windows of `window_s` seconds that fit in [start, end]; at least [start]."""
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    count = int(np.floor((end - start) / window_s + 1e-9)) if end > start else 0
    return start + window_s * np.arange(count + 1, dtype=np.float64)


def cumulative_service_at(timeline: Timeline, times) -> np.ndarray:
    """(len(times), tenants): each tenant's cumulative service at `times`, interpolated linearly
    between samples and held constant outside the sampled range (0 before the first sample if the
    timeline is empty)."""
    t = np.asarray(timeline.time, dtype=np.float64)
    w = np.asarray(timeline.service, dtype=np.float64)
    x = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        return np.zeros((x.size, w.shape[1]))
    if t.size == 1:
        return np.repeat(w[:1], x.size, axis=0)
    x = np.clip(x, t[0], t[-1])
    hi = np.clip(np.searchsorted(t, x, side="right"), 1, t.size - 1)
    lo = hi - 1
    span = t[hi] - t[lo]
    frac = np.divide(x - t[lo], span, out=np.zeros_like(x), where=span > 0)[:, None]
    return w[lo] + (w[hi] - w[lo]) * frac


def service_rates(timeline: Timeline, edges) -> np.ndarray:
    """(windows, tenants): service per second each tenant received in each window between edges."""
    edges = np.asarray(edges, dtype=np.float64)
    cumulative = cumulative_service_at(timeline, edges)
    return np.diff(cumulative, axis=0) / np.diff(edges)[:, None]


def request_costs(prompt_tokens, output_tokens, weights: ServiceWeights = ServiceWeights(), weight=1.0) -> np.ndarray:
    """VTC cost of each request, w_p x prompt + w_q x output, divided by its tenant's weight (the
    demand a request brings, its prompt computed in full)."""
    prompt = np.asarray(prompt_tokens, dtype=np.float64)
    output = np.asarray(output_tokens, dtype=np.float64)
    return service(weights, prompt, output, np.asarray(weight, dtype=np.float64))


def demand_rates(arrival, tenant, cost, edges, n_tenants: int) -> np.ndarray:
    """(windows, tenants): cost per second of the requests arriving in each window [e_k, e_k+1)."""
    edges = np.asarray(edges, dtype=np.float64)
    arrival = np.asarray(arrival, dtype=np.float64)
    tenant = np.asarray(tenant, dtype=np.int64)
    cost = np.asarray(cost, dtype=np.float64)
    n_windows = edges.size - 1
    if n_windows < 1:
        return np.zeros((0, n_tenants))
    window = np.searchsorted(edges, arrival, side="right") - 1
    keep = (window >= 0) & (window < n_windows) & (arrival < edges[-1])
    flat = window[keep] * n_tenants + tenant[keep]
    sums = np.bincount(flat, weights=cost[keep], minlength=n_windows * n_tenants)
    return sums.reshape(n_windows, n_tenants) / np.diff(edges)[:, None]


def service_difference(service, demand) -> np.ndarray:
    """Per window: sum_j min(max_k s_k - s_j, |r_j - s_j|) for (windows, tenants) rates s and r."""
    s = np.atleast_2d(np.asarray(service, dtype=np.float64))
    r = np.atleast_2d(np.asarray(demand, dtype=np.float64))
    if s.shape != r.shape:
        raise ValueError(f"service and demand shapes differ: {s.shape} != {r.shape}")
    if s.shape[1] == 0:
        return np.zeros(s.shape[0])
    behind = s.max(axis=1, keepdims=True) - s
    return np.minimum(behind, np.abs(r - s)).sum(axis=1)


def accumulated_service_difference(timeline: Timeline, times) -> np.ndarray:
    """max_k W_k - min_k W_k of cumulative (weight-normalised) service at each of `times`."""
    cumulative = cumulative_service_at(timeline, times)
    if cumulative.shape[1] == 0:
        return np.zeros(cumulative.shape[0])
    return cumulative.max(axis=1) - cumulative.min(axis=1)


@dataclass(frozen=True, slots=True, eq=False)
class WindowedFairness:
    edges: np.ndarray        # (W + 1,) window edges, seconds
    service: np.ndarray      # (W, T) weight-normalised service rate per window
    demand: np.ndarray       # (W, T) weight-normalised demand rate per window
    difference: np.ndarray   # (W,) the VTC paper's service difference per window

    @property
    def max(self) -> float | None:
        return finite_or_none(float(self.difference.max())) if self.difference.size else None

    @property
    def mean(self) -> float | None:
        return finite_or_none(float(self.difference.mean())) if self.difference.size else None


def windowed_service_difference(data: RunData, window_s: float = 60.0, *, true_output=None, max_new_tokens=None,
                                start: float = 0.0, end: float | None = None) -> WindowedFairness:
    """The VTC paper's service difference per window of a run, weight-normalised.

    Demand counts each request's output as min(true output, max_new_tokens). Finished requests
    give it exactly (their emitted tokens); for the others pass the workload's `true_output` and
    `max_new_tokens` arrays (indexed by record id), or their tokens emitted so far are used, which
    understates the demand of requests that never finished. Windows are whole `window_s` spans from
    `start` to `end` (default: the last timeline sample).
    """
    recs = data.records
    timeline = data.timeline
    if end is None:
        end = float(timeline.time[-1]) if timeline.time.size else start
    edges = window_edges(start, end, window_s)
    output = recs["output_tokens"].astype(np.float64)
    if true_output is not None:
        asked = np.asarray(true_output, dtype=np.float64)[recs["id"]]
        if max_new_tokens is not None:
            asked = np.minimum(asked, np.asarray(max_new_tokens, dtype=np.float64)[recs["id"]])
        output = np.where(recs["outcome"] == Outcome.FINISHED.code, output, asked)
    weights = np.array([t.weight for t in data.tenants], dtype=np.float64)
    cost = request_costs(recs["prompt_tokens"], output, ServiceWeights(*data.service_weights), weights[recs["tenant"]])
    service = service_rates(timeline, edges)
    demand = demand_rates(recs["arrival"], recs["tenant"], cost, edges, len(data.tenants))
    return WindowedFairness(edges, service, demand, service_difference(service, demand))


def censored_latency(records: np.ndarray, end: float, event: str = "first_token") -> tuple[np.ndarray, np.ndarray]:
    """Seconds from arrival to `event` ("first_token", "admit" or "finish") of each record, and
    whether that value is censored.

    A request whose event has not happened by `end` (still queued, or cut off by a run's horizon)
    is given end - arrival, a lower bound, and flagged censored. Rejected and cancelled requests are
    censored the same way; drop them first if they should not count.
    """
    at = records[event]
    censored = ~(at <= end)  # NaN (never happened) compares False
    latency = np.where(censored, end - records["arrival"], at - records["arrival"])
    return np.maximum(latency, 0.0), censored


def censored_percentile(values, censored, q: float) -> tuple[float | None, bool]:
    """Percentile q (0..100, linear interpolation) of values where censored ones are lower bounds.

    Returns (estimate, exact): the estimate takes each censored value at its bound, so it never
    exceeds the true percentile; `exact` is True when no placement of the censored values above
    their bounds could change it (the estimate equals the one with censored values far above all).
    (None, True) for no values.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(censored, dtype=bool)
    if v.size == 0:
        return None, True
    low = float(np.percentile(v, q))
    if not c.any():
        return low, True
    # A huge finite stand-in for "anywhere above": infinity would make numpy's lerp give NaN.
    high = float(np.percentile(np.where(c, _FAR, v), q))
    return low, high == low
