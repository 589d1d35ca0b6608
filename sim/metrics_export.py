"""A simulated run as Prometheus metrics: the serving process's collectors, filled from a RunData.

`export_run` fills a `scheduler.metrics.Metrics` with what a server would have counted over the
run: requests by outcome, rejections by reason, tokens, preemptions and the latency histograms.
Gauges describe the end of the run: requests still running or waiting (those a horizon cut off),
each tenant's service, and each worker's KV usage averaged over the run (a drained pool would
read 0, which says nothing).
"""

from __future__ import annotations

import math

import numpy as np

from scheduler.metrics import OUTCOMES, Metrics
from scheduler.outcomes import Outcome, RejectReason

from .results import RunData, tenant_service


def export_run(data: RunData, metrics: Metrics) -> None:
    """Add the run's counts and latencies to `metrics` and set its gauges."""
    records = data.records
    names = [tenant.name for tenant in data.tenants]
    for i, name in enumerate(names):
        _export_tenant(records[records["tenant"] == i], name, metrics)
    metrics.preempted(sum(worker.preemptions for worker in data.workers))
    _set_gauges(data, metrics)


def _export_tenant(records: np.ndarray, name: str, metrics: Metrics) -> None:
    label = metrics.label(name)
    outcome = records["outcome"]
    for ended in OUTCOMES:
        if (count := int((outcome == ended.code).sum())):
            metrics.requests.labels(label, ended.value).inc(count)
    reasons = records["reason"][outcome == Outcome.REJECTED.code]
    for code in np.unique(reasons):
        metrics.rejections.labels(label, RejectReason.from_code(code).value).inc(int((reasons == code).sum()))
    started = records[~np.isnan(records["first_token"])]
    metrics.prompt_tokens.labels(label).inc(int(started["prompt_tokens"].sum()))
    metrics.generation_tokens.labels(label).inc(int(records["output_tokens"].sum()))
    _observe(metrics.ttft.labels(label), started["first_token"] - started["arrival"])
    admitted = records[~np.isnan(records["admit"])]
    _observe(metrics.queue_time.labels(label), admitted["admit"] - admitted["arrival"])
    done = records[(outcome == Outcome.FINISHED.code) & ~np.isnan(records["first_token"])]
    _observe(metrics.e2e.labels(label), done["finish"] - done["arrival"])
    many = done[done["output_tokens"] > 1]
    _observe(metrics.tpot.labels(label), (many["finish"] - many["first_token"]) / (many["output_tokens"] - 1))


def _observe(histogram, values: np.ndarray) -> None:
    for value in values.tolist():
        histogram.observe(value)


def _set_gauges(data: RunData, metrics: Metrics) -> None:
    records = data.records
    unfinished = records[records["outcome"] == Outcome.UNFINISHED.code]
    running = ~np.isnan(unfinished["admit"])
    metrics.running.set(int(running.sum()))
    waiting: dict[str, int] = {}
    service: dict[str, float] = {}
    for i, tenant in enumerate(data.tenants):
        label = metrics.label(tenant.name)
        mine = records[records["tenant"] == i]
        waiting[label] = waiting.get(label, 0) + int((unfinished["tenant"][~running] == i).sum())
        served = tenant_service(data, i, mine) / tenant.weight
        service[label] = service.get(label, 0.0) + served
    for label, count in waiting.items():
        metrics.waiting.labels(label).set(count)
    for label, served in service.items():
        metrics.service.labels(label).set(served)
    for wid, worker in enumerate(data.workers):
        capacity = data.duration_s * worker.kv_blocks_total
        usage = worker.kv_block_seconds / capacity if capacity > 0 else 0.0
        metrics.kv_usage.labels(str(wid)).set(usage if math.isfinite(usage) else 0.0)
        metrics.count_prefix_cache(str(wid), worker.prefix_queries, worker.prefix_hits)
