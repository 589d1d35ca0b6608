"""Fairness properties of the policies, stated with the public testing kit (sim.testing)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scheduler.core import SchedulerConfig
from scheduler.policies import FCFS, Priority
from sim.results import max_service_gap
from sim.testing import (
    EARLY, LATE, backlogged_workloads, check_conservation, check_no_overtaking, check_service_gap,
    check_service_gap_per_worker, check_work_conserving, make_workload, run_policy, tenant_specs,
    tenants_pinned_to, vtc_bound, vtc_pool_bound, workloads,
)
from sim.workload import LengthDist, TenantSpec

KV_TOKENS = 2048
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@EXAMPLES
@given(workload=backlogged_workloads(tenants=tenant_specs(weighted=True)))
def test_vtc_keeps_backlogged_tenants_within_its_bound(workload):
    run = run_policy("vtc", workload, kv_tokens=KV_TOKENS)
    check_conservation(run)
    check_service_gap(run, vtc_bound(workload, KV_TOKENS))


def test_the_service_gap_check_fails_for_fcfs_on_a_skewed_backlog():
    # tenant t0 queues 60 long requests before t1 queues its first: FCFS serves t0 alone for long
    specs = tuple(TenantSpec(f"t{i}", rate=1.0, prompt=LengthDist("fixed", (1,)),
                             output=LengthDist("fixed", (1,))) for i in range(2))
    n0, n1 = 60, 20
    workload = make_workload(specs, [0.0] * (n0 + n1), [0] * n0 + [1] * n1, [500] * (n0 + n1),
                             [64] * (n0 + n1), 64)
    bound = vtc_bound(workload, KV_TOKENS)
    run = run_policy("fcfs", workload, kv_tokens=KV_TOKENS)
    assert max_service_gap(run.data.timeline).gap > bound
    with pytest.raises(AssertionError, match="exceeds the bound"):
        check_service_gap(run, bound)
    check_service_gap(run_policy("vtc", workload, kv_tokens=KV_TOKENS), bound)


POOL_EXAMPLES = settings(EXAMPLES, max_examples=600)


@pytest.mark.slow
@POOL_EXAMPLES
@given(workload=backlogged_workloads(tenants=tenant_specs(weighted=True), per_tenant=30), workers=st.integers(2, 3))
def test_vtc_keeps_backlogged_tenants_within_its_pool_bound_under_late_binding(workload, workers):
    run = run_policy("vtc", workload, workers=workers, kv_tokens=KV_TOKENS, placement="global")
    check_conservation(run)
    check_service_gap(run, vtc_pool_bound(workload, KV_TOKENS, workers, LATE))


# (workers, tenants): with every request queued at t=0 in turn by tenant, round robin and least
# loaded bind tenant t to worker t % workers, so each worker's queue holds two or three tenants
POOL_SHAPES = st.sampled_from([(2, 4), (3, 6), (2, 6)])


@pytest.mark.slow
@POOL_EXAMPLES
@given(data=st.data(), shape=POOL_SHAPES, placement=st.sampled_from(["least_loaded", "round_robin"]))
def test_vtc_keeps_tenants_of_one_workers_queue_within_its_bound_under_early_binding(data, shape, placement):
    workers, tenants = shape
    specs = tenant_specs(min_size=tenants, max_size=tenants, weighted=True)
    workload = data.draw(backlogged_workloads(tenants=specs, per_tenant=20))
    run = run_policy("vtc", workload, workers=workers, kv_tokens=KV_TOKENS, placement=placement)
    check_conservation(run)
    check_service_gap_per_worker(run, vtc_pool_bound(workload, KV_TOKENS, workers, EARLY))


def _weighted_tenants(weights):
    return tuple(TenantSpec(f"t{i}", weight=w, rate=1.0, prompt=LengthDist("fixed", (1,)),
                            output=LengthDist("fixed", (1,))) for i, w in enumerate(weights))


def test_the_pool_bound_fails_for_fcfs_and_holds_for_vtc_under_late_binding():
    # t0 queues 120 long requests before t1 queues its first: FCFS serves t0 alone on both workers
    n0, n1 = 120, 40
    workload = make_workload(_weighted_tenants((1.0, 1.0)), [0.0] * (n0 + n1), [0] * n0 + [1] * n1,
                             [500] * (n0 + n1), [64] * (n0 + n1), 64)
    bound = vtc_pool_bound(workload, KV_TOKENS, 2, LATE)
    assert bound == 2 * vtc_bound(workload, KV_TOKENS)  # M is both workers' KV
    fcfs = run_policy("fcfs", workload, workers=2, kv_tokens=KV_TOKENS, placement="global")
    with pytest.raises(AssertionError, match="exceeds the bound"):
        check_service_gap(fcfs, bound)
    check_service_gap(run_policy("vtc", workload, workers=2, kv_tokens=KV_TOKENS, placement="global"), bound)


def _pinned_workload(weights, first: int, then: int):
    # round robin binds request i to worker i % 2: t0 and t2 wait on worker 0, t1 and t3 on
    # worker 1; t0 and t1 queue `first` requests each before t2 and t3 queue `then` each
    who = [0, 1] * first + [2, 3] * then
    n = len(who)
    return make_workload(_weighted_tenants(weights), [0.0] * n, who, [500] * n, [64] * n, 64)


def test_the_per_worker_bound_fails_for_fcfs_and_holds_for_vtc_under_early_binding():
    workload = _pinned_workload((1.0, 1.0, 1.0, 1.0), first=60, then=20)
    bound = vtc_pool_bound(workload, KV_TOKENS, 2, EARLY)
    fcfs = run_policy("fcfs", workload, workers=2, kv_tokens=KV_TOKENS, placement="round_robin")
    assert tenants_pinned_to(fcfs) == {0: [0, 2], 1: [1, 3]}
    with pytest.raises(AssertionError, match="on worker 0 exceeds the bound"):
        check_service_gap_per_worker(fcfs, bound)
    vtc = run_policy("vtc", workload, workers=2, kv_tokens=KV_TOKENS, placement="round_robin")
    check_service_gap_per_worker(vtc, bound)


def test_early_binding_lifts_a_tenant_to_the_counters_of_its_own_workers_queue():
    # t0 (weight 1) on worker 0 and t1 (weight 4) on worker 1 are served alone for 4 s, so t1's
    # counter is a quarter of t0's; then t2 joins worker 0's queue (and t3 worker 1's). Lifted
    # to t1's counter instead of t0's, t2 would be owed the difference and starve t0 on worker 0.
    who = [0, 1] * 100 + [2, 3] * 20
    times = [0.0] * 200 + [4.0] * 40
    workload = make_workload(_weighted_tenants((1.0, 4.0, 1.0, 1.0)), times, who, [500] * len(who),
                             [64] * len(who), 64)
    run = run_policy("vtc", workload, workers=2, kv_tokens=KV_TOKENS, placement="round_robin")
    assert tenants_pinned_to(run) == {0: [0, 2], 1: [1, 3]}
    check_service_gap_per_worker(run, vtc_pool_bound(workload, KV_TOKENS, 2, EARLY))


def test_early_binding_bounds_no_gap_between_tenants_of_different_workers():
    # t0 and t2 (weight 1) share worker 0, t1 and t3 (weight 4) worker 1: each worker splits its
    # rate evenly, so t0's normalised service runs four times as fast as t1's however fair VTC is
    workload = _pinned_workload((1.0, 4.0, 1.0, 4.0), first=60, then=60)
    vtc = run_policy("vtc", workload, workers=2, kv_tokens=KV_TOKENS, placement="round_robin")
    check_service_gap_per_worker(vtc, vtc_pool_bound(workload, KV_TOKENS, 2, EARLY))
    with pytest.raises(AssertionError, match="exceeds the bound"):
        check_service_gap(vtc, vtc_pool_bound(workload, KV_TOKENS, 2, LATE))


@pytest.mark.slow
@EXAMPLES
@given(workload=workloads(), policy=st.sampled_from(["fcfs", "priority", "vtc", "lcf", "drr", "edf", "slo"]),
       workers=st.integers(1, 3))
def test_every_policy_conserves_requests_and_work(workload, policy, workers):
    run = run_policy(policy, workload, workers=workers, kv_tokens=KV_TOKENS)
    check_conservation(run)
    check_work_conserving(run)


@pytest.mark.slow
@EXAMPLES
@given(workload=workloads(tenants=tenant_specs(priorities=True), max_requests=40),
       aging=st.sampled_from([0.5, 2.0, 10.0]))
def test_priority_with_aging_admits_within_its_starvation_bound(workload, aging):
    priorities = np.array([spec.priority for spec in workload.tenants])
    low = priorities.min()
    slack = lambda i: (priorities[workload.tenant[i]] - low) / aging  # noqa: E731
    run = run_policy(Priority(aging=aging), workload, kv_tokens=KV_TOKENS)
    check_conservation(run)
    check_no_overtaking(run, slack)


def test_without_aging_a_low_priority_request_is_overtaken_indefinitely():
    specs = (TenantSpec("urgent", priority=0, rate=1.0, prompt=LengthDist("fixed", (1,)),
                        output=LengthDist("fixed", (1,))),
             TenantSpec("batch", priority=3, rate=1.0, prompt=LengthDist("fixed", (1,)),
                        output=LengthDist("fixed", (1,))))
    # the pool fills with urgent requests before the batch request arrives, and they keep coming
    times = [0.0] * 8 + [0.001] + [0.01 * k for k in range(1, 192)]
    who = [0] * 8 + [1] + [0] * 191
    workload = make_workload(specs, times, who, [400] * 200, [60] * 200, 60)
    run = run_policy(Priority(aging=0.0), workload, kv_tokens=KV_TOKENS)
    with pytest.raises(AssertionError, match="overtaken"):
        check_no_overtaking(run, lambda i: 1.0)
    check_no_overtaking(run_policy(Priority(aging=3.0), workload, kv_tokens=KV_TOKENS), lambda i: 1.0)


def test_a_users_policy_class_runs_and_is_checked():
    class ShortestPromptFirst(FCFS):
        name = "spf"

        def new_queue(self):
            from scheduler.policies import KeyedQueue
            return KeyedQueue(lambda seq: seq.request.prompt_tokens)

    specs = tuple(TenantSpec(f"t{i}", rate=1.0, prompt=LengthDist("fixed", (1,)),
                             output=LengthDist("fixed", (1,))) for i in range(2))
    # one slot free behind a long first request, so the three that queue behind it go one by one
    workload = make_workload(specs, [0.0, 0.001, 0.001, 0.001], [0, 0, 1, 0], [100, 900, 50, 400],
                             [50, 5, 5, 5], 50)
    config = SchedulerConfig(max_num_batched_tokens=1024, max_num_seqs=2)
    run = run_policy(ShortestPromptFirst(), workload, kv_tokens=KV_TOKENS, scheduler=config)
    check_conservation(run)
    check_work_conserving(run)
    admits = run.data.records["admit"]
    assert admits[2] < admits[3] < admits[1]


@pytest.mark.slow
@EXAMPLES
@given(workload=backlogged_workloads(tenants=tenant_specs(weighted=True)))
def test_vtc_keeps_its_bound_with_the_slot_and_kv_headroom(workload):
    # The headroom is held for arrivals: among tenants that are all backlogged, the policy's order
    # (not a count of slots) decides who takes the last ones, so the bound is VTC's own.
    config = SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=16, slot_headroom=4, kv_headroom=0.1)
    run = run_policy("vtc", workload, kv_tokens=KV_TOKENS, scheduler=config)
    check_conservation(run)
    check_service_gap(run, vtc_bound(workload, KV_TOKENS))


def test_the_headroom_leaves_backlogged_tenants_to_the_policys_order():
    # Many long decodes against few long prompts: the short-prompt tenant holds most slots (it is
    # full) while its counter is the lower one. Were the headroom held back from it, the other
    # would take the last slots whatever the counters say, and the gap would grow several-fold.
    specs = (TenantSpec("decodes", rate=1.0), TenantSpec("prompts", rate=1.0))
    who = [i % 2 for i in range(200)]
    workload = make_workload(specs, [0.0] * 200, who, [8 if w == 0 else 400 for w in who],
                             [200 if w == 0 else 4 for w in who], 200)
    gaps = {}
    for headroom in (0, 4):
        config = SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=16, slot_headroom=headroom, kv_headroom=0.0)
        gaps[headroom] = max_service_gap(run_policy("vtc", workload, scheduler=config).data.timeline).gap
    assert gaps[4] <= 1.05 * gaps[0], gaps
