"""Prometheus collectors of a scheduler: request outcomes, tokens, latencies, queue and KV state.

`Metrics` registers its collectors in the registry it is given (never the global one), so a
process, a test or a simulated run each have their own. The tenant label only takes the tenants
named at construction; any other name is counted as "other", so the label set stays bounded.
Latencies are in seconds: TTFT, TPOT ((e2e - TTFT) / (output tokens - 1), per request, as the
simulator's summary defines it), end-to-end and queue time (arrival to first admission).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .outcomes import Outcome, RejectReason

OTHER = "other"
# The label values, from the tables: every outcome a server sees (a request that ended) and every
# rejection reason. A value outside the tables is refused (ValueError), so the label sets stay bounded.
OUTCOMES = tuple(outcome for outcome in Outcome if outcome.ended)
REASONS = tuple(RejectReason)
# LLM request latencies: a few milliseconds (a short prompt on an idle pool) to minutes (a long
# generation behind a backlog).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
                   1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Time per output token: a decode step, from about a millisecond to a stalled second or more.
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
                 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class Timed(Protocol):
    """A request as the runtime tracks it (scheduler.runtime.RequestHandle is one)."""

    tenant: str
    arrival: float
    admitted_at: float | None
    first_token_at: float | None
    finished_at: float | None
    tokens: int


class Metrics:
    def __init__(self, registry: CollectorRegistry, tenants: Iterable[str]) -> None:
        self.tenants = frozenset(tenants)
        self._names = sorted(self.tenants)
        tenant = ("tenant",)
        self.requests = Counter("fairbatch_requests", "Requests that ended, by outcome.",
                                tenant + ("outcome",), registry=registry)
        self.rejections = Counter("fairbatch_rejections", "Requests refused at submission, by reason.",
                                  tenant + ("reason",), registry=registry)
        self.prompt_tokens = Counter("fairbatch_prompt_tokens", "Prompt tokens of requests whose prefill completed (recompute excluded).",
                                     tenant, registry=registry)
        self.generation_tokens = Counter("fairbatch_generation_tokens", "Output tokens generated.",
                                         tenant, registry=registry)
        self.preemptions = Counter("fairbatch_preemptions", "Running requests preempted (to be recomputed).",
                                   registry=registry)
        self.ttft = Histogram("fairbatch_time_to_first_token_seconds", "Arrival to first token.",
                              tenant, buckets=LATENCY_BUCKETS, registry=registry)
        self.tpot = Histogram("fairbatch_time_per_output_token_seconds",
                              "Per finished request: (e2e - TTFT) / (output tokens - 1).",
                              tenant, buckets=TOKEN_BUCKETS, registry=registry)
        self.e2e = Histogram("fairbatch_e2e_request_latency_seconds", "Arrival to the last token.",
                             tenant, buckets=LATENCY_BUCKETS, registry=registry)
        self.queue_time = Histogram("fairbatch_request_queue_time_seconds", "Arrival to first admission.",
                                    tenant, buckets=LATENCY_BUCKETS, registry=registry)
        self.running = Gauge("fairbatch_num_requests_running", "Requests running on workers.", registry=registry)
        self.waiting = Gauge("fairbatch_num_requests_waiting", "Requests waiting in queues.", tenant,
                             registry=registry)
        self.kv_usage = Gauge("fairbatch_kv_cache_usage_ratio", "Fraction of a worker's KV blocks in use.",
                              ("worker",), registry=registry)
        self.service = Gauge("fairbatch_tenant_service",
                             "Service received: (w_p x prompt + w_cached x cached prompt + w_q x output tokens) "
                             "/ weight.", tenant, registry=registry)
        # vLLM's prefix_cache_queries / prefix_cache_hits: prompt tokens looked up and found, per worker.
        self.prefix_queries = Counter("fairbatch_prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                                      ("worker",), registry=registry)
        self.prefix_hits = Counter("fairbatch_prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                                   ("worker",), registry=registry)
        self._counted: dict[str, tuple[int, int]] = {}  # worker -> (queries, hits) already counted
        self._init_series()

    def _init_series(self) -> None:
        """Every configured tenant's series exist from the start, at zero."""
        for name in self._names + [OTHER]:
            for outcome in OUTCOMES:
                self.requests.labels(name, outcome.value)
            for reason in REASONS:
                self.rejections.labels(name, reason.value)
            for collector in (self.prompt_tokens, self.generation_tokens, self.ttft, self.tpot, self.e2e,
                              self.queue_time, self.waiting):
                collector.labels(name)

    def label(self, tenant: Any) -> str:
        """The tenant label: the name if it is configured, else "other"."""
        return tenant if isinstance(tenant, str) and tenant in self.tenants else OTHER

    # ----- events -------------------------------------------------------------------------------

    def rejected(self, tenant: Any, reason: RejectReason | str) -> None:
        label = self.label(tenant)
        self.rejections.labels(label, RejectReason(reason).value).inc()
        self.requests.labels(label, Outcome.REJECTED.value).inc()

    def admitted(self, request: Timed) -> None:
        self.queue_time.labels(self.label(request.tenant)).observe(request.admitted_at - request.arrival)

    def first_token(self, request: Timed) -> None:
        self.ttft.labels(self.label(request.tenant)).observe(request.first_token_at - request.arrival)

    def prefilled(self, tenant: Any, tokens: int) -> None:
        self.prompt_tokens.labels(self.label(tenant)).inc(tokens)

    def generated(self, by_tenant: Mapping[Any, int]) -> None:
        for tenant, tokens in by_tenant.items():
            self.generation_tokens.labels(self.label(tenant)).inc(tokens)

    def preempted(self, count: int = 1) -> None:
        self.preemptions.inc(count)

    def request_ended(self, request: Timed, outcome: Outcome | str) -> None:
        label = self.label(request.tenant)
        outcome = Outcome(outcome)
        self.requests.labels(label, outcome.value).inc()
        if outcome is not Outcome.FINISHED or request.first_token_at is None:
            return
        e2e = request.finished_at - request.arrival
        self.e2e.labels(label).observe(e2e)
        if request.tokens > 1:
            ttft = request.first_token_at - request.arrival
            self.tpot.labels(label).observe((e2e - ttft) / (request.tokens - 1))

    # ----- state --------------------------------------------------------------------------------

    def sample(self, scheduler: Any) -> None:
        """Set the gauges from a scheduler.core.Scheduler as it is now."""
        self.running.set(scheduler.num_running)
        waiting = dict.fromkeys(self._names + [OTHER], 0)
        service = dict.fromkeys(self._names, 0.0)
        for tenant, queued, served in zip(scheduler.tenants, scheduler.tenant_queued(), scheduler.tenant_service()):
            label = self.label(tenant.name)
            waiting[label] += queued
            if label != OTHER:
                service[label] = served
        for label, count in waiting.items():
            self.waiting.labels(label).set(count)
        for label, served in service.items():
            self.service.labels(label).set(served)
        self.kv_usage.clear()  # a worker that left the pool leaves no stale series
        for wid in scheduler.worker_ids():
            kv = scheduler.kv_usage(wid)
            self.kv_usage.labels(str(wid)).set(kv.used / kv.total)
            cache = scheduler.prefix_cache_stats(wid)
            self.count_prefix_cache(str(wid), cache.queries, cache.hits)

    def count_prefix_cache(self, worker: str, queries: int, hits: int) -> None:
        """Bring the worker's prefix cache counters to these totals (they only grow)."""
        counted_queries, counted_hits = self._counted.get(worker, (0, 0))
        if queries > counted_queries:
            self.prefix_queries.labels(worker).inc(queries - counted_queries)
        if hits > counted_hits:
            self.prefix_hits.labels(worker).inc(hits - counted_hits)
        self._counted[worker] = (max(queries, counted_queries), max(hits, counted_hits))
