"""Fairness properties of the policies, stated with the public testing kit (sim.testing)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scheduler.core import SchedulerConfig
from scheduler.policies import FCFS, Priority
from sim.results import max_service_gap
from sim.testing import (
    backlogged_workloads, check_conservation, check_no_overtaking, check_service_gap,
    check_work_conserving, make_workload, run_policy, tenant_specs, vtc_bound, workloads,
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
