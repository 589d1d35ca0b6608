"""Tests of scheduler.core.Scheduler: verdicts, step formation, finishing, preemption, cancel,
worker churn, and the contract errors.

Defaults (conftest): 4-token blocks, 16-token steps, 4 sequences per worker, no watermark, one
64-block worker, tenants a, b (weight 1) and c (weight 2), debug_checks on.
"""

import math

import pytest
from mirrored import cancel_full, complete_full, plan_full

from scheduler import invariants
from scheduler.actions import Admitted, Emitted, Finished, Rejected, RejectReason, ScheduledItem, WorkerRemoved
from scheduler.core import SchedulerConfig
from scheduler.errors import ConfigError, ProtocolError, WorkerError
from scheduler.events import StepResult
from scheduler.request import Request, RequestState


def items(plan):
    return [(item.request_id, item.num_tokens, item.context, item.samples) for item in plan.items]


# ----- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"max_num_batched_tokens": 0}, "max_num_batched_tokens"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"block_size": 1.5}, "block_size"),
        ({"max_num_batched_tokens": True}, "max_num_batched_tokens"),
        ({"max_num_batched_tokens": 8, "max_num_seqs": 9}, "max_num_seqs"),
        ({"kv_watermark": 1.0}, "kv_watermark"),
        ({"kv_watermark": -0.1}, "kv_watermark"),
        ({"service_weights": (1.0,)}, "service_weights"),
        ({"service_weights": (1.0, -2.0)}, "service_weights"),
    ],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"scheduler.{key}"):
        SchedulerConfig(**kwargs)


def test_tenant_names_must_be_unique(make_scheduler, tenants):
    with pytest.raises(ConfigError, match="unique"):
        make_scheduler(tenants=(tenants[0], tenants[0]))


def test_add_worker_too_small_or_twice(make_scheduler):
    s = make_scheduler()
    with pytest.raises(ProtocolError, match="worker 0: already in the pool"):
        s.add_worker(0, 64, 1.0)
    with pytest.raises(ConfigError, match="kv_blocks"):
        s.add_worker(1, 0, 1.0)
    with pytest.raises(ConfigError, match="would hold no request"):
        make_scheduler(workers=(), block_size=1, kv_watermark=0.5).add_worker(0, 2, 0.0)


# ----- submit -------------------------------------------------------------------------------------


def test_submit_admits_to_the_queue(make_scheduler, make_request):
    s = make_scheduler()
    assert s.submit(make_request("r"), 2.5) == Admitted("r")
    seq = s.sequence("r")
    assert (seq.state, seq.arrival, seq.worker, s.num_waiting, s.counts.submitted) == (
        RequestState.QUEUED, 2.5, None, 1, 1)


def assert_rejected(verdict, reason, *fragments):
    assert isinstance(verdict, Rejected) and verdict.reason is reason, verdict
    for fragment in fragments:
        assert fragment in verdict.detail, (fragment, verdict.detail)


def test_unknown_tenant_is_rejected(make_scheduler, make_request):
    s = make_scheduler()
    assert_rejected(s.submit(make_request(1, tenant="zed"), 0.0), RejectReason.UNKNOWN_TENANT, "'zed'")
    assert_rejected(s.submit(Request(2, ["a"], 1, 1), 0.0), RejectReason.UNKNOWN_TENANT)
    # checked first: an unknown tenant with bad fields is still an unknown tenant
    assert_rejected(s.submit(Request(3, "zed", 0, 0), 0.0), RejectReason.UNKNOWN_TENANT)
    assert (s.counts.submitted, s.counts.rejected, len(s.live)) == (3, 3, 0)


@pytest.mark.parametrize(
    "prompt,max_new,fragment",
    [(0, 4, "prompt_tokens"), (-3, 4, "prompt_tokens"), (4, 0, "max_new_tokens"), (4, -1, "max_new_tokens"),
     (4.0, 4, "prompt_tokens"), (True, 4, "prompt_tokens"), (4, "4", "max_new_tokens")],
)
def test_invalid_token_counts_are_rejected(make_scheduler, prompt, max_new, fragment):
    s = make_scheduler()
    assert_rejected(s.submit(Request(1, "a", prompt, max_new), 0.0), RejectReason.INVALID_REQUEST, fragment)
    assert not s.live


def test_invalid_priority_and_unhashable_id_are_rejected(make_scheduler):
    s = make_scheduler()
    assert_rejected(s.submit(Request(1, "a", 1, 1, priority="high"), 0.0), RejectReason.INVALID_REQUEST, "priority")
    assert_rejected(s.submit(Request([1], "a", 1, 1), 0.0), RejectReason.INVALID_REQUEST, "hashable")


def test_duplicate_live_id_is_rejected_but_an_ended_id_can_be_reused(make_scheduler, make_request, step):
    s = make_scheduler()
    assert s.submit(make_request("x", max_new=1), 0.0) == Admitted("x")
    assert_rejected(s.submit(make_request("x"), 0.0), RejectReason.INVALID_REQUEST, "already in flight")
    assert s.sequence("x").request.max_new_tokens == 1  # the original is untouched
    step(s, 0, 1.0)  # finishes by length
    assert s.submit(make_request("x"), 2.0) == Admitted("x")


def test_no_workers_is_rejected(make_scheduler, make_request):
    s = make_scheduler(workers=())
    assert_rejected(s.submit(make_request(1), 0.0), RejectReason.NO_WORKERS)


def test_prompt_too_long_counts_prompt_plus_max_new_against_admissible_kv(make_scheduler, make_request):
    s = make_scheduler(workers=(10,), kv_watermark=0.1)  # 10 blocks of 4, 1 kept free: 36 tokens
    assert s.max_sequence_tokens == 36
    assert s.submit(make_request(1, prompt=30, max_new=6), 0.0) == Admitted(1)
    assert_rejected(s.submit(make_request(2, prompt=30, max_new=7), 0.0), RejectReason.PROMPT_TOO_LONG, "37", "36")
    assert_rejected(s.submit(make_request(3, prompt=37, max_new=1), 0.0), RejectReason.PROMPT_TOO_LONG)


def test_max_model_len_caps_the_longest_sequence(make_scheduler, make_request):
    s = make_scheduler(workers=(100,), max_model_len=20)  # the KV holds 400 tokens; 20 are allowed
    assert s.max_sequence_tokens == 20
    assert s.submit(make_request(1, prompt=16, max_new=4), 0.0) == Admitted(1)
    assert_rejected(s.submit(make_request(2, prompt=16, max_new=5), 0.0), RejectReason.PROMPT_TOO_LONG, "21", "20")
    assert make_scheduler(workers=(2,), max_model_len=20).max_sequence_tokens == 8  # the KV is smaller


def test_prompt_too_long_uses_the_smallest_worker(make_scheduler, make_request):
    s = make_scheduler(workers=(100, 8))
    assert s.max_sequence_tokens == 32
    assert_rejected(s.submit(make_request(1, prompt=30, max_new=3), 0.0), RejectReason.PROMPT_TOO_LONG)


# ----- step formation -----------------------------------------------------------------------------


def test_step_runs_decodes_then_ongoing_prefills_then_admissions(make_scheduler, make_request, step):
    s = make_scheduler()
    s.submit(make_request("A", prompt=2, max_new=10), 0.0)
    s.submit(make_request("B", prompt=40, max_new=10), 0.0)
    plan, _ = step(s, 0, 1.0)
    assert items(plan) == [("A", 2, 0, True), ("B", 14, 0, False)] and plan.admitted == ("A", "B")
    s.submit(make_request("C", prompt=4), 1.0)
    plan, _ = step(s, 0, 2.0)  # A decodes, B takes the rest: no budget left for C
    assert items(plan) == [("A", 1, 2, True), ("B", 15, 14, False)] and plan.admitted == ()
    plan, outputs = step(s, 0, 3.0)
    assert items(plan) == [("A", 1, 3, True), ("B", 11, 29, True), ("C", 4, 0, True)]
    assert plan.admitted == ("C",) and plan.num_tokens == 16
    assert [item.is_decode for item in plan.items] == [True, False, False]
    assert [(o.request_id, o.first) for o in outputs if isinstance(o, Emitted)] == [
        ("A", False), ("B", True), ("C", True)]


def test_decodes_are_served_before_an_earlier_requests_prefill(make_scheduler, make_request, step):
    s = make_scheduler(max_num_seqs=4)
    s.submit(make_request("A", prompt=2, max_new=10), 0.0)
    s.submit(make_request("B", prompt=14, max_new=10), 0.0)
    step(s, 0, 1.0)  # both sampled their first token
    step(s, 0, 2.0)
    s.submit(make_request("C", prompt=200, max_new=2), 2.0)
    s.submit(make_request("D", prompt=3, max_new=2), 2.0)
    plan, _ = step(s, 0, 3.0)
    assert items(plan) == [("A", 1, 3, True), ("B", 1, 15, True), ("C", 14, 0, False)]
    plan, _ = step(s, 0, 4.0)  # C (submitted before D) is still prefilling; D waits behind it
    assert items(plan) == [("A", 1, 4, True), ("B", 1, 16, True), ("C", 14, 14, False)]


def test_chunked_prefill_respects_the_token_budget_and_samples_on_the_last_chunk(make_scheduler, make_request, step):
    s = make_scheduler()
    s.submit(make_request("r", prompt=40, max_new=5), 0.0)
    plans = []
    for t in (1.0, 2.0, 3.0):
        plan, outputs = step(s, 0, t)
        plans.append(items(plan))
        assert s.sequence("r").first_token_time == (3.0 if t == 3.0 else None)
        assert outputs == ([Emitted("r", 1, True)] if t == 3.0 else [])
    assert plans == [[("r", 16, 0, False)], [("r", 16, 16, False)], [("r", 8, 32, True)]]


def test_max_seqs_caps_running_requests(make_scheduler, make_request, step):
    s = make_scheduler(max_num_seqs=2)
    for rid in range(3):
        s.submit(make_request(rid, prompt=2, max_new=3), 0.0)
    plan, _ = step(s, 0, 1.0)
    assert plan.admitted == (0, 1) and (s.num_running, s.num_waiting) == (2, 1)
    step(s, 0, 2.0)
    plan, outputs = step(s, 0, 3.0)  # third token: both finish by length
    assert [o for o in outputs if isinstance(o, Finished)] == [Finished(0, "length", 3), Finished(1, "length", 3)]
    plan, _ = step(s, 0, 4.0)
    assert plan.admitted == (2,) and plan.released == (0, 1)


def test_budget_counts_tokens_not_requests(make_scheduler, make_request):
    s = make_scheduler(max_num_batched_tokens=10, max_num_seqs=10)
    for rid in range(4):
        s.submit(make_request(rid, prompt=4), 0.0)
    plan = plan_full(s, 0, 1.0)
    assert items(plan) == [(0, 4, 0, True), (1, 4, 0, True), (2, 2, 0, False)] and plan.num_tokens == 10


def test_empty_plan_when_idle(make_scheduler):
    s = make_scheduler()
    plan = plan_full(s, 0, 1.0)
    assert not plan and plan.items == () and plan.repeat == 1
    with pytest.raises(ProtocolError, match="no plan in flight"):
        complete_full(s, 0, StepResult(), 1.0)


# ----- finishing ----------------------------------------------------------------------------------


def test_finish_on_eos(make_scheduler, make_request, step):
    s = make_scheduler()
    s.submit(make_request("r", prompt=4, max_new=10), 0.0)
    _, out1 = step(s, 0, 1.0)
    _, out2 = step(s, 0, 2.0, eos={"r"})
    assert out1 == [Emitted("r", 1, True)]
    assert out2 == [Emitted("r", 1, False), Finished("r", "eos", 2)]
    assert "r" not in s.live and s.counts.finished == 1
    assert s.workers[0].pool.free == 64
    assert plan_full(s, 0, 3.0).released == ("r",)


def test_eos_on_the_first_token(make_scheduler, make_request, step):
    s = make_scheduler()
    s.submit(make_request("r", prompt=20, max_new=10), 0.0)
    step(s, 0, 1.0)
    _, outputs = step(s, 0, 2.0, eos={"r"})
    assert outputs == [Emitted("r", 1, True), Finished("r", "eos", 1)]


def test_finish_on_max_new_tokens_is_length(make_scheduler, make_request, step, drive):
    s = make_scheduler()
    s.submit(make_request("r", prompt=4, max_new=3), 0.0)
    outputs, _ = drive.drain(s)
    assert outputs == [Emitted("r", 1, True), Emitted("r", 1, False), Emitted("r", 1, False),
                       Finished("r", "length", 3)]


def test_eos_and_length_on_the_same_token_is_eos(make_scheduler, make_request, step):
    s = make_scheduler()
    s.submit(make_request("r", prompt=4, max_new=1), 0.0)
    _, outputs = step(s, 0, 1.0, eos={"r"})
    assert outputs[-1] == Finished("r", "eos", 1)


def test_timestamps_are_causal_and_taken_from_now(make_scheduler, make_request, step):
    s = make_scheduler()
    s.submit(make_request("r", prompt=20, max_new=2), 1.0)
    seq = s.sequence("r")
    step(s, 0, 2.0)
    step(s, 0, 3.0)
    step(s, 0, 4.0)
    assert (seq.arrival, seq.admit_time, seq.first_token_time, seq.finish_time) == (1.0, 2.0, 3.0, 4.0)
    assert seq.state is RequestState.FINISHED and seq.finish_reason == "length"


# ----- preemption ---------------------------------------------------------------------------------


def preemption_scenario(make_scheduler, make_request, policy):
    """One 6-block worker (24 tokens) and two requests of 8 + 8 tokens: their decodes collide.
    "new" is the later one (fcfs victim) and of tenant a, whose counter grows twice as fast as
    that of "old"'s tenant c (weight 2), so it is the vtc victim too."""
    s = make_scheduler(policy, workers=(6,))
    s.submit(make_request("old", tenant="c", prompt=8, max_new=8), 0.0)
    s.submit(make_request("new", tenant="a", prompt=8, max_new=8), 0.0)
    return s


@pytest.mark.parametrize("policy", ["fcfs", "vtc"])
def test_preemption_by_recompute_emits_no_token_twice_and_charges_prompt_once(
        make_scheduler, make_request, drive, policy):
    s = preemption_scenario(make_scheduler, make_request, policy)
    seq = s.sequence("new")
    outputs, preempted, now = [], [], 0.0
    while s.live:
        now += 1.0
        plan = plan_full(s, 0, now)
        preempted += plan.preempted
        if "new" in plan.preempted:
            assert seq.state is RequestState.QUEUED and seq.computed == 0 and seq.blocks == 0
            assert seq.generated > 0 and seq.preemptions >= 1
            assert seq.admit_time == 1.0  # kept from the first admission
        if "new" in plan.admitted and seq.preemptions:
            recompute = next(item for item in plan.items if item.request_id == "new")
            assert recompute.context == 0 and recompute.num_tokens <= 8 + seq.generated
        if plan:
            outputs += complete_full(s, 0, StepResult(), now)
    assert "new" in preempted, "the scenario must preempt"
    assert "old" not in preempted  # both policies pick "new": later, and (vtc) larger counter
    assert drive.emitted(outputs) == {"old": 8, "new": 8}
    assert sorted(o.request_id for o in outputs if isinstance(o, Emitted) and o.first) == ["new", "old"]
    assert drive.finished(outputs) == {"old": Finished("old", "length", 8), "new": Finished("new", "length", 8)}
    assert s.ledger.prompt_tokens == [8, 0, 8] and s.ledger.outputs() == [8, 0, 8]
    assert s.tenant_service() == [8 + 2 * 8, 0.0, (8 + 2 * 8) / 2]
    assert s.counts.preemptions == len(preempted)
    if policy == "vtc":
        assert [s.policy.counter_of(t) for t in range(3)] == [24.0, 0.0, 12.0]


def test_a_step_that_preempts_admits_nothing(make_scheduler, make_request):
    s = preemption_scenario(make_scheduler, make_request, "priority")
    now = 0.0
    worker = s.workers[0]
    while worker.pool.free or all(seq.computed % 4 for seq in worker.running):  # until a decode needs a block
        now += 1.0
        plan_full(s, 0, now)
        complete_full(s, 0, StepResult(), now)
    s.submit(make_request("urgent", tenant="b", prompt=1, max_new=1, priority=-5), now)
    plan = plan_full(s, 0, now + 1.0)
    assert plan.preempted == ("new",)
    assert plan.admitted == ()  # "urgent" heads the queue and fits the freed blocks, yet waits a step
    complete_full(s, 0, StepResult(), now + 1.0)
    assert plan_full(s, 0, now + 2.0).admitted == ("urgent",)


def test_preempted_plan_reports_victim_only_in_preempted(make_scheduler, make_request):
    s = preemption_scenario(make_scheduler, make_request, "fcfs")
    now = 0.0
    while True:
        now += 1.0
        plan = plan_full(s, 0, now)
        if plan.preempted:
            break
        complete_full(s, 0, StepResult(), now)
    assert plan.preempted == ("new",) and "new" not in plan.released
    assert [item.request_id for item in plan.items] == ["old"]


def test_a_preempted_request_is_never_among_its_steps_items(make_scheduler, make_request):
    s = make_scheduler(workers=(6,))
    s.submit(make_request("old", prompt=8, max_new=8), 0.0)
    s.submit(make_request("new", prompt=8, max_new=8), 0.0)
    now, seen = 0.0, []
    while s.live and not seen:
        now += 1.0
        plan = plan_full(s, 0, now)
        seen = [item.request_id for item in plan.items if item.request_id in plan.preempted]
        if plan:
            complete_full(s, 0, StepResult(), now)
    assert not seen  # a preempted request never also appears among the step's items


# ----- cancel -------------------------------------------------------------------------------------


def test_cancel_queued(make_scheduler, make_request):
    s = make_scheduler()
    s.submit(make_request(1), 0.0)
    s.submit(make_request(2), 0.0)
    assert cancel_full(s, 1, 1.0) is True
    assert 1 not in s.live and s.num_waiting == 1 and s.counts.cancelled == 1
    assert cancel_full(s, 1, 1.0) is False and cancel_full(s, "ghost", 1.0) is False
    assert plan_full(s, 0, 2.0).admitted == (2,)


def test_cancel_running_frees_kv_at_once_and_ignores_its_step_result(make_scheduler, make_request):
    s = make_scheduler()
    s.submit(make_request(1, prompt=8), 0.0)
    s.submit(make_request(2, prompt=8), 0.0)
    plan = plan_full(s, 0, 1.0)
    seq = s.sequence(1)
    assert s.workers[0].pool.used == 4
    assert cancel_full(s, 1, 1.5) is True
    assert s.workers[0].pool.used == 2 and seq.state is RequestState.CANCELLED and seq.finish_time == 1.5
    outputs = complete_full(s, 0, StepResult(1, frozenset({1})), 2.0)  # EOS for it is allowed, and ignored
    assert outputs == [Emitted(2, 1, True)] and seq.generated == 0
    assert s.ledger.prompt_tokens[0] == 8
    assert plan_full(s, 0, 3.0).released == (1,)
    assert plan.admitted == (1, 2)


def test_cancel_then_resubmit_the_same_id(make_scheduler, make_request, drive):
    s = make_scheduler()
    s.submit(make_request(1), 0.0)
    plan_full(s, 0, 1.0)
    cancel_full(s, 1, 1.0)
    assert s.submit(make_request(1, max_new=2), 1.0) == Admitted(1)
    complete_full(s, 0, StepResult(), 2.0)  # the old step, for the cancelled record
    outputs, _ = drive.drain(s, 2.0)
    assert drive.emitted(outputs) == {1: 2}


# ----- worker removal -----------------------------------------------------------------------------


def test_remove_worker_requeues_its_running_requests_for_recompute(make_scheduler, make_request, drive):
    s = make_scheduler(workers=(64, 64))
    for rid in range(4):
        s.submit(make_request(rid, prompt=3, max_new=4), 0.0)
    plan = plan_full(s, 0, 1.0)
    assert plan.admitted == (0, 1, 2, 3)
    complete_full(s, 0, StepResult(), 1.0)
    plan_full(s, 0, 2.0)  # in flight when the worker fails: that step is lost
    assert s.remove_worker(0, 2.5) == WorkerRemoved((0, 1, 2, 3))
    assert 0 not in s.workers
    for rid in range(4):
        seq = s.sequence(rid)
        assert (seq.state, seq.computed, seq.blocks, seq.generated, seq.worker) == (
            RequestState.QUEUED, 0, 0, 1, None)
    with pytest.raises(ProtocolError, match="worker 0: not in the pool"):
        complete_full(s, 0, StepResult(), 3.0)
    plan = plan_full(s, 1, 3.0)
    assert plan.admitted == (0, 1, 2, 3) and [i.num_tokens for i in plan.items] == [4, 4, 4, 4]
    outputs = complete_full(s, 1, StepResult(), 3.0)
    assert all(not o.first for o in outputs if isinstance(o, Emitted))
    more, _ = drive.drain(s, 3.0)
    outputs += more
    assert drive.emitted(outputs) == {0: 3, 1: 3, 2: 3, 3: 3}  # plus the one each emitted before
    assert len(drive.finished(outputs)) == 4 and s.counts.finished == 4


def test_remove_worker_under_early_binding_replaces_running_and_queued(make_scheduler, make_request, drive):
    s = make_scheduler(placement="round_robin", workers=(64, 64), max_num_seqs=1)
    for rid in range(4):
        s.submit(make_request(rid, max_new=2), 0.0)
    plan_full(s, 0, 1.0)  # 0 runs on worker 0, 2 waits there
    assert s.remove_worker(0, 2.0) == WorkerRemoved((0, 2))
    assert [s.sequence(rid).worker for rid in range(4)] == [1, 1, 1, 1]
    assert sorted(seq.id for seq in s.workers[1].queue) == [0, 1, 2, 3]
    outputs, _ = drive.drain(s, 2.0)
    assert drive.emitted(outputs) == {0: 2, 1: 2, 2: 2, 3: 2} and len(drive.finished(outputs)) == 4


@pytest.mark.parametrize("placement", ["global", "round_robin", "least_loaded"])
def test_removing_the_last_worker_parks_requests_until_add_worker(make_scheduler, make_request, drive, placement):
    s = make_scheduler(placement=placement, workers=(64,), max_num_seqs=1)
    for rid in range(3):
        s.submit(make_request(rid, max_new=2), 0.0)
    plan_full(s, 0, 1.0)
    assert s.remove_worker(0, 1.0).requeued == ((0,) if placement == "global" else (0, 1, 2))
    assert s.num_waiting == 3 and all(s.sequence(rid).worker is None for rid in range(3))
    assert_rejected(s.submit(make_request(9), 1.0), RejectReason.NO_WORKERS)
    with pytest.raises(ProtocolError, match="not in the pool"):
        plan_full(s, 0, 2.0)
    s.add_worker(7, 64, 3.0)
    if placement != "global":
        assert sorted(seq.id for seq in s.workers[7].queue) == [0, 1, 2]
    outputs, _ = drive.drain(s, 3.0)
    assert drive.emitted(outputs) == {0: 2, 1: 2, 2: 2}


def test_a_request_no_remaining_worker_can_hold_is_ended_not_stranded(make_scheduler, make_request, drive):
    """Accepted while only a big worker existed; a small one joins, the big one leaves."""
    s = make_scheduler(workers=(16,), block_size=4)
    s.submit(make_request("long", prompt=40, max_new=8), 0.0)
    s.add_worker(1, 4, 0.0)
    s.submit(make_request("short", prompt=4, max_new=4), 0.0)
    plan_full(s, 0, 1.0)
    assert s.remove_worker(0, 2.0) == WorkerRemoved(requeued=(), ended=("long",))  # it ran there
    assert s.sequence("long") is None and s.counts.cancelled == 1 and s.num_waiting == 1
    outputs, _ = drive.drain(s, 2.0)
    assert drive.finished(outputs)["short"].reason == "length"


def test_remove_unknown_worker(make_scheduler):
    with pytest.raises(ProtocolError, match="worker 3: not in the pool"):
        make_scheduler().remove_worker(3, 0.0)


# ----- contract errors ----------------------------------------------------------------------------


def test_plan_while_in_flight(make_scheduler, make_request):
    s = make_scheduler()
    s.submit(make_request(1), 0.0)
    plan_full(s, 0, 1.0)
    with pytest.raises(ProtocolError, match="in flight"):
        plan_full(s, 0, 1.0)


def test_complete_twice(make_scheduler, make_request, step):
    s = make_scheduler()
    s.submit(make_request(1), 0.0)
    step(s, 0, 1.0)
    with pytest.raises(ProtocolError, match="no plan in flight"):
        complete_full(s, 0, StepResult(), 2.0)


@pytest.mark.parametrize("call", [
    lambda s, t: s.submit(Request(5, "a", 1, 1), t),
    lambda s, t: cancel_full(s, 5, t),
    lambda s, t: plan_full(s, 1, t),
    lambda s, t: complete_full(s, 0, StepResult(), t),
    lambda s, t: s.add_worker(3, 64, t),
    lambda s, t: s.remove_worker(1, t),
], ids=["submit", "cancel", "plan", "complete", "add_worker", "remove_worker"])
@pytest.mark.parametrize("bad", [4.0, math.nan], ids=["backwards", "nan"])
def test_time_must_not_go_backwards(make_scheduler, make_request, call, bad):
    s = make_scheduler(workers=(64, 64))
    s.submit(make_request(1), 0.0)
    plan_full(s, 0, 5.0)
    submitted = s.counts.submitted
    with pytest.raises(ProtocolError, match="time went backwards"):
        call(s, bad)
    assert s.now == 5.0 and s.counts.submitted == submitted
    call(s, 5.0)  # the same instant is fine


@pytest.mark.parametrize("call", [lambda s: plan_full(s, 9, 1.0), lambda s: complete_full(s, 9, StepResult(), 1.0)],
                         ids=["plan", "complete"])
def test_unknown_worker(make_scheduler, call):
    with pytest.raises(ProtocolError, match="worker 9: not in the pool"):
        call(make_scheduler())


def test_eos_on_a_request_that_sampled_nothing(make_scheduler, make_request):
    s = make_scheduler()
    s.submit(make_request("long", prompt=40), 0.0)
    s.submit(make_request("other", prompt=4), 0.0)
    plan_full(s, 0, 1.0)  # "long" computes a 16-token chunk: no sample
    with pytest.raises(WorkerError, match="'long'.*sampled no token"):
        complete_full(s, 0, StepResult(1, frozenset({"long"})), 2.0)


def test_eos_on_a_request_not_in_the_step(make_scheduler, make_request):
    s = make_scheduler()
    s.submit(make_request(1), 0.0)
    plan_full(s, 0, 1.0)
    with pytest.raises(WorkerError, match="sampled no token"):
        complete_full(s, 0, StepResult(1, frozenset({"stranger"})), 2.0)


@pytest.mark.parametrize("beyond", [lambda repeat: 0, lambda repeat: repeat + 1, lambda repeat: 1.0])
def test_steps_beyond_the_plans_repeat(make_scheduler, make_request, beyond):
    s = make_scheduler()
    s.submit(make_request(1), 0.0)
    plan = plan_full(s, 0, 1.0)
    with pytest.raises(WorkerError, match="steps"):
        complete_full(s, 0, StepResult(beyond(plan.repeat)), 2.0)


# ----- debug checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [True, False])
def test_debug_checks_run_invariants_after_every_call(make_scheduler, make_request, monkeypatch, debug):
    calls = []
    real = invariants.check
    monkeypatch.setattr(invariants, "check", lambda s: calls.append(1) or real(s))
    s = make_scheduler(workers=(), debug_checks=debug)
    s.add_worker(0, 64, 0.0)
    s.add_worker(1, 64, 0.0)
    s.submit(make_request(1), 0.0)
    s.submit(make_request(2), 0.0)
    plan_full(s, 0, 1.0)
    complete_full(s, 0, StepResult(), 1.0)
    cancel_full(s, 2, 1.0)
    s.remove_worker(1, 1.0)
    assert len(calls) == (8 if debug else 0)


def test_debug_checks_catch_corruption_on_the_next_call(make_scheduler, make_request):
    s = make_scheduler()
    s.submit(make_request(1), 0.0)
    plan_full(s, 0, 1.0)
    s.workers[0].pool.free -= 1  # a leaked block
    with pytest.raises(invariants.InvariantError, match="free .* own .* cached != 64 blocks"):
        complete_full(s, 0, StepResult(), 2.0)


def test_scheduled_item_is_decode():
    assert ScheduledItem(1, 1, 5, True).is_decode
    assert ScheduledItem(1, 1, 0, True).is_decode  # a one-token prompt costs what a decode does
    assert not ScheduledItem(1, 4, 5, True).is_decode
