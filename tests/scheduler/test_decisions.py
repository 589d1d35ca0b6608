"""Decision records (scheduler.decisions): opt-in, what the policy saw and chose at each admission,
preemption and blocked head; the scheduling itself unchanged by recording."""

from __future__ import annotations

import pytest
from scheduler.core import Scheduler, SchedulerConfig
from scheduler.decisions import ADMIT, BLOCKED, PREEMPT
from scheduler.events import StepResult
from scheduler.request import Request, Tenant

TENANTS = (Tenant("a"), Tenant("b"), Tenant("c", weight=2.0))
SMALL_CONFIG = dict(max_num_batched_tokens=16, max_num_seqs=4, block_size=4, kv_watermark=0.0, debug_checks=True)


def recording(policy="fcfs", workers=(64,), record=True, **config) -> Scheduler:
    scheduler = Scheduler(TENANTS, policy, "global", SchedulerConfig(**(SMALL_CONFIG | config)),
                          record_decisions=record)
    for worker_id, blocks in enumerate(workers):
        scheduler.add_worker(worker_id, blocks, 0.0)
    return scheduler


def build_request(rid, tenant="a", prompt=8, max_new=4) -> Request:
    return Request(rid, tenant, prompt, max_new)


def step(scheduler, worker, now):
    plan = scheduler.plan(worker, now)
    if plan:
        scheduler.complete(worker, StepResult(1, frozenset()), now)
    return plan


def test_no_records_unless_asked_for():
    scheduler = recording("vtc", record=False)
    scheduler.submit(build_request(1), 0.0)
    step(scheduler, 0, 0.0)
    assert scheduler.drain_decisions() == []


def test_an_admission_records_each_tenants_first_request_with_its_vtc_counter():
    scheduler = recording("vtc", max_num_seqs=1)
    for rid, tenant in ((1, "a"), (2, "a"), (3, "b")):
        scheduler.submit(build_request(rid, tenant), 0.0)
    step(scheduler, 0, 0.0)
    [admit] = scheduler.drain_decisions()
    assert (admit.kind, admit.time, admit.worker, admit.chosen.request_id) == (ADMIT, 0.0, 0, 1)
    assert [(c.request_id, c.tenant) for c in admit.candidates] == [(1, 0), (3, 1)]  # request 2 is a's second
    assert dict(admit.chosen.keys)["counter"] == 0.0 and admit.queued == (2, 1, 0)
    assert scheduler.drain_decisions() == []  # drained


@pytest.mark.parametrize("policy,key", [("fcfs", "submitted"), ("priority", "priority"), ("edf", "deadline_s"),
                                        ("slo", "slack_s"), ("drr", "deficit"), ("dlpm", "counter")])
def test_every_policy_names_the_keys_it_orders_by(policy, key):
    scheduler = recording(policy)
    scheduler.submit(build_request(1), 0.0)
    step(scheduler, 0, 0.0)
    [admit] = scheduler.drain_decisions()
    assert key in dict(admit.chosen.keys)


def test_a_fcfs_queue_finds_every_tenants_first_request_deep_in_the_queue():
    scheduler = recording("fcfs", max_num_seqs=1)
    for rid in range(50):
        scheduler.submit(build_request(rid, "a"), 0.0)
    scheduler.submit(build_request(50, "b"), 0.0)
    step(scheduler, 0, 0.0)
    [admit] = scheduler.drain_decisions()
    assert [c.request_id for c in admit.candidates] == [0, 50]


def test_a_preemption_records_the_victim_and_each_tenants_candidate():
    # 8 blocks of 4 tokens: two 12-token prompts fill them; decoding needs a block neither has
    scheduler = recording("fcfs", workers=(8,))
    scheduler.submit(build_request(1, "a", prompt=12, max_new=8), 0.0)
    scheduler.submit(build_request(2, "b", prompt=12, max_new=8), 0.0)
    records = []
    for now in range(1, 20):
        step(scheduler, 0, float(now))
        records += scheduler.drain_decisions()
    [preempt, *_] = [d for d in records if d.kind == PREEMPT]
    assert preempt.chosen.request_id == 2 and preempt.cause == "step"  # fcfs: the latest submitted
    assert [c.request_id for c in preempt.candidates] == [1, 2]


def test_a_blocked_head_records_which_request_would_have_fitted_behind_it():
    scheduler = recording("fcfs", workers=(8,))
    scheduler.submit(build_request(1, "a", prompt=20, max_new=4), 0.0)  # 6 of the 8 blocks
    step(scheduler, 0, 0.0)
    scheduler.submit(build_request(2, "a", prompt=20, max_new=4), 0.1)  # the head: does not fit
    scheduler.submit(build_request(3, "b", prompt=4, max_new=2), 0.1)  # would fit
    step(scheduler, 0, 0.2)
    step(scheduler, 0, 0.3)
    blocked = [d for d in scheduler.drain_decisions() if d.kind == BLOCKED]
    assert len(blocked) == 1  # once while the same head stays blocked
    assert blocked[0].chosen.request_id == 2
    assert [(c.request_id, c.fits) for c in blocked[0].candidates] == [(2, False), (3, True)]


def test_recording_changes_no_plan():
    def plans(record):
        scheduler = Scheduler(TENANTS, "vtc", "global",
                              SchedulerConfig(max_num_batched_tokens=16, max_num_seqs=3, block_size=4,
                                              kv_watermark=0.0), record_decisions=record)
        scheduler.add_worker(0, 12, 0.0)
        for rid in range(12):
            scheduler.submit(build_request(rid, "abc"[rid % 3], prompt=4 + rid, max_new=6), 0.0)
        return [step(scheduler, 0, float(t)) for t in range(60)]

    assert plans(True) == plans(False)
