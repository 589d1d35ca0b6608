"""Prometheus collectors: their own registry, bounded tenant labels, gauges from the core, and a
simulated run exported through the same collectors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.core import Scheduler, SchedulerConfig
from scheduler.events import StepResult
from scheduler.prefix import Prefix
from scheduler.metrics import LATENCY_BUCKETS, OTHER, Metrics
from scheduler.request import Request, Tenant
from sim.cluster import simulate
from sim.config import load_config
from sim.metrics_export import export_run
from sim.results import summarize


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_collectors_live_in_the_registry_they_are_given():
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first, ["a"]).rejected("a", "queue_full")
    Metrics(second, ["a"])
    assert value(first, "fairbatch_rejections_total", tenant="a", reason="queue_full") == 1
    assert value(second, "fairbatch_rejections_total", tenant="a", reason="queue_full") == 0
    assert REGISTRY.get_sample_value("fairbatch_rejections_total", {"tenant": "a", "reason": "queue_full"}) is None


def test_unconfigured_tenants_fold_into_other():
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["a", "b"])
    for tenant in ("a", "zed", "yak", None, ["unhashable"]):
        metrics.rejected(tenant, "unknown_tenant")
    assert value(registry, "fairbatch_requests_total", tenant="a", outcome="rejected") == 1
    assert value(registry, "fairbatch_requests_total", tenant=OTHER, outcome="rejected") == 4
    tenants = {s.labels["tenant"] for f in text_string_to_metric_families(generate_latest(registry).decode())
               for s in f.samples if "tenant" in s.labels}
    assert tenants == {"a", "b", OTHER}


def test_latency_buckets_span_milliseconds_to_minutes():
    assert LATENCY_BUCKETS[0] <= 0.001 and LATENCY_BUCKETS[-1] >= 300
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_a_finished_request_observes_ttft_tpot_e2e_and_queue_time():
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["a"])
    request = SimpleNamespace(tenant="a", arrival=1.0, admitted_at=1.5, first_token_at=2.0, finished_at=6.0, tokens=5)
    metrics.admitted(request)
    metrics.first_token(request)
    metrics.request_ended(request, "finished")
    assert value(registry, "fairbatch_request_queue_time_seconds_sum", tenant="a") == 0.5
    assert value(registry, "fairbatch_time_to_first_token_seconds_sum", tenant="a") == 1.0
    assert value(registry, "fairbatch_e2e_request_latency_seconds_sum", tenant="a") == 5.0
    assert value(registry, "fairbatch_time_per_output_token_seconds_sum", tenant="a") == 1.0  # 4 s / 4 gaps
    assert value(registry, "fairbatch_time_to_first_token_seconds_bucket", tenant="a", le="1.0") == 1
    assert value(registry, "fairbatch_time_to_first_token_seconds_bucket", tenant="a", le="0.75") == 0
    cancelled = SimpleNamespace(tenant="a", arrival=0.0, admitted_at=None, first_token_at=None, finished_at=1.0,
                                tokens=0)
    metrics.request_ended(cancelled, "cancelled")
    assert value(registry, "fairbatch_requests_total", tenant="a", outcome="cancelled") == 1
    assert value(registry, "fairbatch_e2e_request_latency_seconds_count", tenant="a") == 1


def test_gauges_sample_the_core():
    scheduler = Scheduler([Tenant("a"), Tenant("b", weight=2.0)], "fcfs", "global",
                          SchedulerConfig(max_num_batched_tokens=16, max_num_seqs=1, block_size=4, kv_watermark=0.0))
    scheduler.add_worker(0, 10, 0.0)
    for rid, tenant in ((1, "a"), (2, "b"), (3, "b")):
        scheduler.submit(Request(rid, tenant, 8, 4), 0.0)
    plan = scheduler.plan(0, 0.0)
    assert plan.admitted == (1,)
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["a", "b"])
    metrics.sample(scheduler)
    assert value(registry, "fairbatch_num_requests_running") == 1
    assert value(registry, "fairbatch_num_requests_waiting", tenant="a") == 0
    assert value(registry, "fairbatch_num_requests_waiting", tenant="b") == 2
    assert value(registry, "fairbatch_kv_cache_usage_ratio", worker="0") == pytest.approx(2 / 10)
    assert value(registry, "fairbatch_tenant_service", tenant="a") == 0  # charged when the chunk completes


def test_prefix_cache_counters_count_prompt_tokens_looked_up_and_found_per_worker():
    scheduler = Scheduler([Tenant("a")], "fcfs", "global",
                          SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=4, block_size=4, kv_watermark=0.0))
    scheduler.add_worker(0, 64, 0.0)
    shared = tuple(range(12))
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["a"])
    for rid, now in ((1, 0.0), (2, 1.0)):  # the second finds the first's three full blocks but the last
        scheduler.submit(Request(rid, "a", 13, 1, prefix=Prefix(shared + (100 + rid,))), now)
        scheduler.plan(0, now)
        scheduler.complete(0, StepResult(), now)
        metrics.sample(scheduler)
    assert value(registry, "fairbatch_prefix_cache_queries_total", worker="0") == 26
    assert value(registry, "fairbatch_prefix_cache_hits_total", worker="0") == 12
    metrics.sample(scheduler)  # sampling again counts nothing twice
    assert value(registry, "fairbatch_prefix_cache_hits_total", worker="0") == 12


def test_a_simulated_run_exports_the_same_metrics():
    config = load_config(None, {"requests": 300, "load": 3.0, "scheduler.num_gpu_blocks": 1878})
    data = simulate(config)
    summary = summarize(data)
    registry = CollectorRegistry()
    export_run(data, Metrics(registry, [t.name for t in config.tenants]))
    families = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {"fairbatch_requests", "fairbatch_time_to_first_token_seconds", "fairbatch_kv_cache_usage_ratio",
            "fairbatch_tenant_service", "fairbatch_preemptions"} <= families
    for name, tenant in summary["tenants"].items():
        assert value(registry, "fairbatch_requests_total", tenant=name, outcome="finished") == tenant["completed"]
        assert value(registry, "fairbatch_time_to_first_token_seconds_count", tenant=name) == tenant["completed"]
        assert value(registry, "fairbatch_generation_tokens_total", tenant=name) == tenant["output_tokens"]
        assert value(registry, "fairbatch_prompt_tokens_total", tenant=name) == tenant["prompt_tokens"]
        assert value(registry, "fairbatch_tenant_service", tenant=name) == pytest.approx(tenant["normalised_service"])
    assert value(registry, "fairbatch_preemptions_total") == summary["summary"]["preemptions"] > 0
    ttft_sum = sum(value(registry, "fairbatch_time_to_first_token_seconds_sum", tenant=n) for n in summary["tenants"])
    assert ttft_sum == pytest.approx(summary["summary"]["mean_ttft_ms"] / 1e3 * summary["summary"]["completed"])
    assert 0 < value(registry, "fairbatch_kv_cache_usage_ratio", worker="0") <= 1
    assert value(registry, "fairbatch_num_requests_running") == 0
