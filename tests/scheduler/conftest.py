"""Factories shared by the scheduler tests.

Fixtures hand out plain functions (session scoped, stateless), so hypothesis tests can use them too.
Defaults are deliberately tiny: 4-token KV blocks, 16-token steps, 4 sequences per worker, no
watermark, and `debug_checks=True` so every call also runs `invariants.check`.
"""

from __future__ import annotations

import pytest
import mirrored
from mirrored import FullPlan, complete_full, plan_full

from scheduler.actions import Emitted, Finished
from scheduler.core import Scheduler, SchedulerConfig
from scheduler.events import StepResult
from scheduler.request import Request, RequestState, Tenant
from scheduler.sequence import Sequence

TENANTS = (Tenant("a"), Tenant("b"), Tenant("c", weight=2.0))


@pytest.fixture(autouse=True)
def _forget_mirrors():
    yield
    mirrored.forget_all()

SMALL_CONFIG = dict(max_num_batched_tokens=16, max_num_seqs=4, block_size=4, kv_watermark=0.0, debug_checks=True)


def build_scheduler(policy="fcfs", placement="global", workers=(64,), tenants=TENANTS, **config) -> Scheduler:
    """A scheduler with workers 0..n-1 holding `workers[i]` KV blocks each, added at time 0."""
    scheduler = Scheduler(tenants, policy, placement, SchedulerConfig(**(SMALL_CONFIG | config)))
    for worker_id, blocks in enumerate(workers):
        scheduler.add_worker(worker_id, blocks, 0.0)
    return scheduler


def build_request(rid, tenant="a", prompt=8, max_new=4, priority=None) -> Request:
    return Request(rid, tenant, prompt, max_new, priority)


def build_sequence(order, tenant=0, prompt=8, max_new=4, preemptions=0, state=RequestState.QUEUED) -> Sequence:
    """A core record made by hand, for policy and queue tests that need no scheduler."""
    name = TENANTS[tenant].name if tenant < len(TENANTS) else f"t{tenant}"
    seq = Sequence(Request(f"r{order}", name, prompt, max_new), tenant, order, 0.0)
    seq.state = state
    seq.preemptions = preemptions
    return seq


def run_step(scheduler: Scheduler, worker: int, now: float, eos=()) -> tuple[FullPlan, list]:
    """plan + complete on one worker; `eos` names requests whose sampled token ends them."""
    plan = plan_full(scheduler, worker, now)
    if not plan:
        return plan, []
    return plan, complete_full(scheduler, worker, StepResult(1, frozenset(eos)), now)


def drain(scheduler: Scheduler, now: float = 0.0, output_len: dict | None = None, limit: int = 10_000):
    """Step every worker until nothing is live. `output_len[id]` is a request's true output length
    (EOS on that token); requests not named run to max_new_tokens. Returns (outputs, time reached)."""
    output_len = output_len or {}
    emitted: dict = {}
    outputs: list = []
    for _ in range(limit):
        if not scheduler.live:
            return outputs, now
        now += 1.0
        for worker in sorted(scheduler.workers):
            plan = plan_full(scheduler, worker, now)
            if not plan:
                continue
            eos = frozenset(
                item.request_id for item in plan.items
                if item.samples and emitted.get(item.request_id, 0) + 1 >= output_len.get(item.request_id, 1 << 30)
            )
            for out in complete_full(scheduler, worker, StepResult(1, eos), now):
                outputs.append(out)
                if isinstance(out, Emitted):
                    emitted[out.request_id] = emitted.get(out.request_id, 0) + out.count
    raise AssertionError(f"not drained after {limit} rounds: {list(scheduler.live.values())}")


def emitted_per_request(outputs) -> dict:
    counts: dict = {}
    for out in outputs:
        if isinstance(out, Emitted):
            counts[out.request_id] = counts.get(out.request_id, 0) + out.count
    return counts


def finished_of(outputs) -> dict:
    return {out.request_id: out for out in outputs if isinstance(out, Finished)}


@pytest.fixture(scope="session")
def tenants():
    """a and b of weight 1, c of weight 2 (indices 0, 1, 2)."""
    return TENANTS


@pytest.fixture(scope="session")
def make_scheduler():
    return build_scheduler


@pytest.fixture(scope="session")
def make_request():
    return build_request


@pytest.fixture(scope="session")
def make_sequence():
    return build_sequence


@pytest.fixture(scope="session")
def step():
    return run_step


@pytest.fixture(scope="session")
def drive():
    """Helpers for running a scheduler to completion and reading its outputs."""

    class Drive:
        drain = staticmethod(drain)
        emitted = staticmethod(emitted_per_request)
        finished = staticmethod(finished_of)

    return Drive
