"""The simulated pool: workers that execute the core's StepPlans in virtual time.

`Simulation` drives one `scheduler.core.Scheduler` with arrivals from a `Workload` on an
`EventLoop`. Each `SimWorker` turns a plan into a step time with the cost model and, knowing every
request's true output length, reports EOS the way a real engine would. Per-request outcomes are
written into one numpy record array; everything else the results need is counted on the way.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from scheduler.actions import Emitted, Finished, Rejected, StepPlan
from scheduler.core import Scheduler
from scheduler.events import StepResult
from scheduler.policies import Policy, make_policy
from scheduler.request import SLO, Request, Tenant

from .config import SimConfig
from .costmodel import RooflineCostModel, causal_pairs
from .engine import EventLoop
from .results import REASONS, RECORD_DTYPE, RunData, TenantInfo, Timeline, WorkerStats
from .workload import Workload, generate

FINISHED, REJECTED, UNFINISHED = 0, 1, 3


class SimWorker:
    """One simulated worker: step times from the cost model, and what it executed."""

    __slots__ = ("id", "cost", "idle", "busy_s", "steps", "seq_steps", "token_steps", "kv_block_seconds",
                 "kv_blocks_total", "preemptions")

    def __init__(self, worker_id: int, cost: RooflineCostModel, kv_blocks: int) -> None:
        self.id = worker_id
        self.cost = cost
        self.idle = True
        self.busy_s = 0.0
        self.steps = 0
        self.seq_steps = 0
        self.token_steps = 0
        self.kv_block_seconds = 0.0
        self.kv_blocks_total = kv_blocks
        self.preemptions = 0

    def step_time(self, plan: StepPlan) -> float:
        tokens = pairs = context = 0
        for item in plan.items:
            tokens += item.num_tokens
            if item.is_decode:
                context += item.context + 1
            else:
                pairs += causal_pairs(item.num_tokens, item.context)
        return self.cost.step_time(tokens, pairs, context)

    def account(self, plan: StepPlan, seconds: float, kv_used: int) -> None:
        self.busy_s += seconds
        self.steps += 1
        self.seq_steps += len(plan.items)
        self.token_steps += plan.num_tokens
        self.kv_block_seconds += kv_used * seconds
        self.preemptions += len(plan.preempted)

    def stats(self) -> WorkerStats:
        return WorkerStats(self.busy_s, self.steps, self.seq_steps, self.token_steps, self.kv_block_seconds,
                           self.kv_blocks_total, self.preemptions)


class Simulation:
    """One run of a SimConfig: call `run()` once for its RunData."""

    def __init__(self, config: SimConfig, workload: Workload | None = None, policy: Policy | None = None) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.workload = workload if workload is not None else generate(
            config.tenants, rng, duration_s=config.duration_s, requests=config.requests, load=config.load)
        specs = self.workload.tenants
        self.tenant_names = [spec.name for spec in specs]
        tenants = [Tenant(s.name, s.weight, s.priority, SLO(s.slo_ttft_ms, s.slo_tpot_ms), s.quota) for s in specs]
        if policy is None:
            policy = make_policy(config.policy.policy, config.policy.policy_params)
        self.scheduler = Scheduler(tenants, policy, config.policy.placement, config.scheduler)
        self.loop = EventLoop()
        cost = config.cluster.cost_model()
        blocks = cost.kv_blocks(config.scheduler.block_size)
        self.workers = [SimWorker(w, cost, blocks) for w in range(config.cluster.workers)]
        for worker in self.workers:
            self.scheduler.add_worker(worker.id, blocks, 0.0)
        self.records = self._empty_records()
        # Plain lists: per-token bookkeeping indexes them one element at a time, where numpy is slow.
        self._emitted = [0] * len(self.workload)
        self._last_token = [0.0] * len(self.workload)
        self._output_tokens = self.workload.output_tokens.tolist()
        self._first_token = [math.nan] * len(self.workload)
        self._itl: Counter[float] = Counter()
        self._samples: list[tuple[float, list[float], list[bool]]] = []
        self._last_event = 0.0
        # (time, worker) whenever a worker went idle while requests waited in the queue it serves:
        # never under late binding if the core is work-conserving.
        self.idle_while_waiting: list[tuple[float, int]] = []

    def _empty_records(self) -> np.ndarray:
        wl = self.workload
        records = np.zeros(len(wl), dtype=RECORD_DTYPE)
        records["id"] = np.arange(len(wl))
        records["tenant"] = wl.tenant
        records["worker"] = -1
        records["arrival"] = wl.arrival_s
        for key in ("admit", "first_token", "finish"):
            records[key] = np.nan
        records["prompt_tokens"] = wl.prompt_tokens
        records["outcome"] = UNFINISHED
        records["reason"] = -1
        return records

    # ----- the run ------------------------------------------------------------------------------

    def run(self) -> RunData:
        if len(self.workload):
            self.loop.at(float(self.workload.arrival_s[0]), self._arrive, 0)
        self.loop.at(0.0, self._sample)
        horizon = self.config.horizon_s
        self.loop.run(math.inf if horizon is None else horizon)
        return self._run_data()

    def _arrive(self, i: int) -> None:
        wl, now = self.workload, self.loop.now
        self._last_event = now
        request = Request(i, self.tenant_names[wl.tenant[i]], int(wl.prompt_tokens[i]), int(wl.max_new_tokens[i]))
        verdict = self.scheduler.submit(request, now)
        if isinstance(verdict, Rejected):
            self.records["outcome"][i] = REJECTED
            self.records["reason"][i] = REASONS.index(verdict.reason.value)
        else:
            self._wake_idle()
        if i + 1 < len(wl):
            self.loop.at(float(wl.arrival_s[i + 1]), self._arrive, i + 1)

    def _wake_idle(self) -> None:
        for worker in self.workers:
            if worker.idle:
                self._start_step(worker)

    def _start_step(self, worker: SimWorker) -> None:
        now = self.loop.now
        plan = self.scheduler.plan(worker.id, now)
        if not plan:
            worker.idle = True
            if self._waiting_for(worker.id):
                self.idle_while_waiting.append((now, worker.id))
            return
        worker.idle = False
        records = self.records
        for rid in plan.admitted:
            if math.isnan(records["admit"][rid]):
                records["admit"][rid] = now
            records["worker"][rid] = worker.id
        for rid in plan.preempted:
            records["preemptions"][rid] += 1
        seconds = worker.step_time(plan)
        worker.account(plan, seconds, self.scheduler.workers[worker.id].pool.used)
        eos = frozenset(
            item.request_id for item in plan.items
            if item.samples and self._emitted[item.request_id] + 1 >= self._output_tokens[item.request_id]
        )
        self.loop.at(now + seconds, self._finish_step, worker, eos)
        if plan.preempted:
            self._wake_idle()  # preempted requests went back to a queue another worker may serve

    def _waiting_for(self, worker_id: int) -> bool:
        scheduler = self.scheduler
        if scheduler.placement.late_binding:
            return scheduler.num_waiting > 0
        return len(scheduler.workers[worker_id].queue) > 0

    def _finish_step(self, worker: SimWorker, eos: frozenset) -> None:
        now = self.loop.now
        self._last_event = now
        for output in self.scheduler.complete(worker.id, StepResult(1, eos), now):
            if isinstance(output, Emitted):
                self._tokens(output, now)
            elif isinstance(output, Finished):
                self.records["finish"][output.request_id] = now
                self.records["outcome"][output.request_id] = FINISHED
        self._start_step(worker)

    def _tokens(self, output: Emitted, now: float) -> None:
        rid = output.request_id
        if output.first:
            self._first_token[rid] = now
        else:
            self._itl[now - self._last_token[rid]] += output.count
        self._emitted[rid] += output.count
        self._last_token[rid] = now

    def _sample(self) -> None:
        scheduler = self.scheduler
        self._samples.append((self.loop.now, scheduler.tenant_service(), [q > 0 for q in scheduler.ledger.queued]))
        if self.loop.pending():  # keep sampling only while something else is still to happen
            self.loop.at(self.loop.now + self.config.sample_interval_s, self._sample)

    # ----- results ------------------------------------------------------------------------------

    def _run_data(self) -> RunData:
        self.records["output_tokens"] = self._emitted
        self.records["first_token"] = self._first_token
        times, service, backlogged = zip(*self._samples)
        timeline = Timeline(np.array(times), np.array(service, dtype=float), np.array(backlogged, dtype=bool))
        gaps = sorted(self._itl.items())
        specs = self.workload.tenants
        return RunData(
            records=self.records,
            itl_values=np.array([g for g, _ in gaps], dtype=float),
            itl_weights=np.array([n for _, n in gaps], dtype=np.int64),
            duration_s=self._last_event,
            tenants=tuple(TenantInfo(s.name, s.weight, s.slo_ttft_ms, s.slo_tpot_ms) for s in specs),
            workers=tuple(worker.stats() for worker in self.workers),
            timeline=timeline,
            service_weights=tuple(self.scheduler.config.service_weights),
        )


def simulate(config: SimConfig, workload: Workload | None = None, policy: Policy | None = None) -> RunData:
    return Simulation(config, workload, policy).run()
