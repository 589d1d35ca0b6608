"""The scheduler core: a sans-IO state machine that coordinates queues, workers, KV and policy.

Drivers (the simulator, the anyio runtime) call `submit`, `cancel`, `plan`, `complete`,
`add_worker` and `remove_worker`, always passing the current time; the core never reads a clock,
draws a random number or does I/O. `plan` and `complete` are a two-call contract per worker: a plan
is in flight until its result comes back. Step formation lives in `planner`, queue order and
victims in `policies`, worker choice in `placement`, refusals in `admission`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence as Seq

from . import invariants
from .actions import Admitted, Emitted, Finished, Rejected, RejectReason, StepPlan
from .admission import Admission, QueueTotals, refuse_reason
from .errors import ConfigError, ProtocolError, WorkerError
from .events import StepResult
from .kv import BlockPool
from .placement import Placement, make_placement
from .planner import StepBudget, StepHooks, form_step, repeat_limit, to_items
from .policies import Policy, WaitQueue, make_policy
from .request import Request, RequestState, Sequence, Tenant

RUNNING = RequestState.RUNNING
QUEUED = RequestState.QUEUED


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_batched_tokens: int = 4096  # tokens computed per step, prefill chunks and decodes together
    max_seqs: int = 256  # requests running on one worker at once
    block_size: int = 16  # tokens per KV block
    kv_watermark: float = 0.01  # fraction of a worker's blocks kept free when admitting
    service_weights: tuple[float, float] = (1.0, 2.0)  # (w_p, w_q): cost of a prompt / output token
    max_queued: int | None = None  # requests waiting in all queues together; None: no cap
    max_queued_tokens: int | None = None  # prompt tokens waiting in all queues together
    debug_checks: bool = False  # check every invariant after every call (slow; for tests)

    def __post_init__(self) -> None:
        for key in ("max_batched_tokens", "max_seqs", "block_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"scheduler.{key}: must be an integer >= 1, got {value!r}")
        if self.max_seqs > self.max_batched_tokens:
            raise ConfigError(
                f"scheduler.max_seqs: must be <= max_batched_tokens ({self.max_batched_tokens}) so every "
                f"running request can decode each step, got {self.max_seqs}"
            )
        if not 0 <= self.kv_watermark < 1:
            raise ConfigError(f"scheduler.kv_watermark: must be in [0, 1), got {self.kv_watermark!r}")
        if len(self.service_weights) != 2 or min(self.service_weights) < 0:
            raise ConfigError(f"scheduler.service_weights: must be two numbers >= 0, got {self.service_weights!r}")
        for key in ("max_queued", "max_queued_tokens"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"scheduler.{key}: must be an integer >= 1 or unset, got {value!r}")


class WorkerState:
    """One worker as the core sees it: its KV pool, running requests, own queue, step in flight."""

    __slots__ = ("id", "pool", "running", "queue", "inflight", "repeat", "released")

    def __init__(self, worker_id: int, pool: BlockPool, queue: WaitQueue | None) -> None:
        self.id = worker_id
        self.pool = pool
        self.running: list[Sequence] = []
        self.queue = queue  # None under late binding: the worker pulls from the global queue
        self.inflight: list[tuple[Sequence, int]] | None = None
        self.repeat = 1  # the in-flight plan's repeat
        self.released: list[Hashable] = []  # requests ended here since the last plan


class TenantLedger:
    """Per-tenant counts the core keeps whatever the policy: queued, running, tokens served."""

    __slots__ = ("queued", "queued_tokens", "running", "prompt_tokens", "output_tokens", "rejected")

    def __init__(self, n: int) -> None:
        self.queued = [0] * n
        self.queued_tokens = [0] * n  # prompt tokens of the queued requests
        self.rejected: dict[tuple[int, RejectReason], int] = {}  # (tenant, reason) -> count
        self.running = [0] * n
        self.prompt_tokens = [0] * n  # prompt tokens processed, recompute excluded
        self.output_tokens = [0] * n  # output tokens generated


@dataclass(slots=True)
class Counts:
    submitted: int = 0
    rejected: int = 0
    finished: int = 0
    cancelled: int = 0
    preemptions: int = 0

    @property
    def ended(self) -> int:
        return self.rejected + self.finished + self.cancelled


class Scheduler:
    def __init__(
        self,
        tenants: Seq[Tenant],
        policy: Policy | str = "fcfs",
        placement: Placement | str = "global",
        config: SchedulerConfig | None = None,
    ) -> None:
        self.tenants = tuple(tenants)
        self._tenant_index = {tenant.name: i for i, tenant in enumerate(self.tenants)}
        if len(self._tenant_index) != len(self.tenants):
            raise ConfigError("tenants: names must be unique")
        self.config = config or SchedulerConfig()
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        self.policy.bind(self.tenants)
        self.placement = make_placement(placement) if isinstance(placement, str) else placement
        self.ledger = TenantLedger(len(self.tenants))
        self.admission = Admission(self.tenants, self.config.max_queued, self.config.max_queued_tokens)
        self.counts = Counts()
        self.now = -math.inf
        self._live: dict[Hashable, Sequence] = {}
        self._workers: dict[int, WorkerState] = {}
        # Late binding: the one queue. Early binding: where requests wait while no worker exists.
        self._pool_queue = self.policy.new_queue()
        self._order = itertools.count()

    # ----- inputs -------------------------------------------------------------------------------

    def submit(self, request: Request, now: float) -> Admitted | Rejected:
        self._advance(now)
        self.counts.submitted += 1
        tenant = self._tenant_index.get(request.tenant) if _hashable(request.tenant) else None
        duplicate = _hashable(request.id) and request.id in self._live
        refusal = refuse_reason(request, tenant is not None, duplicate, len(self._workers), self.max_sequence_tokens)
        if refusal is None:
            queued = QueueTotals(self.ledger.queued, self.ledger.queued_tokens)
            refusal = self.admission.check(request, tenant, now, queued)
        if refusal is not None:
            return self._reject(request, tenant, *refusal)
        seq = Sequence(request, tenant, next(self._order), now)
        seq.move(QUEUED)
        self._live[request.id] = seq
        self._enqueue(seq, arrival=True)
        self._debug_check()
        return Admitted(request.id)

    def _reject(self, request: Request, tenant: int | None, reason: RejectReason, detail: str,
                retry_after: float | None = None) -> Rejected:
        self.counts.rejected += 1
        if tenant is not None:
            key = (tenant, reason)
            self.ledger.rejected[key] = self.ledger.rejected.get(key, 0) + 1
        return Rejected(request.id, reason, detail, retry_after)

    def cancel(self, request_id: Hashable, now: float) -> bool:
        """End a queued or running request at once, freeing its KV. False if it is not live."""
        self._advance(now)
        seq = self._live.get(request_id)
        if seq is None:
            return False
        if seq.state is QUEUED:
            self._queue_of(seq).remove(seq)
            self._dequeued(seq)
        else:
            self._leave_worker(seq, ended=True)
        self._end(seq, RequestState.CANCELLED, now)
        self.counts.cancelled += 1
        self._debug_check()
        return True

    def plan(self, worker_id: int, now: float) -> StepPlan:
        """The next step of `worker_id`. An empty plan means it has nothing to run: idle it."""
        self._advance(now)
        worker = self._worker(worker_id)
        if worker.inflight is not None:
            raise ProtocolError(f"worker {worker_id}: plan() called while its previous plan is in flight")
        admitted: list[Hashable] = []
        preempted: list[Hashable] = []
        hooks = StepHooks(
            admit=lambda seq: admitted.append(self._admit(seq, worker, now)),
            preempt=lambda seq: preempted.append(self._preempt(seq)),
        )
        budget = StepBudget(self.config.max_batched_tokens, self.config.max_seqs - len(worker.running))
        queue = self._pool_queue if self.placement.late_binding else worker.queue
        chosen = form_step(worker.running, worker.pool, queue, self.policy, budget, hooks)
        repeat = repeat_limit(worker.running, chosen, worker.pool, queue, budget, bool(preempted)) if chosen else 1
        plan = StepPlan(worker_id, to_items(chosen), tuple(preempted), repeat, tuple(admitted),
                        tuple(worker.released))
        worker.released.clear()
        worker.inflight = list(chosen.items()) if chosen else None
        worker.repeat = repeat
        self._debug_check()
        return plan

    def complete(self, worker_id: int, result: StepResult, now: float) -> list[Emitted | Finished]:
        """Apply the result of the worker's plan in flight; returns tokens emitted and requests finished."""
        self._advance(now)
        worker = self._worker(worker_id)
        if worker.inflight is None:
            raise ProtocolError(f"worker {worker_id}: complete() called with no plan in flight")
        inflight = worker.inflight
        self._check_result(worker_id, inflight, result, worker.repeat)
        if result.final:
            worker.inflight = None
        else:
            worker.repeat -= result.steps
        outputs: list[Emitted | Finished] = []
        for seq, tokens in inflight:
            if seq.state is RUNNING:  # a request cancelled while its step ran is simply dropped
                new_tokens = tokens + result.steps - 1  # a run's later steps are one-token decodes
                self._grow_kv(seq, worker.pool, new_tokens)
                self._advance_sequence(seq, new_tokens, result, now, outputs)
        self._debug_check()
        return outputs

    def add_worker(self, worker_id: int, kv_blocks: int, now: float) -> None:
        self._advance(now)
        if worker_id in self._workers:
            raise ProtocolError(f"worker {worker_id}: already in the pool")
        pool = BlockPool(kv_blocks, self.config.block_size, self.config.kv_watermark)
        if pool.admissible_tokens < 2:
            raise ConfigError(f"kv_blocks: worker {worker_id} would hold no request ({kv_blocks} blocks)")
        queue = None if self.placement.late_binding else self.policy.new_queue()
        self._workers[worker_id] = WorkerState(worker_id, pool, queue)
        if queue is not None:
            while len(self._pool_queue):
                seq = self._pool_queue.pop()
                seq.worker = worker_id
                queue.push(seq)
        self._debug_check()

    def remove_worker(self, worker_id: int, now: float) -> list[Hashable]:
        """Take a worker out (it failed or is drained). Its requests are queued again to be recomputed."""
        self._advance(now)
        worker = self._worker(worker_id)
        del self._workers[worker_id]
        moved = [seq.id for seq in worker.running]
        for seq in list(worker.running):
            self._preempt(seq)
        if worker.queue is not None:
            for seq in sorted(worker.queue, key=lambda s: s.order):
                moved.append(seq.id)
                worker.queue.remove(seq)
                self._place(seq).push(seq)
        self._debug_check()
        return moved

    # ----- queries ------------------------------------------------------------------------------

    @property
    def workers(self) -> dict[int, WorkerState]:
        return self._workers

    @property
    def live(self) -> dict[Hashable, Sequence]:
        """Requests not yet ended, by id."""
        return self._live

    def sequence(self, request_id: Hashable) -> Sequence | None:
        return self._live.get(request_id)

    @property
    def max_sequence_tokens(self) -> int:
        """Prompt + max_new_tokens that every worker can hold alone (0 with no workers)."""
        return min((w.pool.admissible_tokens for w in self._workers.values()), default=0)

    @property
    def num_waiting(self) -> int:
        return sum(self.ledger.queued)

    @property
    def num_running(self) -> int:
        return sum(self.ledger.running)

    def tenant_service(self) -> list[float]:
        """Per tenant: w_p * prompt + w_q * output tokens served, divided by the tenant's weight."""
        w_p, w_q = self.config.service_weights
        ledger = self.ledger
        return [
            (w_p * ledger.prompt_tokens[i] + w_q * ledger.output_tokens[i]) / tenant.weight
            for i, tenant in enumerate(self.tenants)
        ]

    def queues(self) -> Iterable[WaitQueue]:
        yield self._pool_queue
        for worker in self._workers.values():
            if worker.queue is not None:
                yield worker.queue

    # ----- bookkeeping --------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if not now >= self.now:  # also refuses NaN
            raise ProtocolError(f"time went backwards or is not a number: now={now!r} after {self.now!r}")
        self.now = now
        self.policy.now = now

    def _worker(self, worker_id: int) -> WorkerState:
        worker = self._workers.get(worker_id)
        if worker is None:
            raise ProtocolError(f"worker {worker_id}: not in the pool")
        return worker

    def _place(self, seq: Sequence) -> WaitQueue:
        """The queue `seq` waits in; binds it to a worker under early binding."""
        if self.placement.late_binding or not self._workers:
            seq.worker = None
            return self._pool_queue
        ids = sorted(self._workers)
        seq.worker = self.placement.choose(ids, self._load)
        return self._workers[seq.worker].queue

    def _load(self, worker_id: int) -> int:
        worker = self._workers[worker_id]
        return len(worker.running) + len(worker.queue)

    def _queue_of(self, seq: Sequence) -> WaitQueue:
        if seq.worker is None or self.placement.late_binding:
            return self._pool_queue
        return self._workers[seq.worker].queue

    def _enqueue(self, seq: Sequence, arrival: bool) -> None:
        # A preempted request stays bound to its worker under early binding; arrivals are placed.
        stay = not arrival and not self.placement.late_binding and seq.worker in self._workers
        queue = self._workers[seq.worker].queue if stay else self._place(seq)
        tenant = seq.tenant
        self.ledger.queued[tenant] += 1
        self.ledger.queued_tokens[tenant] += seq.request.prompt_tokens
        if self.ledger.queued[tenant] == 1:
            self.policy.on_backlogged(tenant, arrival)
        queue.push(seq)

    def _dequeued(self, seq: Sequence) -> None:
        tenant = seq.tenant
        self.ledger.queued[tenant] -= 1
        self.ledger.queued_tokens[tenant] -= seq.request.prompt_tokens
        if self.ledger.queued[tenant] == 0:
            self.policy.on_idle(tenant)

    def _admit(self, seq: Sequence, worker: WorkerState, now: float) -> Hashable:
        self._dequeued(seq)
        seq.move(RUNNING)
        seq.worker = worker.id
        if seq.admit_time is None:
            seq.admit_time = now
        worker.running.append(seq)
        self.ledger.running[seq.tenant] += 1
        self.policy.on_admit(seq)
        return seq.id

    def _preempt(self, seq: Sequence) -> Hashable:
        """Free a running request's KV and queue it again; it will be recomputed from scratch."""
        self._leave_worker(seq)
        seq.computed = 0
        seq.preemptions += 1
        self.counts.preemptions += 1
        seq.move(RequestState.PREEMPTED)
        seq.move(QUEUED)
        self._enqueue(seq, arrival=False)
        return seq.id

    def _leave_worker(self, seq: Sequence, ended: bool = False) -> None:
        worker = self._workers.get(seq.worker)
        if worker is not None:  # absent when its worker is being removed
            worker.running.remove(seq)
            worker.pool.release(seq.blocks)
            if ended:  # a preempted request is reported in its plan's `preempted`, not here
                worker.released.append(seq.id)
        seq.blocks = 0
        self.ledger.running[seq.tenant] -= 1

    def _end(self, seq: Sequence, state: RequestState, now: float) -> None:
        seq.move(state)
        seq.finish_time = now
        del self._live[seq.id]

    def _check_result(self, worker_id: int, inflight, result: StepResult, repeat: int) -> None:
        if not isinstance(result.steps, int) or not 1 <= result.steps <= repeat:
            raise WorkerError(f"worker {worker_id}: ran {result.steps!r} steps of a plan that allows 1 to {repeat}")
        if not result.final and (result.eos or result.steps >= repeat):
            raise WorkerError(f"worker {worker_id}: a progress report must leave steps to run and name no EOS")
        if not result.eos:
            return
        sampling = {seq.id for seq, tokens in inflight if tokens == seq.remaining or seq.state is not RUNNING}
        unexpected = set(result.eos) - sampling
        if unexpected:
            raise WorkerError(
                f"worker {worker_id}: reported EOS for {sorted(map(repr, unexpected))}, "
                "which sampled no token in this step"
            )

    @staticmethod
    def _grow_kv(seq: Sequence, pool: BlockPool, tokens: int) -> None:
        """Blocks for the tokens a report adds: none for a planned step (the planner allocated
        them), those of the later steps of a run (repeat_limit made sure they were free)."""
        need = pool.blocks_for(seq.computed + tokens) - seq.blocks
        if need > 0:
            pool.allocate(need)
            seq.blocks += need

    def _advance_sequence(self, seq: Sequence, tokens: int, result: StepResult, now: float, outputs) -> None:
        """`tokens` were computed for seq (over result.steps steps); every step after a first sample samples."""
        seq.computed += tokens
        tenant = seq.tenant
        prompt = seq.request.prompt_tokens
        if seq.charged_prompt < prompt:  # recompute of what was charged before is free
            charged = max(0, min(seq.computed, prompt) - seq.charged_prompt)
            seq.charged_prompt += charged
            self.ledger.prompt_tokens[tenant] += charged
        else:
            charged = 0
        sampled = seq.computed - (prompt + seq.generated) + 1  # tokens past the pending target, plus its own
        if sampled <= 0:  # a prefill chunk that samples nothing yet
            self.policy.on_service(tenant, charged, 0)
            return
        seq.generated += sampled
        self.ledger.output_tokens[tenant] += sampled
        self.policy.on_service(tenant, charged, sampled)
        first = seq.first_token_time is None
        if first:
            seq.first_token_time = now
        outputs.append(Emitted(seq.id, sampled, first))
        if seq.id in result.eos:
            reason = "eos"
        elif seq.generated >= seq.request.max_new_tokens:
            reason = "length"
        else:
            return
        seq.finish_reason = reason
        self._leave_worker(seq, ended=True)
        self._end(seq, RequestState.FINISHED, now)
        self.counts.finished += 1
        outputs.append(Finished(seq.id, reason, seq.generated))

    def _debug_check(self) -> None:
        if self.config.debug_checks:
            invariants.check(self)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
