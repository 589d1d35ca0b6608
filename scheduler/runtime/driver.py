"""The anyio driver of the scheduler core: `Runtime` owns the core, a task group with one loop per
worker, and a bounded token stream per request.

Each worker loop asks the core for a plan, runs it on its worker, reports the result and streams
the tokens; a worker with nothing to run waits on an Event that a submission (or a preemption
elsewhere) sets, so nothing polls. The core is not thread-safe: the runtime calls it only from
tasks of its own event loop, and passes it the time from an injectable clock (seconds since the
runtime started), so a virtual clock (trio's MockClock) replays the simulator's schedule.

Every submitted request ends exactly once: rejected at submit (`RequestRejected`), finished, or
cancelled (by its consumer, as a slow consumer, when the pool loses its last worker, or when the
runtime shuts down).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Hashable

import anyio

from scheduler.actions import Emitted, Rejected, StepOutputs, StepPlan
from scheduler.batch import BatchMirror
from scheduler.core import Scheduler
from scheduler.errors import ProtocolError, WorkerError
from scheduler.outcomes import FinishReason, Outcome
from scheduler.request import Request, RequestState
from scheduler.trace import TraceRecorder

from .handle import RequestHandle, RequestRejected
from .worker import Job, Step, StepDone, Worker

log = logging.getLogger("fairbatch.runtime")

DEFAULT_STREAM_BUFFER = 512  # tokens a consumer may fall behind before it is cut off


class Lane:
    """One worker as the runtime drives it: the engine, its batch mirror, what it must forget."""

    __slots__ = ("id", "worker", "mirror", "left")

    def __init__(self, worker_id: int, worker: Worker) -> None:
        self.id = worker_id
        self.worker = worker
        self.mirror = BatchMirror()
        self.left: list[Hashable] = []  # requests gone since the worker's last step


class Runtime:
    """`async with Runtime(scheduler, workers) as rt:` then `rt.submit(request)` from its tasks."""

    def __init__(self, scheduler: Scheduler, workers: Mapping[int, Worker] | Sequence[Worker], *,
                 clock: Callable[[], float] | None = None, metrics: Any = None,
                 stream_buffer: int = DEFAULT_STREAM_BUFFER, trace: TraceRecorder | None = None) -> None:
        """`trace`: a scheduler.trace.TraceRecorder to feed (its to_json() is the timeline trace)."""
        if isinstance(stream_buffer, bool) or not isinstance(stream_buffer, int) or stream_buffer < 1:
            raise ValueError(f"stream_buffer: must be an integer >= 1, got {stream_buffer!r}")
        workers = dict(workers) if isinstance(workers, Mapping) else dict(enumerate(workers))
        self.scheduler = scheduler
        self.metrics = metrics  # a scheduler.metrics.Metrics, or None
        self.trace = trace
        # Requests submitted, then by how they ended (plain string keys: the outcomes' values).
        self.counts = {"submitted": 0} | {outcome.value: 0 for outcome in Outcome if outcome.ended}
        self._lanes = {wid: Lane(wid, worker) for wid, worker in sorted(workers.items())}
        self._clock = clock or anyio.current_time
        self._buffer = stream_buffer
        self._start = 0.0
        self._live: dict[Hashable, RequestHandle] = {}
        self._idle: dict[int, anyio.Event] = {}  # idle workers, woken by new work
        self._task_group: anyio.abc.TaskGroup | None = None
        self._thread: int | None = None

    # ----- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self._start = self._clock()
        self._thread = threading.get_ident()
        for lane in self._lanes.values():
            self.scheduler.add_worker(lane.id, lane.worker.kv_blocks, self.now())
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        for wid in self._lanes:  # every worker starts idle, so the first submission wakes worker 0 first
            wake = self._idle[wid] = anyio.Event()
            self._task_group.start_soon(self._worker_loop, wid, wake, name=f"fairbatch worker {wid}")
        return self

    async def __aexit__(self, *exc_info) -> bool | None:
        task_group, self._task_group = self._task_group, None
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(*exc_info)
        finally:
            for handle in list(self._live.values()):
                self._cancel(handle, FinishReason.SHUTDOWN)

    @property
    def running(self) -> bool:
        return self._task_group is not None

    def now(self) -> float:
        """Seconds since the runtime started, from its clock: the time the core is given."""
        return self._clock() - self._start

    @property
    def live(self) -> Mapping[Hashable, RequestHandle]:
        """Requests submitted and not yet ended, by id."""
        return self._live

    # ----- requests -----------------------------------------------------------------------------

    def submit(self, request: Request, payload: Any = None) -> RequestHandle:
        """Queue a request; its handle streams the tokens. Raises RequestRejected with the reason."""
        self._check_caller()
        if self._task_group is None:
            raise RuntimeError("the runtime is not running: submit inside `async with Runtime(...)`")
        now = self.now()
        self.counts["submitted"] += 1
        verdict = self.scheduler.submit(request, now)
        if self.trace is not None:
            self.trace.submitted(request, now, verdict.reason.value if isinstance(verdict, Rejected) else None)
        if isinstance(verdict, Rejected):
            self.counts[Outcome.REJECTED.value] += 1
            if self.metrics is not None:
                self.metrics.rejected(request.tenant, verdict.reason)
            raise RequestRejected(verdict)
        handle = RequestHandle(self, request, payload, now, self._buffer)
        self._live[request.id] = handle
        self._wake_idle()
        return handle

    def _cancel(self, handle: RequestHandle, reason: FinishReason, outcome: Outcome = Outcome.CANCELLED) -> None:
        """End a live request as cancelled (or finished early), freeing its KV blocks at once."""
        if handle.outcome is not None:
            return
        self._check_caller()
        status = self.scheduler.request_status(handle.id)
        if status is not None and status.state is RequestState.RUNNING:
            lane = self._lanes.get(status.worker)
            if lane is not None:  # its step may be in flight: the mirror must not expect its tokens
                lane.mirror.drop(handle.id)
                lane.left.append(handle.id)
        now = self.now()
        self.scheduler.cancel(handle.id, now)
        if self.trace is not None:
            self.trace.cancelled(handle.id, now)
        self._end(handle, outcome, reason, now)

    def _end(self, handle: RequestHandle, outcome: Outcome, reason: FinishReason, now: float) -> None:
        del self._live[handle.id]
        handle._end(outcome, reason, now)
        self.counts[outcome.value] += 1
        if self.metrics is not None:
            self.metrics.request_ended(handle, outcome)

    def _check_caller(self) -> None:
        if self._thread != threading.get_ident():
            raise RuntimeError("the runtime must be called from its own event loop's thread")

    # ----- worker loops -------------------------------------------------------------------------

    async def _worker_loop(self, wid: int, wake: anyio.Event) -> None:
        """Idle until woken, then step while there is work; a worker that fails leaves."""
        lane = self._lanes[wid]
        while True:
            await wake.wait()
            while await self._step(lane):
                pass
            if lane.id not in self._lanes:
                return
            wake = self._idle[wid] = anyio.Event()

    async def _step(self, lane: Lane) -> bool:
        """Plan, run and report one step; False when there was nothing to run or the worker failed."""
        plan = self.scheduler.plan(lane.id, self.now())
        if self.trace is not None:
            self._trace_plan(lane, plan)
        step = self._begin(lane, plan)
        self._wake_idle()  # work this worker left (or preempted) goes to the next idle one
        if step is None:
            return False
        try:
            done = await lane.worker.step(step)
            if not isinstance(done, StepDone) or done.result.steps != 1:
                raise WorkerError(f"worker {lane.id}: step() must return a StepDone of one step, got {done!r}")
            outputs = self.scheduler.complete(lane.id, done.result, self.now())
            if self.trace is not None:
                self._trace_outputs(lane, outputs)
        except ProtocolError:
            raise  # the runtime's own bug: let the task group end everything loudly
        except Exception:  # the engine failed or reported nonsense: it leaves, its requests are requeued
            log.exception("worker %s failed; its requests go back to the queue", lane.id)
            self._remove(lane)
            return False
        self._deliver(lane, outputs, done.tokens)
        return True

    def _trace_plan(self, lane: Lane, plan: StepPlan) -> None:
        kv = self.scheduler.kv_usage(lane.id)
        self.trace.step_started(lane.id, plan, self.now(), kv.used, kv.total)

    def _trace_outputs(self, lane: Lane, outputs: StepOutputs) -> None:
        now = self.now()
        self.trace.step_finished(lane.id, now, outputs.steps)
        self.trace.step_outputs(lane.id, outputs, now, now)
        self.trace.tenants_sampled(now, self.scheduler.tenant_queued(), self.scheduler.tenant_service())

    def _begin(self, lane: Lane, plan: StepPlan) -> Step | None:
        """Apply a plan to the mirror and the handles; the Step to run, None for an empty plan."""
        items = lane.mirror.step(plan)
        lane.left += plan.released + plan.preempted
        if plan.preempted and self.metrics is not None:
            self.metrics.preempted(len(plan.preempted))
        if not plan:
            return None
        now = self.now()
        joined = []
        for rid in plan.admitted:
            handle = self._live[rid]
            if handle.admitted_at is None:
                handle.admitted_at = now
                if self.metrics is not None:
                    self.metrics.admitted(handle)
            request = handle.request
            joined.append(Job(rid, request.prompt_tokens, request.max_new_tokens, self.scheduler.generated(rid),
                              handle.payload))
        step = Step(plan, items, tuple(joined), tuple(lane.left))
        lane.left.clear()
        return step

    def _deliver(self, lane: Lane, outputs: StepOutputs, tokens: Mapping[Hashable, str]) -> None:
        """Stream the step's tokens and end the requests it finished. First tokens go first: on
        asyncio, consumers wake (and write) in the order they are given tokens, and a first
        token's delay adds to a TTFT, another token's only to one inter-token gap."""
        now = self.now()
        generated: dict[str, int] = {}
        for out in sorted(lane.mirror.report(outputs), key=self._not_first):
            handle = self._live.get(out.request_id)
            if handle is None:
                continue  # cut off as a slow consumer earlier in this report
            if not isinstance(out, Emitted):
                self._end(handle, Outcome.FINISHED, out.reason, now)
                continue
            if handle.first_token_at is None:
                handle.first_token_at = now
                if self.metrics is not None:
                    self.metrics.first_token(handle)
                    self.metrics.prefilled(handle.tenant, handle.request.prompt_tokens)
            problem = handle._push(tokens.get(out.request_id, ""))
            if problem is not None:
                self._cancel(handle, problem)
            else:
                generated[handle.tenant] = generated.get(handle.tenant, 0) + 1
        if self.metrics is not None:
            self.metrics.generated(generated)

    def _not_first(self, out: Any) -> bool:
        """False for an output of a request still waiting for its first token (a stable sort keeps
        each request's own outputs in order: its token, then its end)."""
        handle = self._live.get(out.request_id)
        return handle is None or handle.first_token_at is not None

    def _remove(self, lane: Lane) -> None:
        """Take a failed worker out; with none left, nothing could run: cancel what is live."""
        del self._lanes[lane.id]
        self._idle.pop(lane.id, None)
        now = self.now()
        removed = self.scheduler.remove_worker(lane.id, now)
        for rid in removed.ended:  # too long for every worker left: the core cancelled them
            self._end(self._live[rid], Outcome.CANCELLED, FinishReason.NO_WORKER_FITS, now)
        if not self._lanes:
            for handle in list(self._live.values()):
                self._cancel(handle, FinishReason.NO_WORKERS)
        self._wake_idle()

    def _wake_idle(self) -> None:
        """Wake the first idle worker (by id, as the simulator does) that has requests waiting; it
        wakes the next one after planning, if any are left."""
        for wid in sorted(self._idle):
            if self.scheduler.has_waiting(wid):
                self._idle.pop(wid).set()
                return

    # ----- gauges -------------------------------------------------------------------------------

    def sample_metrics(self) -> None:
        """Set the gauges (running, waiting, KV usage, service) from the core's state now."""
        if self.metrics is not None:
            self.metrics.sample(self.scheduler)
