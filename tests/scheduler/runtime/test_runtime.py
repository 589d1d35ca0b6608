"""The anyio runtime on asyncio and trio: streaming, endings, backpressure, idle workers, failures."""

from __future__ import annotations

import itertools
import math

import anyio
import pytest
from runtime_helpers import FixedCost, small_pool

from scheduler.actions import RejectReason
from scheduler.events import StepResult
from scheduler.request import Request
from scheduler.runtime import (RequestCancelled, RequestRejected, Runtime, SimPrompt, SimulatedWorker, StepDone,
                               synthetic_token)

pytestmark = pytest.mark.anyio


def pools_free(scheduler) -> bool:
    return all(worker.pool.used == 0 for worker in scheduler.workers.values())


async def test_tokens_stream_in_order_and_the_request_finishes():
    scheduler, workers = small_pool()
    async with Runtime(scheduler, workers) as runtime:
        async with runtime.submit(Request("r1", "a", 10, 5)) as handle:
            tokens = [token async for token in handle]
    assert tokens == [synthetic_token(i) for i in range(5)]
    assert (handle.outcome, handle.reason, handle.tokens) == ("finished", "length", 5)
    assert handle.arrival <= handle.admitted_at <= handle.first_token_at <= handle.finished_at
    assert runtime.counts == {"submitted": 1, "finished": 1, "cancelled": 0, "rejected": 0}


async def test_a_payload_with_the_true_length_ends_at_eos():
    scheduler, workers = small_pool()
    async with Runtime(scheduler, workers) as runtime:
        async with runtime.submit(Request("r1", "b", 6, 50), SimPrompt("hi", output_tokens=3)) as handle:
            tokens = await handle.collect()
    assert len(tokens) == 3 and (handle.outcome, handle.reason) == ("finished", "eos")


async def test_rejections_raise_with_their_reason():
    scheduler, workers = small_pool(kv_blocks=16)  # 64 tokens per worker
    async with Runtime(scheduler, workers) as runtime:
        with pytest.raises(RequestRejected) as unknown:
            runtime.submit(Request("r1", "nobody", 4, 4))
        with pytest.raises(RequestRejected) as too_long:
            runtime.submit(Request("r2", "a", 60, 10))
    assert unknown.value.reason is RejectReason.UNKNOWN_TENANT
    assert too_long.value.reason is RejectReason.PROMPT_TOO_LONG and "64" in too_long.value.detail
    assert runtime.counts["rejected"] == 2 and runtime.counts["submitted"] == 2


async def test_closing_the_handle_cancels_the_request_and_frees_its_blocks_at_once():
    scheduler, workers = small_pool()
    async with Runtime(scheduler, workers) as runtime:
        async with runtime.submit(Request("r1", "a", 10, 200)) as handle:
            async for _ in handle:
                if handle.tokens >= 2:
                    break
            assert scheduler.workers[0].pool.used > 0
        assert (handle.outcome, handle.reason) == ("cancelled", "closed")
        assert pools_free(scheduler) and not scheduler.live and not runtime.live


async def test_a_deadline_cancels_the_request():
    scheduler, workers = small_pool(speed=1.0, step_s=0.01)  # 200 tokens would take 2 s
    async with Runtime(scheduler, workers) as runtime:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(None) as scope:
                async with runtime.submit(Request("r1", "a", 10, 200)) as handle:
                    async for _ in handle:
                        scope.deadline = -math.inf  # it passes once the first token is out, however slow the machine
        assert (handle.outcome, handle.reason) == ("cancelled", "cancelled")
        assert 1 <= handle.tokens < 200 and pools_free(scheduler)


async def test_a_consumer_that_never_reads_is_cut_off_and_stalls_nobody_else():
    scheduler, workers = small_pool(max_num_seqs=4)
    async with Runtime(scheduler, workers, stream_buffer=4) as runtime:
        idle = runtime.submit(Request("idle", "a", 8, 50))
        async with runtime.submit(Request("reader", "b", 8, 30)) as reader:
            tokens = await reader.collect()
        await idle.wait()
        assert len(tokens) == 30 and reader.outcome == "finished"
        assert (idle.outcome, idle.reason, idle.tokens) == ("cancelled", "slow_consumer", 4)
        assert pools_free(scheduler)
        with pytest.raises(RequestCancelled, match="slow_consumer"):
            async with idle:
                assert [t async for t in idle] == [synthetic_token(i) for i in range(4)]


class CountingScheduler:
    """Counts plan() calls of a wrapped scheduler."""

    def __init__(self, scheduler) -> None:
        self.inner = scheduler
        self.plans = 0

    def plan(self, worker, now):
        self.plans += 1
        return self.inner.plan(worker, now)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_idle_workers_wait_for_work_without_polling():
    scheduler, workers = small_pool(workers=2)
    counting = CountingScheduler(scheduler)
    async with Runtime(counting, workers) as runtime:
        async with runtime.submit(Request("r1", "a", 4, 3)) as handle:
            await handle.collect()
        await anyio.sleep(0.01)
        plans = counting.plans
        await anyio.sleep(0.1)
        assert counting.plans == plans  # nothing ran, nothing planned
        async with runtime.submit(Request("r2", "a", 4, 3)) as handle:
            assert len(await handle.collect()) == 3  # a submission wakes a worker
    assert plans <= 3 + 2 + 1  # 3 steps, one empty plan per worker, one for the wake-up race


class RecordingWorker(SimulatedWorker):
    def __init__(self) -> None:
        super().__init__(FixedCost(0.0), 64, speed=0.0)
        self.joined, self.left = [], []

    async def step(self, step):
        self.joined += [(job.id, job.payload, job.generated) for job in step.joined]
        self.left += step.left
        return await super().step(step)


async def test_a_worker_learns_of_each_request_with_its_payload_and_forgets_it_after():
    scheduler, _ = small_pool()
    worker = RecordingWorker()
    async with Runtime(scheduler, [worker]) as runtime:
        for rid in ("r1", "r2"):
            async with runtime.submit(Request(rid, "a", 6, 3), payload=f"prompt {rid}") as handle:
                await handle.collect()
        async with runtime.submit(Request("r3", "a", 6, 3)) as handle:  # its plan releases r2
            await handle.collect()
    assert worker.joined == [("r1", "prompt r1", 0), ("r2", "prompt r2", 0), ("r3", None, 0)]
    assert worker.left[:2] == ["r1", "r2"]


class FailingWorker(SimulatedWorker):
    def __init__(self, fail_at: int) -> None:
        super().__init__(FixedCost(0.0), 64, speed=0.0)
        self.fail_at = fail_at

    async def step(self, step):
        if self.steps + 1 >= self.fail_at:
            raise RuntimeError("the engine crashed")
        return await super().step(step)


async def test_a_failed_worker_hands_its_requests_to_the_others():
    scheduler, workers = small_pool(workers=1)
    async with Runtime(scheduler, {0: FailingWorker(fail_at=4), 1: workers[0]}) as runtime:
        handles = [runtime.submit(Request(f"r{i}", "ab"[i % 2], 6, 8)) for i in range(6)]
        results = []
        for handle in handles:
            async with handle:
                results.append(await handle.collect())
    assert list(scheduler.workers) == [1]
    assert all(tokens == [synthetic_token(i) for i in range(8)] for tokens in results)  # none twice
    assert runtime.counts["finished"] == 6


async def test_losing_the_last_worker_cancels_what_is_live():
    scheduler, _ = small_pool()
    async with Runtime(scheduler, [FailingWorker(fail_at=2)]) as runtime:
        handle = runtime.submit(Request("r1", "a", 6, 8))
        await handle.wait()
        with pytest.raises(RequestRejected) as rejected:
            runtime.submit(Request("r2", "a", 6, 8))
    assert (handle.outcome, handle.reason) == ("cancelled", "no_workers")
    assert rejected.value.reason is RejectReason.NO_WORKERS
    handle.cancel()


async def test_shutdown_ends_live_requests_as_cancelled():
    scheduler, workers = small_pool(speed=1.0, step_s=0.005)
    async with Runtime(scheduler, workers) as runtime:
        handle = runtime.submit(Request("r1", "a", 6, 100))
        await anyio.sleep(0.03)
    assert (handle.outcome, handle.reason) == ("cancelled", "shutdown")
    with pytest.raises(RequestCancelled, match="shutdown"):
        async with handle:
            await handle.collect()
    with pytest.raises(RuntimeError, match="not running"):
        runtime.submit(Request("r2", "a", 6, 10))


async def test_the_core_is_only_called_from_the_event_loop_thread():
    scheduler, workers = small_pool()
    async with Runtime(scheduler, workers) as runtime:
        with pytest.raises(RuntimeError, match="event loop"):
            await anyio.to_thread.run_sync(runtime.submit, Request("r1", "a", 6, 10))


class EosWorker:
    """A worker of my own: every request ends at its first token."""

    kv_blocks = 64

    async def step(self, step):
        await anyio.sleep(0)
        sampled = [item.request_id for item in step.items if item.samples]
        return StepDone(StepResult(1, frozenset(sampled)), {rid: "<eos>" for rid in sampled})


async def test_any_engine_with_a_step_method_plugs_in():
    scheduler, _ = small_pool()
    async with Runtime(scheduler, [EosWorker()]) as runtime:
        async with runtime.submit(Request("r1", "a", 6, 10)) as handle:
            assert await handle.collect() == ["<eos>"]
    assert handle.reason == "eos"


async def test_every_request_ends_exactly_once_whatever_ends_it():
    scheduler, workers = small_pool(workers=2, kv_blocks=32, max_queued=20)
    ended = []
    # Which 20 of the 80 the queue takes depends on the order the tasks first run in, which trio
    # shuffles (under Hypothesis, which the test suite imports): every fifth request *taken* leaves
    # early, so that some do whichever are taken (choosing by `i` could choose none of them).
    taken = itertools.count()
    async with Runtime(scheduler, workers, stream_buffer=8) as runtime:
        async def consume(i: int) -> None:
            try:
                handle = runtime.submit(Request(i, "ab"[i % 2], 4 + i % 7, 6 + i % 13))
            except RequestRejected as err:
                ended.append((i, "rejected", err.reason.value))
                return
            leaves_early = next(taken) % 5 == 0
            async with handle:
                async for _ in handle:
                    if leaves_early and handle.tokens >= 2:
                        break  # this consumer leaves early
            ended.append((i, handle.outcome, handle.reason))

        async with anyio.create_task_group() as task_group:
            for i in range(80):
                task_group.start_soon(consume, i)
        assert pools_free(scheduler) and not scheduler.live
    assert sorted(i for i, _, _ in ended) == list(range(80))
    outcomes = [outcome for _, outcome, _ in ended]
    assert runtime.counts == {"submitted": 80, "finished": outcomes.count("finished"),
                              "cancelled": outcomes.count("cancelled"), "rejected": outcomes.count("rejected")}
    assert outcomes.count("rejected") > 0 and outcomes.count("cancelled") > 0 and outcomes.count("finished") > 0
    assert {reason for _, outcome, reason in ended if outcome == "rejected"} == {"queue_full"}


class NonsenseWorker(SimulatedWorker):
    """Claims two steps ran when it was asked for one."""

    async def step(self, step):
        done = await super().step(step)
        return StepDone(StepResult(2, done.result.eos), done.tokens)


async def test_a_worker_that_reports_nonsense_leaves_the_pool():
    scheduler, workers = small_pool()
    async with Runtime(scheduler, {0: NonsenseWorker(FixedCost(0.0), 64, 0.0), 1: workers[0]}) as runtime:
        async with runtime.submit(Request("r1", "a", 6, 5)) as handle:
            assert len(await handle.collect()) == 5
    assert list(scheduler.workers) == [1] and handle.outcome == "finished"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio may shuffle the tasks it wakes together
async def test_a_first_token_is_handed_over_before_the_decoding_requests_tokens_of_its_step():
    scheduler, workers = small_pool(step_s=0.001, speed=1.0)
    worker, seen = workers[0], []

    async def read(handle) -> None:
        async for _ in handle:
            seen.append((handle.id, worker.steps))  # the step whose token woke it: the next one has not ended

    async with Runtime(scheduler, workers) as runtime, anyio.create_task_group() as task_group:
        task_group.start_soon(read, runtime.submit(Request("old", "a", 4, 6)))
        with anyio.fail_after(5):
            while not seen:
                await anyio.sleep(0)
        task_group.start_soon(read, runtime.submit(Request("new", "b", 4, 2)))
    step = next(s for rid, s in seen if rid == "new")
    assert [rid for rid, s in seen if s == step] == ["new", "old"]  # the decode set comes first in the report
