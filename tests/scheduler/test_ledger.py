"""Tests of scheduler.ledger: the ledger's output tokens are read in O(1) and equal what was made."""

from hypothesis import given, settings
from hypothesis import strategies as st
from mirrored import complete_full, plan_full

from scheduler.actions import Emitted
from scheduler.decodeset import DecodeSet
from scheduler.events import StepResult
from scheduler.request import Request, Tenant
from scheduler.sequence import Sequence
from scheduler.ledger import Ledger
from scheduler.service import ServiceWeights

TENANTS = (Tenant("a"), Tenant("b"), Tenant("c", weight=2.0))


def decoding(decode, order, tenant, generated=1):
    seq = Sequence(Request(order, TENANTS[tenant].name, 8, 100), tenant, order, 0.0)
    seq.computed, seq.generated, seq.blocks = 8, generated, 2
    decode.join(seq)
    return seq


def test_output_tokens_add_the_decode_sets_pending_output_to_what_was_settled():
    ledger = Ledger(TENANTS, ServiceWeights())
    one, two = DecodeSet(4, ledger.decoding), DecodeSet(4, ledger.decoding)
    a, b = decoding(one, 0, 0), decoding(two, 1, 0)
    decoding(two, 2, 2)
    ledger.add_output(0, 1)  # a completed prefill's token
    one.advance(3)
    two.advance(4)
    assert ledger.outputs() == [1 + 3 + 4, 0, 4]
    one.leave(a)  # settles tenant 0 on `one`; its output stays the same
    two.advance(2)
    assert ledger.outputs() == [1 + 3 + 4 + 2, 0, 6] and ledger.decoding.pending(0) == b.generated - 1
    assert ledger.services() == [2.0 * 10, 0.0, 2.0 * 6 / 2.0]


def walked_pending(s, tenant):
    return sum(w.decode.owed(tenant) for w in s.workers.values() if tenant in w.decode.tenants)


REQUESTS = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 12), st.integers(1, 20)), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(REQUESTS, st.lists(st.integers(0, 3), min_size=1, max_size=50))
def test_ledger_output_is_the_streamed_tokens_and_the_walk_over_workers_at_every_report(
        make_scheduler, make_request, requests, cuts):
    """Four workers under vtc, small KV (so requests are preempted and resumed, maybe elsewhere),
    multi-step runs reported in parts: after every report each tenant's output tokens are the
    tokens streamed to it so far, and the decode sets' pending part is the sum over the workers."""
    s = make_scheduler("vtc", workers=(6, 6, 8, 8), tenants=TENANTS, debug_checks=False)
    tenant_of, streamed = {}, [0, 0, 0]
    for rid, (tenant, prompt, max_new) in enumerate(requests):
        tenant_of[rid] = tenant
        s.submit(make_request(rid, TENANTS[tenant].name, prompt, max_new), 0.0)
    cut = iter(cuts * 1000)
    for now in range(1, 2000):
        if not s.live:
            break
        for worker in sorted(s.workers):
            plan = plan_full(s, worker, float(now))
            left = plan.repeat if plan else 0
            while left:
                steps = min(left, next(cut) or left)  # 0: the whole run in one report
                left -= steps
                for out in complete_full(s, worker, StepResult(steps, final=not left), float(now)):
                    if isinstance(out, Emitted):
                        streamed[tenant_of[out.request_id]] += out.count
                assert s.ledger.outputs() == streamed
                for tenant in range(3):
                    assert s.ledger.decoding.pending(tenant) == walked_pending(s, tenant)
    assert not s.live and s.ledger.outputs() == streamed
