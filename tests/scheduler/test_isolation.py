"""Tests of isolation inside the step (scheduler.isolation, and its rules in planner and core):
max-min shares, who is over share, fair prefill order, the latency budget, slot and KV headroom,
share preemption, work conservation up to the headroom, and the bad settings."""

import math

import pytest
from hypothesis import given, settings, strategies as st
from mirrored import complete_full, plan_full

from scheduler.core import Scheduler, SchedulerConfig
from scheduler.errors import ConfigError
from scheduler.events import StepResult
from scheduler.isolation import Capacity, Holdings, Standing, max_min_shares
from scheduler.request import Request, Tenant

TWO = (Tenant("quiet"), Tenant("flood"))
ISOLATED = dict(max_num_batched_tokens=64, max_num_seqs=8, slot_headroom=2, kv_headroom=0.0,
                latency_budget_tokens=0, block_size=4)


def scheduler(policy="vtc", tenants=TWO, blocks=4096, **config) -> Scheduler:
    s = Scheduler(tenants, policy, "global", SchedulerConfig(**(ISOLATED | dict(debug_checks=True, kv_watermark=0.0)
                                                                | config)))
    s.add_worker(0, blocks, 0.0)
    return s


def submit(s, rid, tenant, prompt, now=0.0, max_new=50):
    s.submit(Request(rid, tenant, prompt, max_new), now)


def step(s, now, worker=0):
    plan = plan_full(s, worker, now)
    if plan:
        complete_full(s, worker, StepResult(1, frozenset()), now)
    return plan


def chunks(plan):
    return [(item.request_id, item.num_tokens) for item in plan.items]


# ----- max-min shares -----------------------------------------------------------------------------


def test_shares_meet_small_demands_and_split_the_rest_by_weight():
    shares = max_min_shares(100, {0: 10, 1: 1000, 2: 1000}, (1.0, 1.0, 3.0))
    assert shares == {0: 10, 1: 22.5, 2: 67.5}


def test_shares_are_the_demands_when_they_fit():
    assert max_min_shares(100, {0: 10, 1: 20}, (1.0, 1.0)) == {0: 10, 1: 20}


@given(capacity=st.integers(1, 1000), demands=st.lists(st.integers(0, 500), min_size=1, max_size=6),
       weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=6, max_size=6))
def test_shares_are_max_min_fair(capacity, demands, weights):
    demand = dict(enumerate(demands))
    shares = max_min_shares(capacity, demand, weights)
    assert sum(shares.values()) <= capacity + 1e-6
    for t, share in shares.items():
        assert share <= demand[t] + 1e-9
    if sum(demands) > capacity:  # all of it is shared, and no capped tenant gets less per weight
        assert sum(shares.values()) == pytest.approx(capacity)
        capped = [t for t in shares if shares[t] < demand[t] - 1e-9]
        for t in capped:
            for u in shares:
                assert shares[t] / weights[t] >= shares[u] / weights[u] - 1e-9


# ----- standing -----------------------------------------------------------------------------------


def standing(seqs, kv=None, step=None, queued=None, queued_tokens=None, capacity=(10, 1000, 100)):
    held = Holdings(seqs, kv or {t: 0 for t in seqs}, step or {}, queued or {}, queued_tokens or {})
    return Standing(held, Capacity(*capacity), (1.0, 1.0, 1.0))


def test_a_tenant_alone_is_never_over_share_but_is_full_at_the_capacity():
    alone = standing({1: 10}, step={1: 100}, queued={1: 50})
    assert alone.over == set()
    assert alone.full == {1}


def test_the_tenant_taking_the_step_is_over_share_and_the_one_holding_the_slots_full():
    s = standing({0: 1, 1: 9}, step={0: 10, 1: 90}, queued={0: 1, 1: 50})
    assert s.over == {1}
    assert s.full == {1}


def test_over_share_asks_for_a_queue():
    # the most of the step, but nothing more queued: one long prompt of a quiet tenant, not a flood
    s = standing({0: 1, 1: 2}, step={0: 80, 1: 20}, queued={1: 5}, queued_tokens={1: 500})
    assert s.over == set()
    flood = standing({0: 1, 1: 2}, step={0: 20, 1: 80}, queued={1: 5}, queued_tokens={1: 500})
    assert flood.over == {1}


def test_holding_many_slots_is_full_but_not_over_share():
    # a quiet tenant's requests pile up while a flood makes every step slow
    s = standing({0: 8, 1: 2}, step={0: 8, 1: 90}, queued={0: 1, 1: 50})
    assert s.over == {1}
    assert 0 in s.full


def test_admissions_keep_the_standing_current():
    s = standing({0: 0, 1: 5}, queued={0: 1, 1: 50})
    assert 1 not in s.full
    for _ in range(4):
        s.admitted(1, 10)
    assert 1 in s.full


def test_the_headroom_is_held_for_arrivals_not_for_backlogged_tenants():
    s = standing({0: 1, 1: 9}, queued={1: 50})
    assert 1 in s.full and s.holds_headroom(2)  # only the full tenant waits: the last slots stay for arrivals
    arriving = standing({0: 1, 1: 9}, queued={0: 2, 1: 50})
    assert arriving.holds_headroom(2)  # tenant 0's two requests are what the headroom is for
    backlogged = standing({0: 1, 1: 9}, queued={0: 3, 1: 50})
    assert 0 not in backlogged.full and not backlogged.holds_headroom(2)  # the policy orders it with the flood
    backlogged.admitted(0, 10)
    assert backlogged.holds_headroom(2)  # two left: arriving again


# ----- the step -----------------------------------------------------------------------------------


def flood_then_quiet(s, flood_prompt=40, floods=8):
    for i in range(floods):
        submit(s, f"f{i}", "flood", flood_prompt)
    return s


def test_the_headroom_keeps_slots_for_an_under_share_arrival():
    s = flood_then_quiet(scheduler(), floods=20)
    for t in range(6):
        step(s, float(t))
    assert s.num_running_on(0) == 8 - 2  # the flood stops at the headroom
    submit(s, "q", "quiet", 8, now=6.0)
    plan = step(s, 6.0)
    assert "q" in plan.admitted  # no wait for a slot


def test_without_isolation_the_flood_takes_every_slot():
    s = flood_then_quiet(scheduler(isolation=False), floods=20)
    for t in range(6):
        step(s, float(t))
    assert s.num_running_on(0) == 8
    submit(s, "q", "quiet", 8, now=6.0)
    assert "q" not in step(s, 6.0).admitted


def test_fcfs_does_not_isolate():
    s = flood_then_quiet(scheduler("fcfs"), floods=20)
    for t in range(6):
        step(s, float(t))
    assert s.num_running_on(0) == 8


def test_an_under_share_prefill_goes_first_and_the_over_share_one_gets_what_is_left():
    s = scheduler(max_num_seqs=4, slot_headroom=0)
    submit(s, "f0", "flood", 200)
    submit(s, "f1", "flood", 200)
    step(s, 0.0)  # f0 takes the whole step
    submit(s, "q", "quiet", 20, now=1.0)
    plan = step(s, 1.0)
    assert chunks(plan)[0] == ("q", 20)
    assert sum(n for _, n in chunks(plan)) == 64


def test_without_fair_prefill_the_running_prefill_goes_first():
    s = scheduler(max_num_seqs=4, slot_headroom=0, fair_prefill=False)
    submit(s, "f0", "flood", 200)
    submit(s, "f1", "flood", 200)
    step(s, 0.0)
    submit(s, "q", "quiet", 20, now=1.0)
    assert chunks(step(s, 1.0))[0] == ("f0", 64)


def test_the_over_share_cap_bounds_the_flood_prefill_per_step():
    s = scheduler(max_num_seqs=4, slot_headroom=0, over_share_prefill_tokens=16)
    submit(s, "f0", "flood", 200)
    submit(s, "f1", "flood", 200)
    step(s, 0.0)
    submit(s, "q", "quiet", 40, now=1.0)
    plan = step(s, 1.0)
    assert dict(chunks(plan)) == {"q": 40, "f0": 16}


def test_the_latency_budget_shrinks_the_step_while_a_first_token_waits():
    s = scheduler(max_num_seqs=4, slot_headroom=0, latency_budget_tokens=32)
    submit(s, "f0", "flood", 400)
    submit(s, "f1", "flood", 400)
    step(s, 0.0)
    submit(s, "q", "quiet", 20, now=1.0)
    plan = step(s, 1.0)
    assert dict(chunks(plan)) == {"q": 20, "f0": 12}  # the flood fills the step to 32 tokens
    assert chunks(step(s, 2.0)) == [("q", 1), ("f0", 63)]  # q decodes: its first token came


def test_per_tenant_latency_budgets_override_the_config():
    config = SchedulerConfig(**(ISOLATED | dict(max_num_seqs=4, slot_headroom=0, latency_budget_tokens=32)))
    s = Scheduler(TWO, "vtc", "global", config, latency_budgets=(24, 0))
    s.add_worker(0, 4096, 0.0)
    submit(s, "f0", "flood", 400)
    submit(s, "f1", "flood", 400)
    step(s, 0.0)
    submit(s, "q", "quiet", 20, now=1.0)
    assert dict(chunks(step(s, 1.0))) == {"q": 20, "f0": 4}


def test_the_kv_headroom_keeps_blocks_from_a_full_tenant():
    # 100 blocks of 4 tokens, 10% headroom: the flood stops 10 blocks short of full
    s = scheduler(blocks=100, kv_headroom=0.1, max_num_seqs=8, slot_headroom=0)
    for i in range(8):
        submit(s, f"f{i}", "flood", 60, max_new=4)
    for t in range(8):
        step(s, float(t))
    kv = s.kv_usage(0)
    assert kv.total - kv.used >= 10
    submit(s, "q", "quiet", 30, now=9.0, max_new=4)
    assert "q" in step(s, 9.0).admitted


def test_share_preemption_frees_a_slot_for_an_under_share_request_that_waited():
    s = scheduler(max_num_seqs=4, slot_headroom=0, share_preempt_after_s=0.5)
    for i in range(6):
        submit(s, f"f{i}", "flood", 8)
    for t in range(4):
        step(s, 0.1 * t)
    assert s.num_running_on(0) == 4
    submit(s, "q", "quiet", 8, now=1.0)
    assert "q" not in step(s, 1.2).admitted  # waited 0.2 s: no preemption yet
    plan = plan_full(s, 0, 1.6)
    assert plan.preempted and "q" in plan.admitted
    assert all(s.request_status(rid).tenant == 1 for rid in plan.preempted)


# ----- work conservation up to the headroom ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 60), st.integers(1, 12)), min_size=1, max_size=40),
       headroom=st.integers(0, 3), policy=st.sampled_from(["vtc", "drr", "lcf"]))
def test_no_more_than_the_headroom_stays_free_while_a_request_that_fits_waits(arrivals, headroom, policy):
    tenants = (Tenant("a"), Tenant("b"), Tenant("c", weight=2.0))
    s = scheduler(policy, tenants, 400, max_num_seqs=6, slot_headroom=headroom)
    for i, (tenant, prompt, max_new) in enumerate(arrivals):
        submit(s, i, "abc"[tenant], prompt, max_new=max_new)
    now = 0.0
    while s.num_live:
        plan = plan_full(s, 0, now)
        free = 6 - s.num_running_on(0)
        tokens = sum(item.num_tokens for item in plan.items) + plan.decodes
        queue = s._queue_served_by(s.workers[0])
        head = queue.peek()
        if free > headroom and not plan.preempted and tokens < 64 and head is not None:
            assert not s.workers[0].fits(head), f"{free} slots free while {head} fits and waits"
        complete_full(s, 0, StepResult(1, frozenset()), now)
        now += 1.0


# ----- bad settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    ({"slot_headroom": 4}, r"slot_headroom: must be an integer in \[0, 3\]"),
    ({"slot_headroom": -1}, "slot_headroom"),
    ({"kv_headroom": 0.5}, r"kv_headroom: must be in \[0, 0.5\)"),
    ({"kv_headroom": -0.01}, "kv_headroom"),
    ({"kv_headroom": math.nan}, "kv_headroom"),
    ({"latency_budget_tokens": 17}, r"latency_budget_tokens: must be an integer in \[0, 16\]"),
    ({"latency_budget_tokens": -1}, "latency_budget_tokens"),
    ({"over_share_prefill_tokens": 17}, "over_share_prefill_tokens"),
    ({"share_preempt_after_s": -0.5}, "share_preempt_after_s"),
    ({"share_preempt_after_s": math.inf}, "share_preempt_after_s"),
    ({"isolation": 1}, "isolation: must be true or false"),
])
def test_bad_isolation_settings_are_named_errors(kwargs, message):
    with pytest.raises(ConfigError, match=f"scheduler.{message}"):
        SchedulerConfig(max_num_batched_tokens=16, max_num_seqs=4, **kwargs)


def test_latency_budgets_one_per_tenant_within_the_step():
    config = SchedulerConfig(max_num_batched_tokens=16, max_num_seqs=4)
    with pytest.raises(ConfigError, match="one per tenant"):
        Scheduler(TWO, "vtc", "global", config, latency_budgets=(8,))
    with pytest.raises(ConfigError, match="tenant 'flood'"):
        Scheduler(TWO, "vtc", "global", config, latency_budgets=(8, 20))
