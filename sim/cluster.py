"""The simulated pool: workers that execute the core's StepPlans in virtual time.

`Simulation` drives one `scheduler.core.Scheduler` with arrivals from a `Workload` on an
`EventLoop`. Each `SimWorker` turns a plan into a step time with the cost model and, knowing every
request's true output length, reports EOS the way a real engine would. Per-request outcomes are
kept in plain lists and written into one numpy record array at the end; everything else the
results need is counted on the way.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import math
from typing import Hashable

import numpy as np

from scheduler.actions import Rejected, StepPlan
from scheduler.core import Scheduler
from scheduler.decisions import Decision
from scheduler.events import StepResult
from scheduler.outcomes import Outcome
from scheduler.placement import make_placement, placement_rng
from scheduler.policies import Policy, make_policy
from scheduler.request import SLO, Request, Tenant

from .config import SimConfig, check_runnable, latency_budgets
from .steptime import StepPrices
from scheduler.kv import DecodeGrowth
from .engine import EventLoop
from .trace import TraceSpec
from .results import RECORD_DTYPE, RunData, StageInfo, TenantInfo, Timeline, WeightedSamples, WorkerStats
from .workload import Workload, generate, stage_windows

# The record codes written per request, looked up once.
FINISHED, REJECTED, UNFINISHED = Outcome.FINISHED.code, Outcome.REJECTED.code, Outcome.UNFINISHED.code


class StepRun:
    """A plan in execution: `steps` identical steps ending at `ends` (absolute times)."""

    __slots__ = ("plan", "start", "ends", "steps", "reported", "kv_used", "growth", "version", "_durations")

    def __init__(self, plan: StepPlan, start: float, durations: list[float] | np.ndarray, kv_used: int,
                 growth: DecodeGrowth | None, version: int) -> None:
        self.plan = plan
        self.start = start
        # Lists, not arrays: runs are short, where numpy's per-call cost exceeds the work. Adding
        # left to right gives the times of stepping one at a time.
        self.ends = list(itertools.accumulate(durations, initial=start))[1:]
        self.steps = len(durations)
        self._durations: list[float] | None = None  # from the ends, once (accounting and ITL read them)
        self.reported = 0  # steps whose tokens the core has been told of
        self.kv_used = kv_used  # blocks in use during the first step
        self.growth = growth  # how decodes grow into new blocks during later steps
        self.version = version

    def steps_done(self, now: float) -> int:
        return bisect.bisect_right(self.ends, now, 0, self.steps)

    def durations(self, first: int = 0, upto: int | None = None) -> list[float]:
        """Durations of steps first..upto-1 (the gap between a decode's tokens at those steps)."""
        if self._durations is None:
            self._durations = [end - previous for previous, end in zip([self.start] + self.ends, self.ends)]
        return self._durations[first:self.steps if upto is None else upto]


class SimWorker:
    """One simulated worker: step times from the cost model, what it executed, and when each of
    its decoding requests will sample EOS (it knows their true output lengths)."""

    __slots__ = ("id", "prices", "run", "version", "clock", "eos_at", "_eos_heap", "busy_s", "steps",
                 "seq_steps", "token_steps", "kv_block_seconds", "kv_blocks_total", "preemptions")

    def __init__(self, worker_id: int, prices: StepPrices, kv_blocks: int) -> None:
        self.id = worker_id
        self.prices = prices
        self.run: StepRun | None = None  # None while idle
        self.version = 0  # bumped when a run is cut short, so its old finish event is ignored
        self.clock = 0  # steps executed
        self.eos_at: dict[int, int] = {}  # decoding request -> clock after the step that samples EOS
        self._eos_heap: list[tuple[int, int]] = []  # (clock, request), cleaned lazily
        self.busy_s = 0.0
        self.steps = 0
        self.seq_steps = 0
        self.token_steps = 0
        self.kv_block_seconds = 0.0
        self.kv_blocks_total = kv_blocks
        self.preemptions = 0

    def decodes_until(self, rid: int, tokens_left: int) -> None:
        """Request `rid` starts decoding; its EOS comes with the token `tokens_left` steps from now."""
        at = self.clock + tokens_left
        self.eos_at[rid] = at
        heapq.heappush(self._eos_heap, (at, rid))

    def steps_to_eos(self) -> int | float:
        """Steps until the first of its requests samples EOS (math.inf when none decodes)."""
        heap, eos_at = self._eos_heap, self.eos_at
        while heap and eos_at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] - self.clock if heap else math.inf

    def eos_now(self) -> list[int]:
        """Decoding requests whose EOS token was sampled by the step just executed."""
        heap, eos_at, found = self._eos_heap, self.eos_at, []
        while heap and heap[0][0] <= self.clock:
            at, rid = heapq.heappop(heap)
            if eos_at.get(rid) == at:
                found.append(rid)
        return found

    def account(self, run: StepRun) -> None:
        steps, plan = run.steps, run.plan
        if steps == 1:
            busy = run.ends[0] - run.start
            self.busy_s += busy
            self.kv_block_seconds += run.kv_used * busy
        else:  # step by step, as stepping one at a time adds them; blocks in use grow as the decodes fill theirs
            used, growth = run.kv_used, run.growth
            assert growth is not None  # a run of more than one step knows how it grows
            busy_s, kv_block_seconds = self.busy_s, self.kv_block_seconds
            for i, busy in enumerate(run.durations()):
                if i:
                    used += growth.at_step(i)
                busy_s += busy
                kv_block_seconds += used * busy
            self.busy_s, self.kv_block_seconds = busy_s, kv_block_seconds
        self.steps += steps
        self.seq_steps += (plan.decodes + len(plan.chunks)) * steps
        self.token_steps += plan.num_tokens + (steps - 1) * (plan.decodes + len(plan.chunks))
        self.preemptions += len(plan.preempted)

    def running(self) -> StepRun:
        """The run in execution (the worker is not idle)."""
        assert self.run is not None
        return self.run

    def stats(self) -> WorkerStats:
        return WorkerStats(self.busy_s, self.steps, self.seq_steps, self.token_steps, self.kv_block_seconds,
                           self.kv_blocks_total, self.preemptions)


class Simulation:
    """One run of a SimConfig: call `run()` once for its RunData."""

    def __init__(self, config: SimConfig, workload: Workload | None = None, policy: Policy | None = None, *,
                 trace: TraceSpec | None = None, record_decisions: bool = False) -> None:
        """`trace`: also record a timeline trace (`self.trace`, sim.trace); `record_decisions`: keep
        the core's decision records (`self.decisions`, scheduler.decisions)."""
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.workload = workload if workload is not None else generate(
            config.tenants, rng, duration_s=config.duration_s, requests=config.requests, load=config.load)
        check_runnable(config, self.workload)
        specs = self.workload.tenants
        self.tenant_names = [spec.name for spec in specs]
        tenants = [Tenant(s.name, s.weight, s.priority, SLO(s.slo_ttft_ms, s.slo_tpot_ms), s.quota) for s in specs]
        if policy is None:
            policy = make_policy(config.policy.policy, config.policy.policy_params)
        placement = make_placement(config.policy.placement, config.policy.placement_params,
                                   placement_rng(config.seed))
        self.scheduler = Scheduler(tenants, policy, placement, config.scheduler, latency_budgets(config, specs),
                                   record_decisions=record_decisions)
        self.loop = EventLoop()
        cost = config.cluster.cost_model()
        blocks = config.cluster.kv_blocks(config.scheduler)
        self.workers = [SimWorker(w, cost.prices, blocks) for w in range(config.cluster.workers)]
        # Workers that arrivals may have to wake (idle) or cut (running past the next boundary).
        self._idle = {worker.id: worker for worker in self.workers}
        self._long_runs: dict[int, SimWorker] = {}
        self._pool_cuts: dict[int, float] = {}  # workers whose runs were cut for the pool's queue: their ends
        # Heaps of (time, worker id, entry, run), stale entries skipped: long runs with a free slot
        # by the step they would be cut at, and runs by the end of their first unreported step.
        self._cuttable: list[tuple[float, int, int, StepRun]] = []
        self._unreported: list[tuple[float, int, int, StepRun]] = []
        self._entries = itertools.count()
        self._pool_queue = config.policy.placement == "global"  # every worker serves the pool's queue
        for worker in self.workers:
            self.scheduler.add_worker(worker.id, blocks, 0.0)
        # Plain lists, written into the records at the end: per-request bookkeeping indexes them
        # one element at a time, where numpy is slow.
        n = len(self.workload)
        wl = self.workload
        self._arrival, self._tenant = wl.arrival_s.tolist(), wl.tenant.tolist()
        self._prompt_tokens, self._max_new_tokens = wl.prompt_tokens.tolist(), wl.max_new_tokens.tolist()
        self._output_tokens = wl.output_tokens.tolist()  # true lengths
        self._generated = [0] * n  # written when a request ends
        self._admit = [math.nan] * n  # first admission
        self._worker = [-1] * n  # last worker
        self._preemptions = [0] * n
        self._first_token = [math.nan] * n
        self._finish = [math.nan] * n
        self._outcome = [UNFINISHED] * n
        self._reason = [-1] * n
        self._last_token = [0.0] * n  # written when a decoding request is preempted
        self._itl = WeightedSamples()
        self._samples: list[tuple[float, list[float], list[bool]]] = []
        self._last_event = 0.0
        self._sync_before_decisions = config.fast_forward and self.scheduler.reads_service
        # Placement may read every worker's prefix cache, which a run's first step adds to.
        self._sync_before_arrivals = (config.fast_forward and config.scheduler.enable_prefix_caching
                                      and config.cluster.workers > 1)
        # (time, worker) whenever a worker went idle while requests waited in the queue it serves:
        # never under late binding if the core is work-conserving.
        self.idle_while_waiting: list[tuple[float, int]] = []
        # Observers, None when off: each hook below costs one `is None` test then.
        self.trace = None if trace is None else trace.recorder(self.tenant_names, len(self.workload),
                                                                range(config.cluster.workers), config.seed)
        self.decisions: list[Decision] | None = [] if record_decisions else None

    def _records(self) -> np.ndarray:
        wl = self.workload
        records = np.zeros(len(wl), dtype=RECORD_DTYPE)
        records["id"] = np.arange(len(wl))
        records["tenant"] = wl.tenant
        records["arrival"] = wl.arrival_s
        records["prompt_tokens"] = wl.prompt_tokens
        for key, values in (("worker", self._worker), ("admit", self._admit), ("first_token", self._first_token),
                            ("finish", self._finish), ("output_tokens", self._generated), ("outcome", self._outcome),
                            ("reason", self._reason), ("preemptions", self._preemptions)):
            records[key] = values
        return records

    # ----- the run ------------------------------------------------------------------------------

    def run(self) -> RunData:
        if len(self.workload):
            self.loop.at(float(self.workload.arrival_s[0]), self._arrive, 0)
        self.loop.at(0.0, self._sample)
        horizon = self.config.horizon_s
        self.loop.run(math.inf if horizon is None else horizon)
        if self.decisions is not None:
            self.decisions += self.scheduler.drain_decisions()
        return self._run_data()

    def _arrive(self, i: int) -> None:
        wl, now = self.workload, self.loop.now
        self._last_event = now
        prefix = wl.prefixes[i] if wl.prefixes is not None else None
        tenant = self._tenant[i]
        request = Request(i, self.tenant_names[tenant], self._prompt_tokens[i], self._max_new_tokens[i], prefix=prefix)
        if self._sync_before_arrivals or (
                self._sync_before_decisions and self.scheduler.num_queued(tenant) == 0):
            self._sync()  # the tenant becomes backlogged: the policy reads service (VTC's lift)
        verdict = self.scheduler.submit(request, now)
        if self.trace is not None:
            self.trace.submitted(request, now, verdict.reason.value if isinstance(verdict, Rejected) else None)
        if isinstance(verdict, Rejected):
            self._outcome[i] = REJECTED
            self._reason[i] = verdict.reason.code
        else:
            self._queue_grew(self.scheduler.waits_on(i))
        if i + 1 < len(self._arrival):
            self.loop.at(self._arrival[i + 1], self._arrive, i + 1)

    def _queue_grew(self, worker_id: int | None = None) -> None:
        """A request joined the queue `worker_id` serves (None: the global queue): wake idle workers
        and cut runs that go past the next step boundary (the others plan at it anyway)."""
        if worker_id is None:
            for wid in sorted(self._idle):
                self._start_step(self.workers[wid])
            self._cut_for_pool_queue()
        elif worker_id in self._idle:
            self._start_step(self._idle[worker_id])
        elif worker_id in self._long_runs and self.scheduler.has_free_slot(worker_id):
            self._cut(self._long_runs[worker_id])

    def _cut_for_pool_queue(self) -> None:
        """While the pool's queue waits, the worker with a free slot whose step ends first must
        plan when that step ends, as stepping one at a time would: its run is cut there, unless a
        run cut before ends sooner. The next is cut once that plan leaves requests waiting
        (`_start_step`). Cutting every run at once would plan steps that admit nothing."""
        if not self._long_runs or not self.scheduler.has_waiting(next(iter(self._long_runs))):
            return  # every worker serves the pool's queue: one worker's answer is all of theirs
        first = self._first_cuttable()
        if first is not None and (not self._pool_cuts or first[0] < min(self._pool_cuts.values())):
            end, worker = first
            self._pool_cuts[worker.id] = end
            self._cut(worker)

    def _first_cuttable(self) -> tuple[float, SimWorker] | None:
        """The long run with a free slot whose step ends first from now (ties to the lower worker
        id), and that end. A heap of the runs at the step they would be cut at, moved on lazily
        as time passes."""
        heap = self._cuttable
        while heap:
            end, wid, _, run = heap[0]
            worker = self.workers[wid]
            if worker.run is not run or wid not in self._long_runs:
                heapq.heappop(heap)  # it ended, or it was cut
                continue
            now_end = run.ends[self._cut_step(run) - 1]
            if now_end != end:
                heapq.heapreplace(heap, (now_end, wid, next(self._entries), run))
                continue
            return end, worker
        return None

    def _cut_step(self, run: StepRun) -> int:
        """The step of the run that ends first from now (and after its last report)."""
        steps = bisect.bisect_left(run.ends, self.loop.now, 0, run.steps) + 1
        return max(steps, run.reported + 1)  # the final report needs a step of its own

    def _cut(self, worker: SimWorker) -> None:
        """End the worker's run at the first step boundary from now, so its next plan sees the queue."""
        run = worker.running()
        steps = self._cut_step(run)
        if steps < run.steps:
            run.steps = steps
            worker.version += 1
            self.loop.at(run.ends[steps - 1], self._finish_step, worker, worker.version)
        del self._long_runs[worker.id]  # later arrivals come before its end: it is as short as it gets

    def _start_step(self, worker: SimWorker) -> None:
        now = self.loop.now
        if self._sync_before_decisions and self.scheduler.next_plan_reads_service(worker.id):
            self._sync()
        self._pool_cuts.pop(worker.id, None)
        plan = self.scheduler.plan(worker.id, now)
        if self.trace is not None:
            self.trace.step_started(worker.id, plan, now, self.scheduler.kv_usage(worker.id).used, worker.kv_blocks_total)
        self._long_runs.pop(worker.id, None)
        if not plan:
            worker.run = None
            self._idle[worker.id] = worker
            if self.scheduler.has_waiting(worker.id):
                self.idle_while_waiting.append((now, worker.id))
                if self._pool_queue:
                    self._cut_for_pool_queue()  # what it could not admit, the next worker may
            return
        for rid in plan.admitted:
            if math.isnan(self._admit[rid]):  # its first admission
                self._admit[rid] = now
            self._worker[rid] = worker.id
        for rid in plan.preempted:
            self._preemptions[rid] += 1
            if worker.eos_at.pop(rid, None) is not None:
                self._last_token[rid] = now  # it decoded in the step that just ended
        steps = self._steps(worker, plan)
        self._idle.pop(worker.id, None)
        if steps > 1:
            self._long_runs[worker.id] = worker
        growth = self.scheduler.decode_growth(worker.id) if steps > 1 else None
        if steps == 1:
            durations = [worker.prices.plan_step_time(plan)]
        else:
            durations = worker.prices.plan_step_times(plan, steps)
        kv_used = self.scheduler.kv_usage(worker.id).used
        worker.run = run = StepRun(plan, now, durations, kv_used, growth, worker.version)
        self.loop.at(run.ends[-1], self._finish_step, worker, worker.version)
        if steps > 1:
            self._due(worker, run)
            if self._pool_queue and self.scheduler.has_free_slot(worker.id):
                heapq.heappush(self._cuttable, (run.ends[0], worker.id, next(self._entries), run))
        if plan.preempted:
            self._queue_grew(self.scheduler.waits_on(plan.preempted[0]))
        elif self._pool_queue and self.scheduler.has_waiting(worker.id):
            self._cut_for_pool_queue()  # what it did not admit, the next worker may

    def _steps(self, worker: SimWorker, plan: StepPlan) -> int:
        """Steps to run: the plan's repeat, cut at the first EOS (the worker knows true lengths),
        that of a prompt its first step completes included."""
        if plan.repeat == 1 or not self.config.fast_forward:
            return 1
        steps = min(plan.repeat, worker.steps_to_eos())  # an int: the repeat is
        for item in plan.chunks:
            steps = min(steps, self._steps_to_eos(item.request_id))  # type: ignore[arg-type]  # the sim's ids
        return steps  # type: ignore[return-value]

    def _steps_to_eos(self, rid: int) -> int:
        """Steps of a run until the request, whose prompt its first step completes, samples EOS."""
        return self._output_tokens[rid] - self.scheduler.generated(rid)

    def _finish_step(self, worker: SimWorker, version: int) -> None:
        if version != worker.version:
            return  # this run was cut short; its new finish event is the one that counts
        self._last_event = self.loop.now
        run = worker.running()
        worker.account(run)
        if self.trace is not None:
            self.trace.step_finished(worker.id, self.loop.now, run.steps)
        self._report(worker, run.steps, final=True)
        self._start_step(worker)

    def _sync(self) -> None:
        """Tell the core of every step that ended by now in runs still going, as stepping one at a
        time would have: decisions that read service (VTC counters) must see it."""
        now, heap, due = self.loop.now, self._unreported, []
        while heap and heap[0][0] <= now:  # runs whose first unreported step ended by now
            _, wid, _, run = heapq.heappop(heap)
            if self.workers[wid].run is run and run.reported < run.steps - 1:
                due.append(wid)
        for wid in sorted(set(due)):  # in worker order, as before (the policy adds up what they report)
            worker = self.workers[wid]
            run = worker.running()
            self._report(worker, min(run.steps_done(now), run.steps - 1), final=False)
            self._due(worker, run)

    def _due(self, worker: SimWorker, run: StepRun) -> None:
        """When `_sync` next has steps of the run to report: the end of its first unreported step
        but the last (which its final report reports)."""
        if run.reported < run.steps - 1:
            heapq.heappush(self._unreported, (run.ends[run.reported], worker.id, next(self._entries), run))

    def _report(self, worker: SimWorker, upto: int, final: bool) -> None:
        """Report steps run.reported..upto-1 of the worker's run: the end of the run, or progress."""
        run, now = worker.running(), self.loop.now
        done = run.reported
        eos = self._chunk_eos(run.plan, upto) if final and not done else []
        worker.clock += upto - done
        if final:
            eos += worker.eos_now()  # a run is cut at its first EOS, so they all fall on its last step
        run.reported = upto
        outputs = self.scheduler.complete(worker.id, StepResult(upto - done, frozenset(eos), final), now)
        if outputs.decoded:
            if upto - done == 1:
                self._itl.add_one(run.ends[done] - (run.ends[done - 1] if done else run.start), outputs.decoded)
            else:
                self._itl.add(run.durations(done, upto), outputs.decoded)
        if not done and upto > 1 and run.plan.chunks:  # the prompts its first step completed decode after it
            self._itl.add(run.durations(1, upto), len(outputs.emitted))
        first_end = run.ends[done]
        if self.trace is not None and (outputs.emitted or outputs.finished):
            self.trace.step_outputs(worker.id, outputs, first_end, now)
        for output in outputs.finished:
            rid = output.request_id
            self._finish[rid] = now
            self._outcome[rid] = FINISHED
            self._generated[rid] = output.output_tokens
            worker.eos_at.pop(rid, None)
        for sampled in outputs.emitted:  # the last chunk of a prefill sampled a token
            rid = sampled.request_id
            if sampled.first:
                self._first_token[rid] = first_end
            else:  # the first token after a recompute
                self._itl.add_one(first_end - self._last_token[rid], 1)
            generated = self.scheduler.generated(rid)
            if generated is not None:  # it goes on decoding
                worker.decodes_until(rid, self._output_tokens[rid] - generated)  # type: ignore[arg-type]

    def _chunk_eos(self, plan: StepPlan, steps: int) -> list[Hashable]:
        """Requests whose last prefill chunk samples their last token, or whose decode steps after
        it in a run of `steps` do (the run is cut at the first EOS, so it falls on its last step)."""
        generated, true_length = self.scheduler.generated, self._output_tokens
        return [item.request_id for item in plan.chunks
                if item.samples and generated(item.request_id) + steps >= true_length[item.request_id]]  # type: ignore[operator]

    def _sample(self) -> None:
        self._sync()
        scheduler = self.scheduler
        self._samples.append((self.loop.now, scheduler.tenant_service(), scheduler.backlogged()))
        if self.trace is not None or self.decisions is not None:
            self._observe()
        if self.loop.pending():  # keep sampling only while something else is still to happen
            self.loop.at(self.loop.now + self.config.sample_interval_s, self._sample)

    def _observe(self) -> None:
        """At a sample: the tenants' queues and service into the trace; the decision records so far
        out of the core (so it holds one interval's)."""
        if self.trace is not None:
            self.trace.tenants_sampled(self.loop.now, self.scheduler.tenant_queued(), self._samples[-1][1])
        if self.decisions is not None:
            self.decisions += self.scheduler.drain_decisions()

    # ----- results ------------------------------------------------------------------------------

    def _worker_stats(self, worker: SimWorker) -> WorkerStats:
        cache = self.scheduler.prefix_cache_stats(worker.id)
        return dataclasses.replace(worker.stats(), prefix_queries=cache.queries, prefix_hits=cache.hits)

    def _run_data(self) -> RunData:
        for rid in self.scheduler.live_ids():  # what requests cut off by the horizon generated
            self._generated[rid] = self.scheduler.generated(rid)
        records = self._records()
        times, service, backlogged = zip(*self._samples)
        timeline = Timeline(np.array(times), np.array(service, dtype=float), np.array(backlogged, dtype=bool))
        itl_values, itl_weights = self._itl.arrays()
        specs = self.workload.tenants
        return RunData(
            records=records,
            itl_values=itl_values,
            itl_weights=itl_weights,
            duration_s=self._last_event,
            tenants=tuple(TenantInfo(s.name, s.weight, s.slo_ttft_ms, s.slo_tpot_ms) for s in specs),
            workers=tuple(self._worker_stats(worker) for worker in self.workers),
            timeline=timeline,
            service_weights=tuple(self.scheduler.service_weights.as_list()),
            served=np.array(self.scheduler.tenant_tokens(), dtype=np.int64).T,
            stages=tuple(StageInfo(*window) for window in stage_windows(specs, self.config.load)),
        )


def simulate(config: SimConfig, workload: Workload | None = None, policy: Policy | None = None) -> RunData:
    return Simulation(config, workload, policy).run()
