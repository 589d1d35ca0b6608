"""Admission control: which submitted requests enter a queue, and why the others are refused.

Every refusal is a `Rejected` with one `RejectReason`; nothing is dropped silently. Checks run in
a fixed order (tenant, fields, duplicates, workers, size, queue caps, rate limits) and rate-limit
buckets are only drawn from by requests that pass everything else. A refusal's detail goes to the
submitter, so it names only the submitting tenant's own figures, never what other tenants or the
pool have queued.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .actions import RejectReason
from .errors import ConfigError
from .prefix import Prefix
from .request import Quota, Request, Tenant

Refusal = tuple[RejectReason, str, float | None]  # reason, detail, retry_after seconds
CHEAPEST_TOKENS = 2  # the smallest token cost of a request: one prompt token, one new token


def invalid_fields(request: Request) -> str | None:
    """A description of what is wrong with the request's own fields, or None."""
    try:
        hash(request.id)
    except TypeError:
        return f"id: must be hashable, got {request.id!r}"
    for key in ("prompt_tokens", "max_new_tokens"):
        value = getattr(request, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{key}: must be an integer >= 1, got {value!r}"
    if request.priority is not None and (not isinstance(request.priority, int) or isinstance(request.priority, bool)):
        return f"priority: must be an integer or None, got {request.priority!r}"
    if request.prefix is not None:
        return _prefix_problem(request)
    return None


def _prefix_problem(request: Request) -> str | None:
    if not isinstance(request.prefix, Prefix):
        return f"prefix: must be a Prefix or None, got {type(request.prefix).__name__}"
    try:
        request.prefix.check(request.prompt_tokens)
    except ConfigError as error:
        return str(error)
    return None


def refuse_reason(request: Request, known_tenant: bool, duplicate: bool, workers: int,
                  max_tokens: int) -> tuple[RejectReason, str] | None:
    """The first structural reason to refuse `request` (before quotas), or None.

    `max_tokens` is the longest sequence (prompt + max_new_tokens) every worker can hold alone.
    """
    if not known_tenant:
        return RejectReason.UNKNOWN_TENANT, f"tenant {request.tenant!r} is not configured"
    problem = invalid_fields(request)
    if problem is not None:
        return RejectReason.INVALID_REQUEST, problem
    if duplicate:
        return RejectReason.INVALID_REQUEST, f"id {request.id!r} is already in flight"
    if workers == 0:
        return RejectReason.NO_WORKERS, "the pool has no workers"
    total = request.prompt_tokens + request.max_new_tokens
    if total > max_tokens:
        return RejectReason.PROMPT_TOO_LONG, (
            f"prompt_tokens + max_new_tokens = {total} exceeds {max_tokens}, the longest sequence a request may have"
        )
    return None


class TokenBucket:
    """`rate` units per second into a bucket of `burst` units; starts full."""

    __slots__ = ("rate", "burst", "level", "last")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = burst
        self.last = -math.inf

    def refill(self, now: float) -> float:
        if now > self.last:
            self.level = min(self.burst, self.level + (now - self.last) * self.rate)
            self.last = now
        return self.level

    def wait(self, amount: float) -> float | None:
        """Seconds until `amount` is available (after refill); None if it never fits the bucket."""
        if amount > self.burst:
            return None
        return max(0.0, (amount - self.level) / self.rate)

    def holds(self, amount: float) -> bool:
        # A relative tolerance, so that a retry exactly `wait` seconds later passes despite rounding.
        return self.level >= amount * (1 - 1e-12)


def _bucket(rate: float | None, burst: float | None, minimum: float) -> TokenBucket | None:
    if rate is None:
        return None
    return TokenBucket(rate, burst_of(rate, burst, minimum))


def burst_of(rate: float, burst: float | None, minimum: float = 1.0) -> float:
    """A bucket's size: `burst`, or one second's worth and at least `minimum`."""
    return burst if burst is not None else max(rate, minimum)


def unadmittable(quota: Quota, cheapest_tokens: int = CHEAPEST_TOKENS) -> tuple[str, str] | None:
    """(key, why) when a quota's buckets can never admit even the cheapest request, or None: a
    config loader names the tenant and refuses it, since every request of that tenant would be."""
    if quota.requests_per_s is not None:
        burst = burst_of(quota.requests_per_s, quota.request_burst)
        if burst < 1:
            return "request_burst", f"a bucket of {burst:g} requests cannot hold one request; allowed: >= 1"
    if quota.tokens_per_s is not None:
        burst = burst_of(quota.tokens_per_s, quota.token_burst)
        if burst < cheapest_tokens:
            key = "token_burst" if quota.token_burst is not None else "tokens_per_s"
            return key, (f"a bucket of {burst:g} tokens cannot hold the cheapest request ({cheapest_tokens} "
                         f"tokens: prompt + max_new_tokens); allowed: token_burst >= {cheapest_tokens}")
    return None


@dataclass(frozen=True, slots=True)
class QueueTotals:
    """What waits in the queues now: per tenant and in all."""

    requests: Sequence[int]
    tokens: Sequence[int]


class Admission:
    """Per-tenant rate limits and queue caps, plus pool-wide queue caps."""

    def __init__(self, tenants: Sequence[Tenant], max_queued: int | None = None,
                 max_queued_tokens: int | None = None) -> None:
        self._quotas: list[Quota] = [t.quota for t in tenants]
        self._requests = [_bucket(q.requests_per_s, q.request_burst, 1.0) for q in self._quotas]
        self._tokens = [_bucket(q.tokens_per_s, q.token_burst, 1.0) for q in self._quotas]
        self.max_queued = max_queued
        self.max_queued_tokens = max_queued_tokens
        # tenants with a cap or a bucket; for the others (and no pool cap) there is nothing to check
        self._limited = [any(v is not None for v in (q.max_queued, q.max_queued_tokens, q.requests_per_s,
                                                      q.tokens_per_s)) for q in self._quotas]
        self._pool_capped = max_queued is not None or max_queued_tokens is not None

    def limits(self, tenant: int) -> bool:
        """Whether any cap or rate limit applies to `tenant`'s requests (else `check` admits)."""
        return self._pool_capped or self._limited[tenant]

    def check(self, request: Request, tenant: int, now: float, queued: QueueTotals) -> Refusal | None:
        """Refuse, or admit and draw from the tenant's buckets."""
        refusal = self._queue_cap(request, tenant, queued) or self._rate_limit(request, tenant, now)
        if refusal is None:
            for bucket, cost, _ in self._costs(request, tenant):
                bucket.level -= cost
        return refusal

    def _queue_cap(self, request: Request, tenant: int, queued: QueueTotals) -> Refusal | None:
        """The tenant's caps are named with its own figures; the pool's without any (they would tell
        one tenant what the others have queued)."""
        quota = self._quotas[tenant]
        prompt = request.prompt_tokens
        # what would wait with this request, computed only for the caps that are set
        if quota.max_queued is not None and (would_be := queued.requests[tenant] + 1) > quota.max_queued:
            return (RejectReason.QUEUE_FULL, f"the tenant's queued requests would be {would_be}, over the cap of "
                    f"{quota.max_queued}", None)
        if quota.max_queued_tokens is not None and (would_be := queued.tokens[tenant] + prompt) > quota.max_queued_tokens:
            return (RejectReason.QUEUE_FULL, f"the tenant's queued prompt tokens would be {would_be}, over the cap "
                    f"of {quota.max_queued_tokens}", None)
        for cap, total, what in ((self.max_queued, lambda: sum(queued.requests) + 1, "requests"),
                                 (self.max_queued_tokens, lambda: sum(queued.tokens) + prompt, "prompt tokens")):
            if cap is not None and total() > cap:
                return RejectReason.QUEUE_FULL, f"the pool's queue is full (a cap on queued {what}); retry later", None
        return None

    def _rate_limit(self, request: Request, tenant: int, now: float) -> Refusal | None:
        """Refuse when a bucket is short; retry_after is when every bucket holds the cost (None: never)."""
        short, waits = [], []
        for bucket, cost, unit in self._costs(request, tenant):
            bucket.refill(now)
            wait = bucket.wait(cost)
            if wait is None:
                return (RejectReason.RATE_LIMITED, f"{unit} limit: a request costing {cost:g} can never fit "
                        f"the tenant's bucket of {bucket.burst:g}, however long it waits; ask for less", None)
            if not bucket.holds(cost):
                short.append(unit)
            waits.append(wait)
        if not short:
            return None
        wait = max(waits)
        return RejectReason.RATE_LIMITED, f"{' and '.join(short)} limit: retry in {wait:.3f} s", wait

    def _costs(self, request: Request, tenant: int):
        triples = ((self._requests[tenant], 1.0, "requests/s"),
                   (self._tokens[tenant], request.prompt_tokens + request.max_new_tokens, "tokens/s"))
        return [triple for triple in triples if triple[0] is not None]
