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
from scheduler.runtime.worker import Job, Step, wait_until

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


async def test_last_step_is_the_steps_span_on_the_gpus_timeline():
    worker = SimulatedWorker(FixedCost(STEP_S), kv_blocks=64, speed=1.0)
    assert worker.last_step is None
    start, end = await timed(worker, decode("r1", joined=["r1"]))
    assert worker.last_step == pytest.approx((start, end))
    await anyio.sleep(0.004)
    await timed(worker, decode("r1"))
    assert worker.last_step == pytest.approx((end, end + STEP_S))  # carried on from where the GPU was


async def test_a_wait_on_the_virtual_clock_ends_at_its_deadline():
    start = anyio.current_time()
    await wait_until(start + 0.0105)
    assert anyio.current_time() == pytest.approx(start + 0.0105)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_wait_on_the_real_clock_never_ends_before_its_deadline(backend):
    # the real clock, as the serving runtime uses it: only that no wait ends early is asserted,
    # never how late one ends (a loaded machine makes every wait late)
    async def late_by() -> list[float]:
        lateness = []
        for offset in (0.0, 0.0004, 0.0013, 0.0021):
            deadline = anyio.current_time() + offset
            await wait_until(deadline)
            lateness.append(anyio.current_time() - deadline)
        return lateness

    assert min(anyio.run(late_by, backend=backend)) >= 0
