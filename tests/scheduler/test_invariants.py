"""Tests of scheduler.invariants: check() accepts healthy states and names each rule it finds broken."""

import dataclasses

import pytest

from scheduler.events import StepResult
from scheduler.invariants import InvariantError, check
from scheduler.request import RequestState


@pytest.fixture
def busy(make_scheduler, make_request):
    """Global placement: worker 0 runs "p" and "q" (both decoding, a step in flight), "w" waits,
    worker 1 idles. Round robin: "p" and "w" are bound to worker 0, "q" runs on worker 1."""

    def build(placement="global", policy="fcfs"):
        s = make_scheduler(policy, placement, workers=(64, 64), max_num_seqs=2, debug_checks=False)
        s.submit(make_request("p", prompt=8), 0.0)
        s.submit(make_request("q", prompt=6, tenant="b"), 0.0)
        for worker in s.workers:
            if s.plan(worker, 1.0):
                s.complete(worker, StepResult(), 1.0)
        s.plan(0, 2.0)
        s.submit(make_request("w", tenant="c"), 2.0)
        return s

    return build


@pytest.mark.parametrize("placement", ["global", "round_robin"])
@pytest.mark.parametrize("policy", ["fcfs", "vtc"])
def test_healthy_states_pass(busy, placement, policy):
    s = busy(placement, policy)
    check(s)
    s.complete(0, StepResult(1, frozenset({"p"})), 3.0)
    check(s)
    s.plan(1, 3.0)
    check(s)
    s.cancel("w", 3.0)
    s.remove_worker(0, 3.0)
    check(s)


def test_fresh_scheduler_passes(make_scheduler):
    check(make_scheduler(workers=()))
    check(make_scheduler())


def _running(s, rid):
    return next(seq for seq in s.workers[0].running if seq.id == rid)


def _leak_block(s):
    s.workers[0].pool.free -= 1


def _overfill_pool(s):
    s.workers[0].pool.free = s.workers[0].pool.total + 1


def _duplicate_running(s):
    s.workers[1].running[_running(s, "p")] = None


def _queued_also_running(s):
    s.workers[1].running[s.sequence("w")] = None


def _count_one_more_submitted(s):
    s.counts.submitted += 1


def _lose_a_queued_request(s):
    next(iter(s.queues())).remove(s.sequence("w"))


def _queued_with_kv(s):
    s.sequence("w").blocks = 1


def _running_in_wrong_state(s):
    _running(s, "p").state = RequestState.QUEUED


def _computed_too_much(s):
    seq = _running(s, "p")  # decoding: its counts are read from its decode set's clock
    seq._computed += seq.target + 1 - seq.computed


def _generated_too_much(s):
    seq = _running(s, "p")
    seq._generated += seq.request.max_new_tokens + 1 - seq.generated


def _too_many_running(s):
    s.config = dataclasses.replace(s.config, max_num_seqs=1)


def _bound_elsewhere(s):
    _running(s, "p").worker = 1


def _kv_beyond_blocks(s):
    worker = s.workers[0]
    held = sum(seq.blocks for seq in worker.running)
    worker.decode.reserved -= 8  # "p" (computed 8 tokens) now holds 1 block, "q" none
    worker.pool.free += held - sum(seq.blocks for seq in worker.running)  # keep the pool itself consistent


def _step_over_budget(s):
    worker = s.workers[0]
    worker.inflight = [(_running(s, "p"), s.config.max_num_batched_tokens + 1 - worker.decode.size)]


def _ledger_queued(s):
    s.ledger.queued[2] += 1


def _ledger_running(s):
    s.ledger.running[0] -= 1


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (_leak_block, r"worker 0: \d+ free \+ \d+ own \+ \d+ cached != \d+ blocks"),
        (_overfill_pool, r"worker 0: free blocks \d+ outside \[0, 64\]"),
        (_duplicate_running, "a request is in two places at once"),
        (_queued_also_running, "a request is in two places at once"),
        (_count_one_more_submitted, "request conservation: submitted 4 != ended 0 \\+ live 3"),
        (_lose_a_queued_request, "3 live requests but 2 queued or running"),
        (_queued_with_kv, "id='w'.* is queued but holds KV"),
        (_running_in_wrong_state, "id='p'.* is on a worker but not RUNNING"),
        (_computed_too_much, "id='p'.* computed more than its tokens"),
        (_generated_too_much, "id='p'.* generated past max_new_tokens"),
        (_too_many_running, "worker 0: more than max_num_seqs running"),
        (_bound_elsewhere, "id='p'.* runs on worker 0 but is bound elsewhere"),
        (_kv_beyond_blocks, "id='p'.* has KV beyond its blocks"),
        (_step_over_budget, "worker 0: step of 17 tokens over budget"),
        (_ledger_queued, r"ledger queued \[0, 0, 2\] != actual \[0, 0, 1\]"),
        (_ledger_running, r"ledger running \[0, 1, 0\] != actual \[1, 1, 0\]"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_corruption_is_caught_with_a_clear_message(busy, corrupt, message):
    s = busy()
    check(s)
    corrupt(s)
    with pytest.raises(InvariantError, match=message):
        check(s)


def test_invariant_error_is_an_assertion_error():
    assert issubclass(InvariantError, AssertionError)
