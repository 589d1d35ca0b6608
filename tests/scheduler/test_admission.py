"""Tests of scheduler.admission and its use in Scheduler.submit.

TokenBucket arithmetic; Quota and pool-cap validation; every RejectReason through submit; rate
limits on requests/s and tokens/s with `retry_after`; per-tenant and pool-wide queue caps; refused
requests never draw from a bucket; requeues after preemption are never refused; how refusals are
counted.

Scheduler defaults come from conftest: 4-token KV blocks, one 64-block worker (256 tokens per
sequence), 16-token steps, debug_checks on. Unless a test says otherwise, rates are powers of two
and times multiples of 1/64, so the bucket arithmetic is exact in binary floating point and
`retry_after` can be compared with ==.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.actions import Admitted, Rejected, RejectReason
from scheduler.admission import CHEAPEST_TOKENS, TokenBucket, unadmittable
from scheduler.core import SchedulerConfig
from scheduler.errors import ConfigError
from scheduler.request import Quota, Request, RequestState, Tenant

RATE_LIMITED = RejectReason.RATE_LIMITED
QUEUE_FULL = RejectReason.QUEUE_FULL


def tenants_with(quota: Quota, other: Quota = Quota()) -> tuple[Tenant, ...]:
    """Tenant "a" (index 0) with `quota`, tenant "b" (index 1) with `other`."""
    return (Tenant("a", quota=quota), Tenant("b", quota=other))


def rejected(verdict, reason: RejectReason, *fragments: str) -> Rejected:
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason is reason, verdict
    for fragment in fragments:
        assert fragment in verdict.detail, (fragment, verdict.detail)
    return verdict


def conserved(s) -> None:
    assert s.counts.submitted == s.counts.ended + len(s.live)


# ----- TokenBucket ----------------------------------------------------------------------------------


def test_bucket_starts_full_and_its_first_refill_keeps_it_full():
    bucket = TokenBucket(2.0, 5.0)
    assert bucket.level == 5.0
    assert bucket.refill(-3.0) == 5.0  # however early the first call
    assert bucket.last == -3.0
    assert bucket.refill(0.0) == 5.0


def test_refill_adds_rate_times_elapsed_up_to_the_burst():
    bucket = TokenBucket(2.0, 5.0)
    bucket.refill(1.0)
    bucket.level = 0.0
    assert bucket.refill(1.5) == 1.0
    assert bucket.refill(1.5) == 1.0  # no time, no tokens
    assert bucket.refill(2.75) == 3.5
    assert bucket.refill(100.0) == 5.0  # capped at the burst
    assert bucket.last == 100.0


def test_refill_never_runs_time_backwards():
    bucket = TokenBucket(4.0, 8.0)
    bucket.refill(2.0)
    bucket.level = 1.0
    assert bucket.refill(1.0) == 1.0
    assert bucket.last == 2.0
    assert bucket.refill(2.25) == 2.0  # measured from 2.0, not from 1.0


def test_wait_is_the_time_until_the_amount_is_there_or_none_beyond_the_burst():
    bucket = TokenBucket(2.0, 4.0)
    bucket.refill(0.0)
    bucket.level = 1.0
    assert bucket.wait(0.5) == 0.0
    assert bucket.wait(1.0) == 0.0
    assert bucket.wait(3.0) == 1.0
    assert bucket.wait(4.0) == 1.5  # the whole burst
    assert bucket.wait(4.5) is None  # never fits
    assert (bucket.level, bucket.last) == (1.0, 0.0)  # wait changes nothing


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.01, 1e4),
    burst=st.floats(0.5, 1e4),
    fill=st.floats(0.0, 1.0),
    elapsed=st.floats(0.0, 1e3),
    amount=st.floats(0.0, 2e4),
)
def test_refill_and_wait_arithmetic(rate, burst, fill, elapsed, amount):
    bucket = TokenBucket(rate, burst)
    bucket.refill(0.0)
    bucket.level = level = fill * burst
    assert bucket.refill(elapsed) == pytest.approx(min(burst, level + elapsed * rate), rel=1e-9)
    if elapsed == 0.0:
        bucket.refill(1.0)  # so that last + wait below is computed exactly enough
    level = bucket.level
    wait = bucket.wait(amount)
    if amount > burst:
        assert wait is None
    elif amount <= level:
        assert wait == 0.0
    else:
        assert wait == pytest.approx((amount - level) / rate, rel=1e-9)
        assert bucket.refill(bucket.last + wait) == pytest.approx(amount, rel=1e-9)


# ----- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["requests_per_s", "request_burst", "tokens_per_s", "token_burst"])
@pytest.mark.parametrize("bad", [0, -1, 0.0, math.nan, math.inf, "2", True])
def test_quota_rates_and_bursts_must_be_positive_finite_numbers(key, bad):
    with pytest.raises(ConfigError, match=f"quota.{key}: must be a number > 0") as info:
        Quota(**{key: bad})
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("key", ["max_queued", "max_queued_tokens"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, True, "3"])
def test_quota_caps_must_be_positive_integers(key, bad):
    with pytest.raises(ConfigError, match=f"quota.{key}: must be an integer >= 1") as info:
        Quota(**{key: bad})
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("key", ["max_queued", "max_queued_tokens"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_pool_caps_must_be_positive_integers(key, bad):
    with pytest.raises(ConfigError, match=f"scheduler.{key}: must be an integer >= 1"):
        SchedulerConfig(**{key: bad})


def test_valid_quotas_and_caps_are_accepted():
    Quota()
    Quota(requests_per_s=0.5, request_burst=1, tokens_per_s=10, token_burst=1e6, max_queued=1, max_queued_tokens=1)
    SchedulerConfig(max_queued=1, max_queued_tokens=1)


# ----- every reason through submit ------------------------------------------------------------------


def _reason_cases(make_scheduler):
    """For each reason: a scheduler, the requests to submit at time 0 (the last one is refused), and
    fragments its detail must hold."""
    capped = tenants_with(Quota(max_queued=1))
    limited = tenants_with(Quota(requests_per_s=1))
    one = Request(1, "a", 8, 4)
    return {
        RejectReason.UNKNOWN_TENANT: (make_scheduler(), [Request(1, "zed", 8, 4)], ["'zed'", "not configured"]),
        RejectReason.INVALID_REQUEST: (make_scheduler(), [Request(1, "a", 0, 4)], ["prompt_tokens", "0"]),
        RejectReason.NO_WORKERS: (make_scheduler(workers=()), [one], ["no workers"]),
        RejectReason.PROMPT_TOO_LONG: (make_scheduler(), [Request(1, "a", 250, 7)], ["257", "256"]),
        QUEUE_FULL: (make_scheduler(tenants=capped), [one, Request(2, "a", 8, 4)], ["queued requests", "cap of 1"]),
        RATE_LIMITED: (make_scheduler(tenants=limited), [one, Request(2, "a", 8, 4)], ["1.000 s"]),
    }


def test_every_reject_reason_is_reachable_through_submit(make_scheduler):
    cases = _reason_cases(make_scheduler)
    assert set(cases) == set(RejectReason), "a reason without a case"
    for reason, (s, requests, fragments) in cases.items():
        *before, last = requests
        for request in before:
            assert s.submit(request, 0.0) == Admitted(request.id)
        verdict = rejected(s.submit(last, 0.0), reason, *fragments)
        assert verdict.request_id == last.id
        assert s.sequence(last.id) is None
        assert s.counts.rejected == 1
        conserved(s)


# ----- rate limits ----------------------------------------------------------------------------------


def test_rate_limited_on_requests_per_second(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=2, request_burst=3)))
    for i in range(3):  # the bucket starts full
        assert s.submit(Request(i, "a", 8, 4), 1.0) == Admitted(i)
    assert rejected(s.submit(Request(3, "a", 8, 4), 1.0), RATE_LIMITED, "retry").retry_after == 0.5
    assert s.submit(Request("b", "b", 8, 4), 1.0) == Admitted("b")  # other tenants are not limited
    assert rejected(s.submit(Request(3, "a", 8, 4), 1.25), RATE_LIMITED).retry_after == 0.25
    assert s.submit(Request(3, "a", 8, 4), 1.5) == Admitted(3)
    assert rejected(s.submit(Request(4, "a", 8, 4), 1.5), RATE_LIMITED).retry_after == 0.5
    for i, t in enumerate((2.0, 2.5, 3.0), start=4):  # a steady 2/s passes
        assert s.submit(Request(i, "a", 8, 4), t) == Admitted(i)
    conserved(s)


@pytest.mark.parametrize("rate,burst,admitted_at_once", [(0.5, None, 1), (3, None, 3), (2, 5, 5)])
def test_request_burst_defaults_to_one_seconds_worth_and_at_least_one(make_scheduler, rate, burst, admitted_at_once):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=rate, request_burst=burst)))
    for i in range(admitted_at_once):
        assert s.submit(Request(i, "a", 8, 4), 0.0) == Admitted(i)
    assert rejected(s.submit(Request("x", "a", 8, 4), 0.0), RATE_LIMITED).retry_after == 1 / rate


def test_rate_limited_on_tokens_per_second_costs_prompt_plus_max_new(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(tokens_per_s=64, token_burst=128)))
    assert s.submit(Request(1, "a", 60, 4), 0.0) == Admitted(1)
    assert s.submit(Request(2, "a", 4, 60), 0.0) == Admitted(2)  # max_new_tokens counts as much as the prompt
    assert rejected(s.submit(Request(3, "a", 1, 15), 0.0), RATE_LIMITED).retry_after == 0.25  # 16 tokens at 64/s
    assert rejected(s.submit(Request(3, "a", 1, 15), 0.125), RATE_LIMITED).retry_after == 0.125
    assert rejected(s.submit(Request(3, "a", 8, 9), 0.25), RATE_LIMITED).retry_after == 1 / 64  # 17 > 16
    assert s.submit(Request(3, "a", 1, 15), 0.25) == Admitted(3)
    conserved(s)


def test_token_burst_defaults_to_one_seconds_worth(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(tokens_per_s=64)))
    assert s.submit(Request(1, "a", 32, 32), 0.0) == Admitted(1)
    assert rejected(s.submit(Request(2, "a", 1, 1), 0.0), RATE_LIMITED).retry_after == 2 / 64


def test_retry_after_is_none_when_the_cost_exceeds_the_burst(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(tokens_per_s=64, token_burst=128)))
    verdict = rejected(s.submit(Request(1, "a", 100, 29), 0.0), RATE_LIMITED, "129", "128")
    assert verdict.retry_after is None
    assert rejected(s.submit(Request(1, "a", 100, 29), 1e6), RATE_LIMITED).retry_after is None  # ever
    assert s.submit(Request(1, "a", 100, 28), 1e6) == Admitted(1)  # the whole burst, untouched by the refusals


def test_a_request_burst_below_one_refuses_every_request_with_no_retry(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=0.25, request_burst=0.5)))
    for t in (0.0, 10.0, 1000.0):
        assert rejected(s.submit(Request(t, "a", 1, 1), t), RATE_LIMITED).retry_after is None


@pytest.mark.parametrize("kind", ["requests", "tokens"])
@settings(max_examples=150, deadline=None)
@given(
    rate_exp=st.integers(-2, 6),
    burst_extra=st.integers(0, 64),
    arrivals=st.lists(st.tuples(st.integers(0, 64), st.integers(1, 48), st.integers(1, 24)), min_size=1, max_size=30),
)
def test_a_retry_at_retry_after_passes_and_not_a_moment_before(make_scheduler, kind, rate_exp, burst_extra, arrivals):
    """Whenever a request is rate limited with retry_after w at t: at t + w/2 it is refused with
    retry_after w/2, and at t + w it is admitted. (Dyadic rates and times: exact arithmetic.)"""
    rate = 2.0**rate_exp
    if kind == "requests":
        quota = Quota(requests_per_s=rate, request_burst=max(1.0, rate) + burst_extra / 16)
    else:
        quota = Quota(tokens_per_s=rate * 16, token_burst=64 + burst_extra)
    s = make_scheduler(tenants=tenants_with(quota))
    now = 0.0
    for i, (gap, prompt, max_new) in enumerate(arrivals):
        now += gap / 64
        request = Request(i, "a", prompt, max_new)
        verdict = s.submit(request, now)
        if isinstance(verdict, Admitted):
            continue
        rejected(verdict, RATE_LIMITED)
        wait = verdict.retry_after
        if wait is None:
            assert kind == "tokens" and prompt + max_new > quota.token_burst
            continue
        assert wait > 0
        half = rejected(s.submit(request, now + wait / 2), RATE_LIMITED)
        assert half.retry_after == wait / 2
        now += wait
        assert s.submit(request, now) == Admitted(i)
    conserved(s)


def test_retry_after_covers_both_buckets(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=8, request_burst=1, tokens_per_s=64, token_burst=64)))
    assert s.submit(Request(1, "a", 32, 32), 0.0) == Admitted(1)  # empties both buckets
    verdict = rejected(s.submit(Request(2, "a", 32, 32), 0.0), RATE_LIMITED)
    assert verdict.retry_after == 1.0  # tokens: 64 at 64/s; requests alone would say 1/8
    assert s.submit(Request(2, "a", 32, 32), verdict.retry_after) == Admitted(2)


def test_retry_after_is_none_when_any_bucket_can_never_hold_the_cost(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=8, request_burst=1, tokens_per_s=64, token_burst=64)))
    assert s.submit(Request(1, "a", 4, 4), 0.0) == Admitted(1)
    assert rejected(s.submit(Request(2, "a", 60, 20), 0.0), RATE_LIMITED).retry_after is None


def test_a_retry_at_retry_after_passes_with_inexact_rates(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=0.3, request_burst=1)))
    assert s.submit(Request(1, "a", 4, 4), 0.7) == Admitted(1)
    verdict = rejected(s.submit(Request(2, "a", 4, 4), 0.7), RATE_LIMITED)
    assert s.submit(Request(2, "a", 4, 4), 0.7 + verdict.retry_after) == Admitted(2)


@pytest.mark.parametrize("quota,second,named", [
    (Quota(requests_per_s=1), Request(2, "a", 4, 4), "requests"),
    (Quota(tokens_per_s=16), Request(2, "a", 4, 8), "tokens"),
    (Quota(tokens_per_s=16), Request(2, "a", 40, 4), "tokens"),  # can never fit
])
def test_rate_limited_detail_names_the_bucket(make_scheduler, quota, second, named):
    s = make_scheduler(tenants=tenants_with(quota))
    assert s.submit(Request(1, "a", 4, 4), 0.0) == Admitted(1)
    rejected(s.submit(second, 0.0), RATE_LIMITED, named)


# ----- queue caps -----------------------------------------------------------------------------------


def test_tenant_max_queued_counts_waiting_requests_only(make_scheduler, step):
    s = make_scheduler(tenants=tenants_with(Quota(max_queued=2)))
    assert s.submit(Request(1, "a", 8, 4), 0.0) == Admitted(1)
    assert s.submit(Request(2, "a", 8, 4), 0.0) == Admitted(2)
    rejected(s.submit(Request(3, "a", 8, 4), 0.0), QUEUE_FULL, "the tenant's queued requests would be 3",
             "cap of 2")
    assert s.submit(Request(3, "b", 8, 4), 0.0) == Admitted(3)  # b's queue is its own
    step(s, 0, 1.0)  # both of a's start running
    assert s.ledger.queued[0] == 0
    assert s.submit(Request(4, "a", 8, 4), 1.0) == Admitted(4)
    assert s.submit(Request(5, "a", 8, 4), 1.0) == Admitted(5)
    rejected(s.submit(Request(6, "a", 8, 4), 1.0), QUEUE_FULL)
    assert s.cancel(5, 1.0)  # cancelling makes room
    assert s.submit(Request(6, "a", 8, 4), 1.0) == Admitted(6)
    conserved(s)


def test_tenant_max_queued_tokens_counts_prompt_tokens(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(max_queued_tokens=20)))
    assert s.submit(Request(1, "a", 8, 100), 0.0) == Admitted(1)  # max_new_tokens is not counted
    assert s.submit(Request(2, "a", 8, 4), 0.0) == Admitted(2)
    rejected(s.submit(Request(3, "a", 8, 4), 0.0), QUEUE_FULL, "the tenant's queued prompt tokens would be 24",
             "cap of 20")
    assert s.submit(Request(3, "a", 4, 4), 0.0) == Admitted(3)  # exactly at the cap
    rejected(s.submit(Request(4, "a", 1, 1), 0.0), QUEUE_FULL, "21")
    assert s.submit(Request(4, "b", 64, 4), 0.0) == Admitted(4)


def test_pool_max_queued_counts_every_tenant(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota()), max_queued=3)
    for rid, tenant in ((1, "a"), (2, "b"), (3, "a")):
        assert s.submit(Request(rid, tenant, 8, 4), 0.0) == Admitted(rid)
    verdict = rejected(s.submit(Request(4, "b", 8, 4), 0.0), QUEUE_FULL, "the pool's queue is full", "queued requests")
    assert not any(c.isdigit() for c in verdict.detail)  # b is not told what the others have queued


def test_pool_max_queued_tokens_counts_every_tenant(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota()), max_queued_tokens=24)
    for rid, tenant in ((1, "a"), (2, "b"), (3, "b")):
        assert s.submit(Request(rid, tenant, 8, 4), 0.0) == Admitted(rid)
    verdict = rejected(s.submit(Request(4, "a", 1, 4), 0.0), QUEUE_FULL, "the pool's queue is full",
                       "queued prompt tokens")
    assert not any(c.isdigit() for c in verdict.detail)


def test_the_tenants_cap_is_named_before_the_pools(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(max_queued=1)), max_queued=1)
    assert s.submit(Request(1, "a", 8, 4), 0.0) == Admitted(1)
    rejected(s.submit(Request(2, "a", 8, 4), 0.0), QUEUE_FULL, "the tenant's queued requests")
    rejected(s.submit(Request(2, "b", 8, 4), 0.0), QUEUE_FULL, "the pool's queue is full")


# ----- refusals never draw from a bucket ------------------------------------------------------------


def test_a_queue_full_refusal_does_not_draw_from_the_bucket(make_scheduler, step):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=0.25, request_burst=2, max_queued=1)))
    assert s.submit(Request(1, "a", 8, 4), 0.0) == Admitted(1)
    for _ in range(3):
        rejected(s.submit(Request(2, "a", 8, 4), 0.0), QUEUE_FULL)
    step(s, 0, 0.0)  # 1 starts running: the queue has room again
    assert s.submit(Request(2, "a", 8, 4), 0.0) == Admitted(2)  # the second token of the burst
    step(s, 0, 0.0)
    rejected(s.submit(Request(3, "a", 8, 4), 0.0), RATE_LIMITED)


def test_a_refusal_by_the_token_bucket_does_not_draw_from_the_request_bucket(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=0.25, request_burst=2, tokens_per_s=64,
                                                  token_burst=100)))
    assert s.submit(Request(1, "a", 40, 40), 0.0) == Admitted(1)  # requests 1 left, tokens 20
    for _ in range(3):
        rejected(s.submit(Request(2, "a", 40, 40), 0.0), RATE_LIMITED)
    assert s.submit(Request(2, "a", 10, 10), 0.0) == Admitted(2)  # both buckets still hold what 1 left
    assert rejected(s.submit(Request(3, "a", 1, 1), 0.0), RATE_LIMITED).retry_after == 4.0  # now requests are out


def test_structural_refusals_do_not_draw_from_the_buckets(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=0.25, request_burst=1, tokens_per_s=64,
                                                  token_burst=64)))
    assert s.submit(Request("live", "b", 8, 4), 0.0) == Admitted("live")
    refusals = [
        (Request(1, "a", 0, 4), RejectReason.INVALID_REQUEST),
        (Request(1, "a", 8, 4, priority="high"), RejectReason.INVALID_REQUEST),
        (Request("live", "a", 8, 4), RejectReason.INVALID_REQUEST),  # duplicate id
        (Request(1, "a", 250, 10), RejectReason.PROMPT_TOO_LONG),
    ]
    for request, reason in refusals:
        rejected(s.submit(request, 0.0), reason)
    assert s.submit(Request(1, "a", 32, 32), 0.0) == Admitted(1)  # the whole of both bursts


def _junk(i: int, kind: int) -> Request:
    return [Request(("junk", i), "zed", 8, 4), Request(("junk", i), "a", -1, 4),
            Request(("junk", i), "a", 8, 0), Request(("junk", i), "a", 300, 4)][kind]


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 16), st.integers(1, 48), st.integers(1, 16), st.none() | st.integers(0, 3)),
                    max_size=40))
def test_structural_refusals_change_no_later_verdict(make_scheduler, ops):
    """Interleaving requests that are refused before the quotas changes no verdict of the others."""
    quota = Quota(requests_per_s=2, request_burst=3, tokens_per_s=64, token_burst=96, max_queued=5, max_queued_tokens=80)
    with_junk = make_scheduler(tenants=tenants_with(quota))
    without = make_scheduler(tenants=tenants_with(quota))
    now = 0.0
    for i, (gap, prompt, max_new, junk) in enumerate(ops):
        now += gap / 16
        if junk is not None:
            assert isinstance(with_junk.submit(_junk(i, junk), now), Rejected)
            continue
        request = Request(i, "a", prompt, max_new)
        assert with_junk.submit(request, now) == without.submit(request, now)
    assert with_junk.ledger.queued == without.ledger.queued


# ----- requeues are never refused -------------------------------------------------------------------


STRICT = Quota(requests_per_s=1 / 1024, request_burst=3, tokens_per_s=1 / 1024, token_burst=40, max_queued=1,
               max_queued_tokens=8)


def fill_up(s, step, prompt, max_new):
    """Under STRICT: requests 1 and 2 run on worker 0, 3 waits; the tenant's queue caps are reached
    (so is a pool cap of one queued request) and its burst of 3 requests is spent."""
    for rid in (1, 2):
        assert s.submit(Request(rid, "a", prompt, max_new), 0.0) == Admitted(rid)
        step(s, 0, 0.0)
    assert s.submit(Request(3, "a", prompt, max_new), 0.0) == Admitted(3)
    rejected(s.submit(Request(4, "a", prompt, max_new), 0.0), QUEUE_FULL)


def test_requests_requeued_by_a_removed_worker_are_never_refused(make_scheduler, step, drive):
    s = make_scheduler(tenants=tenants_with(STRICT), workers=(64, 64), max_queued=1, debug_checks=False)
    fill_up(s, step, 8, 4)
    moved = s.remove_worker(0, 1.0).requeued
    assert sorted(moved) == [1, 2]
    assert s.ledger.queued[0] == 3 and s.ledger.queued_tokens[0] == 24  # over every cap, and that is fine
    assert all(s.sequence(rid).state is RequestState.QUEUED for rid in (1, 2, 3))
    assert s.counts.rejected == 1
    outputs, _ = drive.drain(s, 1.0)
    assert sorted(drive.finished(outputs)) == [1, 2, 3]
    conserved(s)


def test_requests_preempted_for_kv_are_never_refused(make_scheduler, step, drive):
    # 4 blocks of 4 tokens: two 4-token prompts decoding to 12 tokens cannot both stay.
    s = make_scheduler(tenants=tenants_with(STRICT), workers=(4,), max_queued=1, debug_checks=False)
    fill_up(s, step, 4, 8)
    assert len(s.workers[0].running) == 2
    now = 0.0
    while not s.counts.preemptions:
        now += 1.0
        step(s, 0, now)
    assert s.ledger.queued[0] == 2  # the victim waits beside 3, over the cap of 1
    assert s.counts.rejected == 1
    outputs, _ = drive.drain(s, now)
    assert sorted(drive.finished(outputs)) == [1, 2, 3]
    conserved(s)


# ----- counting -------------------------------------------------------------------------------------


def test_rejections_are_counted_per_tenant_and_reason_and_never_become_live(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=1, request_burst=2), Quota(max_queued=1)))
    verdicts = [
        s.submit(Request(1, "a", 8, 4), 0.0),  # admitted
        s.submit(Request(2, "a", 8, 4), 0.0),  # admitted
        s.submit(Request(3, "a", 8, 4), 0.0),  # rate limited
        s.submit(Request(4, "a", 8, 4), 0.5),  # rate limited
        s.submit(Request(5, "a", 0, 4), 0.5),  # invalid
        s.submit(Request(6, "b", 8, 4), 0.5),  # admitted
        s.submit(Request(7, "b", 8, 4), 0.5),  # queue full
        s.submit(Request(8, "b", 300, 4), 0.5),  # prompt too long
        s.submit(Request(9, "zed", 8, 4), 0.5),  # unknown tenant: counted, but under no tenant
    ]
    assert [isinstance(v, Admitted) for v in verdicts] == [True, True, False, False, False, True, False, False, False]
    assert [v.reason for v in verdicts if isinstance(v, Rejected)] == [
        RATE_LIMITED, RATE_LIMITED, RejectReason.INVALID_REQUEST, QUEUE_FULL, RejectReason.PROMPT_TOO_LONG,
        RejectReason.UNKNOWN_TENANT]
    assert (s.counts.submitted, s.counts.rejected, len(s.live)) == (9, 6, 3)
    conserved(s)
    for verdict in verdicts:
        if isinstance(verdict, Rejected):
            assert verdict.request_id not in s.live and s.sequence(verdict.request_id) is None
    assert sorted(s.live) == [1, 2, 6]
    assert s.ledger.queued == [2, 1] and s.ledger.queued_tokens == [16, 8]


def test_a_refused_id_can_be_submitted_again(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(requests_per_s=1, request_burst=1)))
    assert s.submit(Request(1, "a", 8, 4), 0.0) == Admitted(1)
    rejected(s.submit(Request(2, "a", 8, 4), 0.0), RATE_LIMITED)
    assert s.submit(Request(2, "a", 8, 4), 1.0) == Admitted(2)
    assert (s.counts.submitted, s.counts.rejected) == (3, 1)
    conserved(s)


# ----- the rate bound -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.05, 50),
    burst=st.floats(1, 20),
    horizon=st.floats(0, 60),
    fractions=st.lists(st.floats(0, 1), max_size=120),
)
def test_admitted_requests_in_any_window_are_at_most_burst_plus_rate_times_length(
        make_scheduler, rate, burst, horizon, fractions):
    s = make_scheduler(tenants=(Tenant("a", quota=Quota(requests_per_s=rate, request_burst=burst)),),
                       debug_checks=False)
    times = sorted(f * horizon for f in fractions)
    admitted = [t for i, t in enumerate(times) if isinstance(s.submit(Request(i, "a", 1, 1), t), Admitted)]
    slack = 1 + 1e-9  # rounding: a bucket may admit a hair before the exact arithmetic would
    assert len(admitted) <= (burst + rate * horizon) * slack
    for i, start in enumerate(admitted):  # every window [start, end] too
        for j in range(i, len(admitted)):
            assert j - i + 1 <= (burst + rate * (admitted[j] - start)) * slack, (i, j, admitted)
    conserved(s)


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(1, 500),
    burst=st.floats(64, 400),
    arrivals=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 32), st.integers(1, 32)), max_size=80),
    horizon=st.floats(0, 20),
)
def test_admitted_tokens_in_any_window_are_at_most_burst_plus_rate_times_length(
        make_scheduler, rate, burst, arrivals, horizon):
    s = make_scheduler(tenants=(Tenant("a", quota=Quota(tokens_per_s=rate, token_burst=burst)),), debug_checks=False)
    admitted = []
    for i, (f, prompt, max_new) in enumerate(sorted(arrivals)):
        t = f * horizon
        if isinstance(s.submit(Request(i, "a", prompt, max_new), t), Admitted):
            admitted.append((t, prompt + max_new))
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            assert total <= burst + rate * (end - start) + 1e-9 * burst, (i, admitted)


# ----- quotas that could never admit a request ------------------------------------------------------


@pytest.mark.parametrize("quota,key,fragment", [
    (Quota(requests_per_s=4, request_burst=0.5), "request_burst", "a bucket of 0.5 requests cannot hold one"),
    (Quota(requests_per_s=0.5), None, None),  # its bucket defaults to 1 request
    (Quota(tokens_per_s=64, token_burst=1), "token_burst", "a bucket of 1 tokens cannot hold the cheapest"),
    (Quota(tokens_per_s=1), "tokens_per_s", "allowed: token_burst >= 2"),  # defaults to 1 token
    (Quota(tokens_per_s=1, token_burst=CHEAPEST_TOKENS), None, None),
    (Quota(max_queued=1), None, None),
])
def test_unadmittable_names_the_key_of_a_bucket_too_small_for_the_cheapest_request(quota, key, fragment):
    problem = unadmittable(quota)
    assert (problem and problem[0]) == key
    if fragment:
        assert fragment in problem[1]


def test_unadmittable_takes_the_cheapest_request_of_the_caller():
    assert unadmittable(Quota(tokens_per_s=8, token_burst=100), cheapest_tokens=101)[0] == "token_burst"
    assert unadmittable(Quota(tokens_per_s=8, token_burst=100), cheapest_tokens=100) is None


def test_a_request_larger_than_its_bucket_is_told_it_can_never_fit(make_scheduler):
    s = make_scheduler(tenants=tenants_with(Quota(tokens_per_s=16, token_burst=32)))
    verdict = rejected(s.submit(Request(1, "a", 30, 4), 0.0), RATE_LIMITED, "can never fit the tenant's bucket of 32")
    assert verdict.retry_after is None
