"""The simulated worker's clock: steps last the cost model's time on the simulated GPU's own
timeline, on trio's virtual clock (MockClock), so the figures are exact and no real time passes."""

from __future__ import annotations

import anyio
import pytest
import trio.lowlevel
from runtime_helpers import FixedCost
from trio.testing import MockClock

from scheduler.actions import ScheduledItem, StepPlan
from scheduler.runtime import SimulatedWorker
from scheduler.runtime.worker import Job, Step

pytestmark = pytest.mark.anyio
STEP_S = 0.010


@pytest.fixture
def anyio_backend():
    return "trio", {"clock": MockClock(autojump_threshold=0)}


def decode(*rids, joined=()) -> Step:
    items = tuple(ScheduledItem(rid, 1, 8, True) for rid in rids)
    return Step(StepPlan(0), items, tuple(Job(rid, 8, 100, 0) for rid in joined))


async def timed(worker: SimulatedWorker, step: Step) -> tuple[float, float]:
    # every duration here is on the virtual clock, which no load on the machine can stretch
    assert isinstance(trio.lowlevel.current_clock(), MockClock)
    start = anyio.current_time()
    await worker.step(step)
    return start, anyio.current_time()


async def test_a_step_carrying_on_makes_up_for_a_late_start_and_no_more_than_one_step():
    worker = SimulatedWorker(FixedCost(STEP_S), kv_blocks=64, speed=1.0)
    _, first_end = await timed(worker, decode("r1", joined=["r1"]))
    await anyio.sleep(0.004)  # the loop was busy elsewhere before it began the next step
    _, end = await timed(worker, decode("r1"))
    assert end - first_end == pytest.approx(STEP_S)  # not 0.014: the GPU did not wait for the loop
    await anyio.sleep(0.5)  # far behind: at most one step's time is made up
    start, end = await timed(worker, decode("r1"))
    assert end == pytest.approx(start)


async def test_a_step_after_an_idle_spell_starts_when_it_is_asked_for():
    worker = SimulatedWorker(FixedCost(STEP_S), kv_blocks=64, speed=1.0)
    await timed(worker, decode("r1", joined=["r1"]))
    await worker.step(Step(StepPlan(0), (), left=("r1",)))
    await anyio.sleep(0.004)
    start, end = await timed(worker, decode("r2", joined=["r2"]))  # nothing it ran before
    assert end - start == pytest.approx(STEP_S)
