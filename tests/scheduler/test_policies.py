"""Tests of scheduler.policies: fcfs and VTC order and victims, their queues, LazyMinHeap, make_policy."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mirrored import complete_full, plan_full

from scheduler.actions import Finished
from scheduler.errors import ConfigError
from scheduler.events import StepResult
from scheduler.policies import FCFS, POLICIES, VTC, KeyedQueue, make_policy
from scheduler.policies.base import LazyMinHeap
from scheduler.policies.vtc import VTCQueue
from scheduler.request import Request, RequestState
from scheduler.sequence import Sequence
from scheduler.ledger import Ledger
from scheduler.service import ServiceWeights

A, B, C = 0, 1, 2  # tenant indices; C has weight 2


@pytest.fixture
def vtc(tenants):
    policy = VTC()
    policy.bind(tenants, Ledger(tenants, ServiceWeights()))
    return policy


def counters(policy) -> list[float]:
    return [policy.counter_of(tenant) for tenant in range(len(policy.tenants))]


def drain_queue(queue):
    out = []
    while queue.peek() is not None:
        out.append(queue.pop())
    return out


# ----- fcfs ---------------------------------------------------------------------------------------


def test_fcfs_admits_in_submission_order_whatever_the_push_order(make_sequence, tenants):
    policy = FCFS()
    policy.bind(tenants, Ledger(tenants, ServiceWeights()))
    queue = policy.new_queue()
    seqs = [make_sequence(order, tenant=order % 3) for order in range(6)]
    for order in (3, 0, 5, 1, 4, 2):
        queue.push(seqs[order])
    assert [seq.order for seq in drain_queue(queue)] == [0, 1, 2, 3, 4, 5]


def test_fcfs_victim_is_the_latest_submitted(make_sequence):
    policy = FCFS()
    running = [make_sequence(order, state=RequestState.RUNNING) for order in (4, 9, 2)]
    assert policy.victim(running).order == 9


# ----- KeyedQueue (the base of fcfs and keyed policies) --------------------------------------------


def test_keyed_queue_orders_by_key_then_submission(make_sequence):
    queue = KeyedQueue(lambda seq: -seq.request.prompt_tokens)  # longest prompt first
    for order, prompt in enumerate([5, 9, 5, 9, 1]):
        queue.push(make_sequence(order, prompt=prompt))
    assert [seq.order for seq in drain_queue(queue)] == [1, 3, 0, 2, 4]


def test_keyed_queue_push_peek_pop_remove_len_iter(make_sequence):
    queue = KeyedQueue(lambda seq: 0)
    seqs = [make_sequence(order) for order in range(4)]
    for seq in seqs:
        queue.push(seq)
    assert len(queue) == 4 and set(queue) == set(seqs)
    queue.remove(seqs[2])  # not the head: stays in the heap, lazily dropped later
    assert len(queue) == 3 and set(queue) == {seqs[0], seqs[1], seqs[3]}
    queue.remove(seqs[0])  # the head
    assert queue.peek() is seqs[1]
    assert queue.peek() is seqs[1]  # peek does not consume
    assert queue.pop() is seqs[1]
    assert queue.pop() is seqs[3]  # skips the removed seqs[2]
    assert len(queue) == 0 and list(queue) == [] and queue.peek() is None
    with pytest.raises(AssertionError, match="empty"):
        queue.pop()


# ----- VTC: counters ------------------------------------------------------------------------------


def test_vtc_new_backlogged_tenant_is_lifted_to_the_smallest_backlogged_counter(vtc):
    vtc.on_backlogged(A, True)
    vtc.on_backlogged(B, True)
    vtc.ledger.add_output(A, 5)  # A: 10
    vtc.ledger.add_output(B, 10)  # B: 20
    vtc.on_backlogged(C, True)
    assert counters(vtc) == [10.0, 20.0, 10.0]


def test_vtc_lift_reads_counters_as_they_are_now(vtc):
    vtc.on_backlogged(A, True)
    vtc.ledger.add_output(A, 15)  # A's heap entry is stale (0) until looked at
    vtc.on_backlogged(B, True)
    assert vtc.counter_of(B) == 30.0


def test_vtc_lift_never_lowers_a_counter(vtc):
    vtc.ledger.add_output(C, 50)  # C (weight 2) served while not backlogged: 50
    vtc.on_backlogged(A, True)
    vtc.ledger.add_output(A, 5)
    vtc.on_backlogged(C, True)
    assert counters(vtc) == [10.0, 0.0, 50.0]


def test_vtc_lift_ignores_tenants_that_are_not_backlogged(vtc):
    vtc.on_backlogged(A, True)
    vtc.ledger.add_output(A, 5)  # A: 10, backlogged
    vtc.ledger.add_output(B, 1)  # B: 2, never backlogged
    vtc.on_backlogged(C, True)
    assert vtc.counter_of(C) == 10.0


def test_vtc_with_nobody_backlogged_lifts_to_the_last_idle_tenants_current_counter(vtc, make_sequence):
    vtc.on_backlogged(A, True)
    vtc.on_idle(A)  # A's last request was admitted...
    vtc.on_admit(make_sequence(0, tenant=A, prompt=6))
    vtc.ledger.add_output(A, 8)  # ...and it kept being served while B was away: 6 + 16
    vtc.on_backlogged(B, True)
    assert vtc.counter_of(B) == 22.0  # no credit for the time B was idle


def test_vtc_with_nobody_ever_backlogged_starts_at_zero(vtc):
    vtc.on_backlogged(B, True)
    assert counters(vtc) == [0.0, 0.0, 0.0]


def test_vtc_requeue_after_preemption_is_not_lifted(vtc):
    vtc.on_backlogged(A, True)
    vtc.ledger.add_output(A, 5)  # A: 10
    vtc.on_backlogged(B, False)  # B's preempted request came back: no lift
    assert vtc.counter_of(B) == 0.0
    vtc.on_backlogged(C, True)  # but B is backlogged now, so it is the floor
    assert vtc.counter_of(C) == 0.0


def test_vtc_lift_in_the_scheduler_uses_the_service_given_while_others_were_idle(make_scheduler, make_request):
    s = make_scheduler("vtc", max_num_batched_tokens=64)
    s.submit(make_request(1, "a", prompt=10, max_new=50), 0.0)
    for t in range(1, 7):  # admit, prefill and 5 decodes: a = 10 + 2 * 6
        s.plan(0, t)
        s.complete(0, StepResult(), t)
    assert s.policy.counter_of(A) == 22.0
    s.submit(make_request(2, "b"), 7.0)
    assert s.policy.counter_of(B) == 22.0


def test_vtc_charges_prompt_at_first_admission_only_and_divides_by_weight(vtc, make_sequence):
    vtc.on_admit(make_sequence(0, tenant=A, prompt=10))
    vtc.on_admit(make_sequence(0, tenant=C, prompt=10))
    assert counters(vtc) == [10.0, 0.0, 5.0]
    vtc.on_admit(make_sequence(0, tenant=A, prompt=10, preemptions=1))  # re-admission after preemption: recompute is free
    assert counters(vtc) == [10.0, 0.0, 5.0]


def test_vtc_charges_w_q_per_output_token_and_ignores_prompt_service(vtc):
    vtc.ledger.prompt_tokens[:] = [7, 7, 7]  # prompts are charged at admission, not as processed
    vtc.ledger.add_output(A, 3)
    vtc.ledger.add_output(C, 3)
    assert counters(vtc) == [6.0, 0.0, 3.0]


def test_vtc_uses_the_schedulers_service_weights(make_sequence, tenants):
    policy = make_policy("vtc")
    policy.bind(tenants, Ledger(tenants, ServiceWeights(0.5, 4)))
    policy.on_admit(make_sequence(0, tenant=C, prompt=10))
    policy.ledger.add_output(C, 1)
    assert policy.counter_of(C) == (0.5 * 10 + 4 * 1) / 2 == policy.ledger.service(C) + 0.5 * 10 / 2


def test_vtc_victim_is_the_latest_request_of_the_tenant_with_the_largest_counter(vtc, make_sequence):
    running = [make_sequence(o, tenant=t, state=RequestState.RUNNING) for o, t in [(0, A), (1, B), (2, B), (3, A)]]
    vtc._charged[:] = [10.0, 20.0, 0.0]
    assert vtc.victim(running).order == 2
    vtc._charged[:] = [20.0, 10.0, 0.0]
    assert vtc.victim(running).order == 3
    vtc._charged[:] = [5.0, 5.0, 0.0]
    assert vtc.victim(running).order == 3  # equal counters: the latest submitted


# ----- VTC: its queue -----------------------------------------------------------------------------


def test_vtc_queue_admits_the_head_of_the_tenant_with_the_smallest_counter(vtc, make_sequence):
    queue = vtc.new_queue()
    seqs = {o: make_sequence(o, tenant=t) for o, t in [(0, B), (1, A), (2, A), (3, B), (4, C)]}
    for order in (2, 3, 4, 1, 0):
        queue.push(seqs[order])
    assert queue.peek() is seqs[1]  # all counters 0: the smallest tenant index, its oldest request
    vtc.ledger.add_output(A, 1)  # A: 2 -> B (0) or C (0): B by index
    assert queue.pop() is seqs[0]
    vtc.ledger.add_output(B, 3)  # B: 6 -> C
    assert queue.pop() is seqs[4]
    assert [seq.order for seq in drain_queue(queue)] == [1, 2, 3]  # C empty; A (2) before B (6)


def test_vtc_queue_push_peek_pop_remove_len_iter_with_lazy_removal(vtc, make_sequence):
    queue = vtc.new_queue()
    a0, a1, a2, b3 = (make_sequence(o, tenant=t) for o, t in [(0, A), (1, A), (2, A), (3, B)])
    for seq in (a0, a1, a2, b3):
        queue.push(seq)
    assert len(queue) == 4 and set(queue) == {a0, a1, a2, b3}
    queue.remove(a1)  # not its tenant's head: dropped lazily
    assert len(queue) == 3 and set(queue) == {a0, a2, b3}
    assert queue.pop() is a0
    assert queue.pop() is a2
    assert queue.pop() is b3
    assert len(queue) == 0 and list(queue) == [] and queue.peek() is None
    with pytest.raises(AssertionError, match="empty"):
        queue.pop()


def test_vtc_queue_removing_a_tenants_last_request_drops_the_tenant(vtc, make_sequence):
    queue = vtc.new_queue()
    a0, b1, a2 = (make_sequence(o, tenant=t) for o, t in [(0, A), (1, B), (2, A)])
    for seq in (a0, b1, a2):
        queue.push(seq)
    vtc.ledger.add_output(B, 1)
    queue.remove(a2)
    queue.remove(a0)
    assert queue.peek() is b1 and len(queue) == 1


def test_vtc_queues_share_the_policys_counters(vtc, make_sequence):
    first, second = vtc.new_queue(), vtc.new_queue()
    first.push(make_sequence(0, tenant=A))
    first.push(make_sequence(1, tenant=B))
    second.push(make_sequence(2, tenant=A))
    second.push(make_sequence(3, tenant=B))
    vtc.ledger.add_output(A, 1)
    assert first.peek().order == 1 and second.peek().order == 3


def test_vtc_queue_type(vtc):
    assert isinstance(vtc.new_queue(), VTCQueue)


# ----- LazyMinHeap --------------------------------------------------------------------------------


def test_lazy_min_heap_tracks_growing_keys():
    keys = {1: 5.0, 2: 3.0, 3: 4.0}
    heap = LazyMinHeap()
    assert heap.min(keys.get) is None and len(heap) == 0
    for item, key in keys.items():
        heap.add(item, key)
    assert len(heap) == 3 and 2 in heap and 7 not in heap
    assert heap.min(keys.get) == 2
    keys[2] = 10.0  # grew without telling the heap
    assert heap.min(keys.get) == 3
    keys[3] = 5.0  # tie with 1: the smaller id
    assert heap.min(keys.get) == 1


def test_lazy_min_heap_discard_and_readd():
    keys = {1: 1.0, 2: 2.0}
    heap = LazyMinHeap()
    heap.add(1, 1.0)
    heap.add(2, 2.0)
    heap.discard(1)
    heap.discard(9)  # absent: no error
    assert 1 not in heap and len(heap) == 1 and heap.min(keys.get) == 2
    keys[1] = 0.5
    heap.add(1, 0.5)
    assert heap.min(keys.get) == 1
    heap.discard(1)
    heap.discard(2)
    assert heap.min(keys.get) is None


# ----- make_policy --------------------------------------------------------------------------------


def test_make_policy_builds_by_name():
    assert isinstance(make_policy("fcfs"), FCFS)
    assert isinstance(make_policy("vtc"), VTC)
    assert make_policy("drr", {"quantum": 64}).quantum == 64.0


@pytest.mark.parametrize("policy", ["vtc", "lcf", "drr"])
def test_service_weights_are_not_policy_parameters(policy):
    with pytest.raises(ConfigError, match=r"policy_params.w_q: the service weights are scheduler.service_weights"):
        make_policy(policy, {"w_q": 8})


def test_make_policy_unknown_name_lists_the_allowed_names():
    with pytest.raises(ConfigError, match=r"scheduler.policy: unknown policy 'nope'; allowed: ") as info:
        make_policy("nope")
    listed = str(info.value).split("allowed: ")[1].split(", ")
    assert listed == sorted(POLICIES) and {"fcfs", "vtc"} <= set(listed)


def test_make_policy_with_fcfs_args_is_refused_not_crashing():
    with pytest.raises(ConfigError, match="allowed: none"):
        make_policy("fcfs", {"args": 1})


def test_make_policy_unknown_param_lists_the_allowed_params():
    with pytest.raises(ConfigError, match=r"w_x not a parameter of 'drr'; allowed: quantum"):
        make_policy("drr", {"w_x": 1})
    with pytest.raises(ConfigError, match=r"alpha not a parameter of 'fcfs'; allowed: none"):
        make_policy("fcfs", {"alpha": 1})


@pytest.mark.parametrize("weights,key", [((-1, 2), "w_p"), ((1, "2"), "w_q"), ((1, None), "w_q")])
def test_a_bad_service_weight_names_it(weights, key):
    with pytest.raises(ConfigError, match=f"scheduler.service_weights: {key} must be a number >= 0"):
        ServiceWeights(*weights)


def test_vtc_counts_the_output_the_ledger_counts(make_scheduler, make_request):
    """Arrivals while others decode exercise the lift and the admission order on both workers; the
    output part of every counter is the ledger's, which is every token the scheduler emitted."""
    policy = VTC()
    s = make_scheduler(policy, max_num_seqs=3, workers=(64, 64))
    tenant_of = {rid: (rid % 3 if rid % 4 else 0) for rid in range(25)}
    finished, seen = [0, 0, 0], set()
    for t in range(80):
        if t % 2 == 0 and t < 50:
            rid = t // 2
            s.submit(make_request(rid, "abc"[tenant_of[rid]], prompt=4 + rid % 5, max_new=3 + rid % 9), float(t))
        for worker in (0, 1):
            plan = plan_full(s, worker, float(t))
            if plan:  # every fourth request ends by EOS at its second token
                eos = {i.request_id for i in plan.items if i.request_id % 4 == 0 and s.generated(i.request_id) == 1}
                for end in complete_full(s, worker, StepResult(1, frozenset(eos)), float(t)):
                    if isinstance(end, Finished):
                        finished[tenant_of[end.request_id]] += end.output_tokens
        seen.add(tuple(counters(policy)))
        for tenant in range(3):
            output = policy.counter_of(tenant) - policy._charged[tenant]
            weight = s.tenants[tenant].weight
            assert output == pytest.approx(2.0 * s.ledger.output_tokens(tenant) / weight)
    assert s.num_live == 0 and len(seen) > 20  # the counters did move along the way
    assert [s.ledger.output_tokens(tenant) for tenant in range(3)] == finished


# ----- drr and slo: a peek takes no turn and moves nothing ----------------------------------------


class ReferenceDRR:
    """Deficit round robin written out as turns taken one visit at a time (Shreedhar and
    Varghese): the order DRRQueue must give, and the deficits it must leave."""

    def __init__(self, quantum, weights):
        self.quantum, self.weights = quantum, weights
        self.deficit = [0.0] * len(weights)
        self.fifos = {t: [] for t in range(len(weights))}
        self.active, self.granted = [], False

    def push(self, tenant, cost):
        if not self.fifos[tenant]:
            self.active.append(tenant)
        self.fifos[tenant].append(cost)

    def pop(self):
        while True:
            tenant = self.active[0]
            if not self.granted:
                self.deficit[tenant] += self.quantum * self.weights[tenant]
                self.granted = True
            if self.fifos[tenant][0] <= self.deficit[tenant]:
                break
            self.active.append(self.active.pop(0))
            self.granted = False
        self.deficit[tenant] -= self.fifos[tenant].pop(0)
        if not self.fifos[tenant]:  # idle: it keeps its debt but loses its credit
            self.active.pop(0)
            self.granted = False
            self.deficit[tenant] = min(self.deficit[tenant], 0.0)
        return tenant


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.integers(0, 2), st.integers(1, 40)), st.none()), max_size=60),
       st.sampled_from([8.0, 16.0, 50.0]))
def test_drr_takes_turns_as_visiting_one_tenant_at_a_time_would(tenants, operations, quantum):
    policy = make_policy("drr", {"quantum": quantum})
    policy.bind(tenants, Ledger(tenants, ServiceWeights()))
    queue, reference = policy.new_queue(), ReferenceDRR(quantum, [t.weight for t in tenants])
    order = 0
    for op in operations:
        if op is not None:
            tenant, prompt = op
            queue.push(Sequence(Request(order, tenants[tenant].name, prompt, 1), tenant, order, 0.0))
            reference.push(tenant, float(prompt))
            order += 1
        elif len(queue):
            before = [policy.deficit(t) for t in range(3)]
            head = queue.peek()
            assert queue.peek() is head and [policy.deficit(t) for t in range(3)] == before  # a peek is free
            seq = queue.pop()
            policy.on_admit(seq)  # as the core does once the request runs: its prompt is charged
            assert seq is head and seq.tenant == reference.pop()
            if not any(s.tenant == seq.tenant for s in queue):
                policy.on_idle(seq.tenant)  # as the core does when a tenant's last request leaves
            assert [policy.deficit(t) for t in range(3)] == reference.deficit


def test_slo_peek_moves_nothing_and_the_clock_demotes_late_requests(tenants):
    policy = make_policy("slo", {"default_ttft_ms": 1000, "prefill_ms_per_token": 1})
    policy.bind(tenants, Ledger(tenants, ServiceWeights()))
    queue = policy.new_queue()
    early = Sequence(Request("early", "a", 100, 1), 0, 0, 0.0)  # latest start 0.9 s
    later = Sequence(Request("later", "b", 10, 1), 1, 1, 0.5)  # latest start 1.49 s
    policy.advance(0.5)
    queue.push(early)
    queue.push(later)
    assert queue.peek() is early and queue.peek() is early and list(queue) == [early, later]
    policy.advance(1.0)  # early can no longer make it: later goes first, early with the late ones
    assert list(queue) == [later, early] and queue.peek() is later
    assert queue.pop() is later and queue.pop() is early and len(queue) == 0
