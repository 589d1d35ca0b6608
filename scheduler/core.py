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
from .actions import Admitted, Emitted, Finished, Rejected, RejectReason, StepOutputs, StepPlan, WorkerRemoved
from .admission import Admission, QueueTotals, refuse_reason
from .config import SchedulerConfig, check_int
from .errors import ConfigError, ProtocolError, WorkerError
from .events import StepResult
from .outcomes import FinishReason
from .decisions import Decision, DecisionLog
from .decodeset import DecodeSet
from .kv import BlockPool, DecodeGrowth, PrefixCache
from .prefix import block_hashes
from .placement import Placement, make_placement
from .isolation import Capacity, Holdings, Standing
from .planner import StepBuilder, StepIsolation
from .policies import Policy, WaitQueue, make_policy
from .request import Request, RequestState, Tenant
from .sequence import Sequence
from .ledger import Ledger
from .service import ServiceWeights
from .worker import WorkerState

RUNNING = RequestState.RUNNING
QUEUED = RequestState.QUEUED
# What drivers, metrics and benchmarks may use of a Scheduler: the contract and the queries, each
# returning a value or a read-only view. The rest (worker states, live sequences, the ledger, the
# policy and placement objects) is the core's own and its tests'; tests/test_query_api.py checks.
PUBLIC_API = frozenset({
    "submit", "cancel", "plan", "complete", "add_worker", "remove_worker", "decoding",
    "tenants", "config", "now", "num_workers", "worker_ids", "num_running_on", "has_free_slot", "has_waiting",
    "next_plan_reads_service", "kv_usage", "decode_growth", "waits_on", "generated", "request_status",
    "live_ids", "num_live", "num_queued", "tenant_queued", "backlogged", "reads_service", "service_weights",
    "tenant_service", "tenant_tokens", "prefix_cache_stats", "cached_tokens", "num_waiting", "num_running", "max_sequence_tokens",
    "drain_decisions",
})


class PoolView:
    """The pool as a placement sees it when it places one request (`placement.PlaceView`)."""

    __slots__ = ("_workers", "_seq")

    def __init__(self, workers: dict[int, WorkerState], seq: Sequence) -> None:
        self._workers, self._seq = workers, seq

    def load(self, worker: int) -> int:
        state = self._workers[worker]
        return len(state.running) + (len(state.queue) if state.queue is not None else 0)

    def kv_usage(self, worker: int) -> float:
        state = self._workers[worker]
        return state.used / state.pool.total

    def cached_blocks(self, worker: int) -> int:
        return self._workers[worker].cached_blocks(self._seq.hashes)

    @property
    def prompt_blocks(self) -> int:
        return len(self._seq.hashes)

    @property
    def prefix_key(self) -> int | None:
        return self._seq.hashes[0] if self._seq.hashes else None


@dataclass(frozen=True, slots=True)
class KVUsage:
    """A worker's KV blocks: in use, and in all."""

    used: int
    total: int


@dataclass(frozen=True, slots=True)
class PrefixCacheStats:
    """A worker's prefix cache: prompt tokens looked up, of those found cached, blocks it keeps."""

    queries: int
    hits: int
    blocks: int


@dataclass(frozen=True, slots=True)
class RequestStatus:
    """A snapshot of a live request: its state, tenant (index), worker (None while it waits in
    the pool's queue), output tokens generated and preemptions so far."""

    state: RequestState
    tenant: int
    worker: int | None
    generated: int
    preemptions: int


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
        latency_budgets: Seq[int] | None = None,
        record_decisions: bool = False,
    ) -> None:
        """`latency_budgets`: per tenant, the step's tokens while its first token waits (what its SLO
        allows, say; 0: no limit); default: config.latency_budget_tokens for every tenant.
        `record_decisions`: keep a record of every admission and preemption (scheduler.decisions),
        for `drain_decisions`."""
        self.tenants = tuple(tenants)
        self._tenant_index = {tenant.name: i for i, tenant in enumerate(self.tenants)}
        self._weights = tuple(tenant.weight for tenant in self.tenants)
        if len(self._tenant_index) != len(self.tenants):
            raise ConfigError("tenants: names must be unique")
        self.config = config or SchedulerConfig()
        self.ledger = Ledger(self.tenants, ServiceWeights(*self.config.service_weights))
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        self.policy.bind(self.tenants, self.ledger)
        self.placement = make_placement(placement) if isinstance(placement, str) else placement
        self.admission = Admission(self.tenants, self.config.max_queued, self.config.max_queued_tokens)
        self.counts = Counts()
        self._latency_budgets = self._check_budgets(latency_budgets)
        self._isolates = self.config.isolation and self.policy.shares_fairly
        self._backlogged: dict[int, None] = {}  # tenants with requests queued
        self.now = -math.inf
        self._live: dict[Hashable, Sequence] = {}
        self._workers: dict[int, WorkerState] = {}
        self._max_sequence_tokens = 0
        self._own_queues: dict[int, WaitQueue] = {}  # the workers that serve a queue of their own, by id
        # Late binding: the one queue. Early binding: where requests wait while no worker exists.
        self._pool_queue = self.policy.new_queue()
        self._order = itertools.count()
        self._decisions = DecisionLog(self.policy, self.tenant_queued) if record_decisions else None

    def _check_budgets(self, budgets: Seq[int] | None) -> tuple[int, ...]:
        if budgets is None:
            return (self.config.step_latency_budget,) * len(self.tenants)
        budgets = tuple(budgets)
        high = self.config.max_num_batched_tokens
        if len(budgets) != len(self.tenants):
            raise ConfigError(f"latency_budgets: one per tenant ({len(self.tenants)}), got {len(budgets)}")
        for tenant, budget in zip(self.tenants, budgets):
            check_int(f"latency_budget_tokens of tenant {tenant.name!r}", budget, 0, high,
                       "max_num_batched_tokens; 0: off")
        return budgets

    # ----- inputs -------------------------------------------------------------------------------

    def submit(self, request: Request, now: float) -> Admitted | Rejected:
        self._advance(now)
        self.counts.submitted += 1
        name = getattr(request, "tenant")  # the caller's value, whatever its type, until checked
        tenant = self._tenant_index.get(name) if _hashable(name) else None
        duplicate = _hashable(request.id) and request.id in self._live
        refusal = refuse_reason(request, tenant is not None, duplicate, len(self._workers), self.max_sequence_tokens)
        if refusal is not None:
            return self._reject(request, tenant, *refusal)
        assert tenant is not None  # refuse_reason refuses an unknown tenant
        if self.admission.limits(tenant):
            limited = self.admission.check(request, tenant, now, QueueTotals(self.ledger.queued, self.ledger.queued_tokens))
            if limited is not None:
                return self._reject(request, tenant, *limited)
        seq = Sequence(request, tenant, next(self._order), now)
        if request.prefix is not None and self.config.enable_prefix_caching:
            salt = tenant if self.config.cache_isolation == "tenant" else None
            seq.hashes = block_hashes(request.prefix, request.prompt_tokens, self.config.block_size, salt)
        seq.move(QUEUED)
        self._live[request.id] = seq
        self._enqueue(seq, arrival=True)
        self._debug_check()
        return Admitted(request.id)

    def _reject(self, request: Request, tenant: int | None, reason: RejectReason, detail: str,
                retry_after: float | None = None) -> Rejected:
        self.counts.rejected += 1
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
        queue = self._queue_served_by(worker)
        step = StepBuilder(worker, self.config.max_num_batched_tokens, self.config.max_num_seqs,
                           self._isolation(worker) if self._isolates else None)
        preempted = self._preempt_for_share(worker, step, queue, now)
        if not step.grow_decodes():
            preempted += [self._preempt(victim) for victim in step.preempt_to_grow(self.policy.victim)]
        step.continue_prefills()
        admitted = self._admit_selected(step, queue, worker, now)
        if step.deferred:  # over-share prefills take what the admissions left, then their tenants admit
            step.continue_prefills(over_share=True)
            admitted += self._admit_selected(step, queue, worker, now)
        if self._isolates:
            worker.note_prefill(step.chunks)
        repeat, worker.growth = step.repeat(queue)
        decode = worker.decode
        plan = StepPlan(worker_id, step.items(), decode.size, decode.context, repeat, tuple(admitted),
                        tuple(preempted), tuple(worker.released))
        worker.released.clear()
        worker.dropped.clear()
        worker.inflight = step.chunks if plan else None
        worker.repeat = repeat
        self._debug_check()
        return plan

    def complete(self, worker_id: int, result: StepResult, now: float) -> StepOutputs:
        """Apply the result of the worker's plan in flight: tokens emitted, requests finished."""
        self._advance(now)
        worker = self._worker(worker_id)
        chunks = worker.inflight
        if chunks is None:
            raise ProtocolError(f"worker {worker_id}: complete() called with no plan in flight")
        self._check_result(worker, chunks, result)
        steps = result.steps
        if result.final:
            worker.inflight = None
        else:
            worker.repeat -= steps
            worker.inflight = []  # the chunks are done with: later reports are of decodes alone
        emitted: list[Emitted] = []
        finished: list[Finished] = []
        if chunks and steps > 1:  # the prefill step, then decode steps with the prompts it completed
            decoded = worker.advance_decodes(1)
            self._advance_chunks(worker, chunks, frozenset(), now, emitted, finished, steps - 1)
            worker.advance_decodes(steps - 1)
            chunks = []
        else:
            decoded = worker.advance_decodes(steps)  # their output service: the ledger reads the set's clock
        for seq, reason in self._decode_set_ends(worker, result.eos):
            finished.append(self._finish(seq, reason, now))
        self._advance_chunks(worker, chunks, result.eos, now, emitted, finished)
        self._debug_check()
        return StepOutputs(steps, decoded, tuple(emitted), tuple(finished))

    def _advance_chunks(self, worker: WorkerState, chunks, eos: frozenset, now: float, emitted: list[Emitted],
                        finished: list[Finished], decoded_after: int = 0) -> None:
        for seq, tokens in chunks:
            if seq.state is RUNNING:  # a request cancelled while its step ran is simply dropped
                self._advance_chunk(seq, worker, tokens, eos, now, emitted, finished, decoded_after)

    def drain_decisions(self) -> list[Decision]:
        """The decision records made since the last drain, oldest first; [] unless the scheduler
        was made with record_decisions=True."""
        return [] if self._decisions is None else self._decisions.drain()

    def decoding(self, worker_id: int) -> list[Hashable]:
        """The worker's decode set, in admission order: each computes one token in every step."""
        worker = self._worker(worker_id)
        return [seq.id for seq in worker.running if seq.decoding_on is worker.decode]

    def add_worker(self, worker_id: int, kv_blocks: int, now: float) -> None:
        self._advance(now)
        if worker_id in self._workers:
            raise ProtocolError(f"worker {worker_id}: already in the pool")
        pool = BlockPool(kv_blocks, self.config.block_size, self.config.kv_watermark)
        if pool.admissible_tokens < 2:
            raise ConfigError(f"kv_blocks: worker {worker_id} would hold no request ({kv_blocks} blocks)")
        queue = self.placement.worker_queue(self.policy.new_queue)
        cache = PrefixCache() if self.config.enable_prefix_caching else None
        decode = DecodeSet(pool.block_size, self.ledger.decoding)
        self._workers[worker_id] = WorkerState(worker_id, pool, queue, decode, cache)
        self._pool_changed()
        if queue is not None:
            while len(self._pool_queue):
                seq = self._pool_queue.pop()
                seq.worker = worker_id
                queue.push(seq)
        self._debug_check()

    def remove_worker(self, worker_id: int, now: float) -> WorkerRemoved:
        """Take a worker out (it failed or is drained). Its requests are queued again to be
        recomputed; any request no remaining worker can hold is ended (see WorkerRemoved)."""
        self._advance(now)
        worker = self._worker(worker_id)
        del self._workers[worker_id]
        self._pool_changed()
        moved = [seq.id for seq in worker.running]
        for seq in list(worker.running):
            self._preempt(seq, worker)
        if worker.queue is not None:
            for seq in sorted(worker.queue, key=lambda s: s.order):
                moved.append(seq.id)
                worker.queue.remove(seq)
                self._place(seq).push(seq)
        ended = self._end_unplaceable(now) if self._workers else []
        self._debug_check()
        return WorkerRemoved(tuple(rid for rid in moved if rid not in ended), tuple(ended))

    def _admit_selected(self, step: StepBuilder, queue: WaitQueue, worker: WorkerState, now: float) -> list:
        admitted = []
        while (seq := step.select(queue)) is not None:
            if self._decisions is not None:
                self._decisions.admitting(seq, queue, worker, now)
            queue.pop_chosen(seq)
            step.commit(seq)  # first: it finds its cached blocks, which the bookkeeping charges
            admitted.append(self._admit(seq, worker, now))
        if self._decisions is not None:
            self._decisions.stopped(not step.preempted and step.tokens > 0 and step.seqs > 0, queue, worker, now)
        return admitted

    # ----- isolation inside the step ------------------------------------------------------------

    def _isolation(self, worker: WorkerState) -> StepIsolation:
        """This step's isolation rules (scheduler.isolation), with the worker's standing to measure."""
        config = self.config
        cap = config.over_share_prefill_tokens
        over_tokens: float = math.inf if cap is None or not config.fair_prefill else cap
        return StepIsolation(lambda: self._standing(worker), lambda standing: self._latency_tokens(worker, standing),
                             config.fair_prefill, over_tokens, config.headroom_seqs,
                             int(worker.pool.total * config.kv_headroom))

    def _standing(self, worker: WorkerState) -> Standing:
        """Who is over share and who is full on the worker now (scheduler.isolation)."""
        config, ledger = self.config, self.ledger
        step: dict[int, float] = dict(worker.seqs_of)  # a token per decode, and the prefill it has been computing
        for seq in worker.prefilling:
            step[seq.tenant] -= 1
        worker.add_recent_prefill(step)
        queued = {t: ledger.queued[t] for t in self._backlogged}
        held = Holdings(worker.seqs_of, worker.prompt_of, step, queued, {t: ledger.queued_tokens[t] for t in queued})
        capacity = Capacity(config.max_num_seqs - config.headroom_seqs,
                            worker.pool.admissible_tokens * (1 - config.kv_headroom), config.max_num_batched_tokens)
        return Standing(held, capacity, self._weights)

    def _latency_tokens(self, worker: WorkerState, standing: Standing) -> float:
        """The step's tokens while an under-share tenant's request waits for its first token here
        (the smallest such tenant's budget), or no limit."""
        if not standing.over:
            return math.inf
        waiting = {seq.tenant for seq in worker.prefilling if seq.first_token_time is None}
        waiting.update(self._backlogged)
        budgets = [self._latency_budgets[t] for t in waiting - standing.over if self._latency_budgets[t]]
        return min(budgets, default=math.inf)

    def _preempt_for_share(self, worker: WorkerState, step: StepBuilder, queue: WaitQueue, now: float) -> list:
        """Preempt requests of tenants at or above their share of slots or KV (the policy's
        victims among them) while the next request of a tenant below its share has waited past
        share_preempt_after_s for a slot or KV."""
        isolation, bound = step.isolation, self.config.share_preempt_after_s
        if isolation is None or bound is None or not len(queue) or not isolation.standing.full:
            return []
        full = isolation.standing.full
        preempted = []
        while (seq := self._next_not_full(queue, full, worker)) is not None and now - seq.arrival >= bound:
            if step.seqs > 0 and worker.fits(seq):
                break
            victims = [running for running in worker.running if running.tenant in full]
            if not victims:
                break
            preempted.append(self._preempt(self.policy.victim(victims)))
            step.seqs += 1
            step.shielded = True
        return preempted

    @staticmethod
    def _next_not_full(queue: WaitQueue, full: set[int], worker: WorkerState) -> Sequence | None:
        head = queue.peek_for(worker.cached_prefix_of)
        if head is None or head.tenant not in full:
            return head
        return queue.peek_among(lambda tenant: tenant not in full, worker.cached_prefix_of)

    def _end_unplaceable(self, now: float) -> list[Hashable]:
        """Cancel the queued requests longer than every worker's KV cache: none could ever run."""
        largest = max(worker.pool.admissible_tokens for worker in self._workers.values())
        ended = []
        for queue in list(self.queues()):
            for seq in sorted(queue, key=lambda s: s.order):
                if seq.request.prompt_tokens + seq.request.max_new_tokens > largest:
                    queue.remove(seq)
                    self._dequeued(seq)
                    seq.finish_reason = FinishReason.NO_WORKER_FITS
                    self._end(seq, RequestState.CANCELLED, now)
                    self.counts.cancelled += 1
                    ended.append(seq.id)
        return ended

    # ----- queries: what drivers, metrics and benchmarks read (values and read-only views) -----

    @property
    def num_workers(self) -> int:
        return len(self._workers)

    def worker_ids(self) -> list[int]:
        """The workers in the pool, by id."""
        return sorted(self._workers)

    def num_running_on(self, worker_id: int) -> int:
        return len(self._worker(worker_id).running)

    def has_free_slot(self, worker_id: int) -> bool:
        """Whether the worker runs fewer than max_num_seqs requests (an admission could add one)."""
        return len(self._worker(worker_id).running) < self.config.max_num_seqs

    def has_waiting(self, worker_id: int) -> bool:
        """Whether requests wait in the queue the worker serves (the pool's, or its own)."""
        return len(self._queue_served_by(self._worker(worker_id))) > 0

    def next_plan_reads_service(self, worker_id: int) -> bool:
        """Whether the worker's next plan could admit (queue order) or preempt (the victim): the
        decisions that read service, which a driver running steps ahead must report first."""
        worker = self._worker(worker_id)
        return len(self._queue_served_by(worker)) > 0 or worker.available < len(worker.running)

    def kv_usage(self, worker_id: int) -> KVUsage:
        """The worker's KV blocks in use (cached blocks no request holds count as free) and in all."""
        worker = self._worker(worker_id)
        return KVUsage(worker.used, worker.pool.total)

    def prefix_cache_stats(self, worker_id: int) -> PrefixCacheStats:
        """The worker's prefix cache lookups: prompt tokens queried and found (vLLM's counters)."""
        cache = self._worker(worker_id).cache
        return PrefixCacheStats(0, 0, 0) if cache is None else PrefixCacheStats(cache.queries, cache.hits, len(cache))

    def decode_growth(self, worker_id: int) -> DecodeGrowth:
        """How the decodes of the worker's plan in flight grow into new KV blocks over its run
        (those of a prompt its first step completes included); right after a plan."""
        worker = self._worker(worker_id)
        return worker.decode.growth() if worker.growth is None else worker.growth

    def waits_on(self, request_id: Hashable) -> int | None:
        """The worker whose queue a queued request waits in; None: the pool's queue (or not queued)."""
        seq = self._live.get(request_id)
        if seq is None or seq.state is not QUEUED:
            return None
        return None if self._queue_of(seq) is self._pool_queue else seq.worker

    def cached_tokens(self, request_id: Hashable) -> int | None:
        """Prompt tokens a live request found cached at its first admission; None when it is not live."""
        seq = self._live.get(request_id)
        return None if seq is None else seq.cached_tokens

    def generated(self, request_id: Hashable) -> int | None:
        """Output tokens a live request has generated so far; None when it is not live."""
        seq = self._live.get(request_id)
        return None if seq is None else seq.generated

    def request_status(self, request_id: Hashable) -> RequestStatus | None:
        """A live request's state, worker and progress, as a snapshot; None when it is not live."""
        seq = self._live.get(request_id)
        if seq is None or seq.state is None:
            return None
        return RequestStatus(seq.state, seq.tenant, seq.worker, seq.generated, seq.preemptions)

    def live_ids(self) -> list[Hashable]:
        """The requests not yet ended, in submission order."""
        return list(self._live)

    @property
    def num_live(self) -> int:
        return len(self._live)

    def num_queued(self, tenant: int) -> int:
        """Requests of tenant (by index, as in `tenants`) waiting in any queue."""
        return self.ledger.queued[tenant]

    def tenant_queued(self) -> tuple[int, ...]:
        return tuple(self.ledger.queued)

    def tenant_tokens(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Per tenant: prompt tokens computed (recompute excluded), output tokens generated, and
        prompt tokens found in a prefix cache."""
        return tuple(self.ledger.prompt_tokens), tuple(self.ledger.outputs()), tuple(self.ledger.cached_tokens)

    def backlogged(self) -> list[bool]:
        """Per tenant: whether it has requests waiting."""
        return [queued > 0 for queued in self.ledger.queued]

    @property
    def reads_service(self) -> bool:
        """Whether the policy's order or victim depends on service received."""
        return self.policy.uses_service

    @property
    def service_weights(self) -> ServiceWeights:
        return self.ledger.weights

    @property
    def workers(self) -> dict[int, WorkerState]:
        """The core's own worker states, for its tests and invariant checks; drivers use the queries."""
        return self._workers

    @property
    def live(self) -> dict[Hashable, Sequence]:
        """Requests not yet ended, by id."""
        return self._live

    def sequence(self, request_id: Hashable) -> Sequence | None:
        return self._live.get(request_id)

    @property
    def max_sequence_tokens(self) -> int:
        """Prompt + max_new_tokens that every worker can hold alone, at most max_model_len (0 with no workers)."""
        return self._max_sequence_tokens

    def _pool_changed(self) -> None:
        self._own_queues = {wid: queue for wid in sorted(self._workers) if (queue := self._workers[wid].queue) is not None}
        held = min((w.pool.admissible_tokens for w in self._workers.values()), default=0)
        limit = self.config.max_model_len
        self._max_sequence_tokens = held if limit is None else min(held, limit)

    @property
    def num_waiting(self) -> int:
        return sum(self.ledger.queued)

    @property
    def num_running(self) -> int:
        return sum(self.ledger.running)

    def tenant_service(self) -> list[float]:
        """Per tenant: w_p * prompt + w_q * output tokens served, divided by the tenant's weight."""
        return self.ledger.services()

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
        self.policy.advance(now)

    def _worker(self, worker_id: int) -> WorkerState:
        worker = self._workers.get(worker_id)
        if worker is None:
            raise ProtocolError(f"worker {worker_id}: not in the pool")
        return worker

    def _place(self, seq: Sequence) -> WaitQueue:
        """The queue `seq` waits in, as the placement chooses; binds it to that queue's worker."""
        if not self._workers:
            seq.worker = None
            return self._pool_queue
        place = self.placement.choose(self._pool_queue, self._own_queues, PoolView(self._workers, seq))
        seq.worker = place.worker
        return place.queue

    def _queue_served_by(self, worker: WorkerState) -> WaitQueue:
        return self._pool_queue if worker.queue is None else worker.queue

    def _worker_of(self, seq: Sequence) -> WorkerState:
        """The worker a running request runs on."""
        assert seq.worker is not None
        return self._workers[seq.worker]

    def _queue_of(self, seq: Sequence) -> WaitQueue:
        # A queued request bound to no worker waits in the pool's queue, one bound waits in its worker's.
        queue = None if seq.worker is None else self._workers[seq.worker].queue
        return self._pool_queue if queue is None else queue

    def _enqueue(self, seq: Sequence, arrival: bool) -> None:
        # A preempted request stays in its worker's own queue, if it has one; arrivals are placed.
        worker = None if arrival or seq.worker is None else self._workers.get(seq.worker)
        queue = worker.queue if worker is not None and worker.queue is not None else self._place(seq)
        tenant = seq.tenant
        self.ledger.queued[tenant] += 1
        self.ledger.queued_tokens[tenant] += seq.request.prompt_tokens
        if self.ledger.queued[tenant] == 1:
            self._backlogged[tenant] = None
            self.policy.on_backlogged(tenant, arrival)
        queue.push(seq)

    def _dequeued(self, seq: Sequence) -> None:
        tenant = seq.tenant
        self.ledger.queued[tenant] -= 1
        self.ledger.queued_tokens[tenant] -= seq.request.prompt_tokens
        if self.ledger.queued[tenant] == 0:
            del self._backlogged[tenant]
            self.policy.on_idle(tenant)

    def _admit(self, seq: Sequence, worker: WorkerState, now: float) -> Hashable:
        """The bookkeeping of an admission (the step builder gave it its blocks and chunk). The policy
        charges the request before it hears that its tenant's queue went empty (DRR drops the
        credit left only after the request has paid)."""
        seq.move(RUNNING)
        seq.worker = worker.id
        if seq.admit_time is None:
            seq.admit_time = now
            seq.cached_tokens = seq.computed
        self._charge_cached(seq)
        self.ledger.running[seq.tenant] += 1
        self.policy.on_admit(seq)
        self._dequeued(seq)
        return seq.id

    def _preempt(self, seq: Sequence, worker: WorkerState | None = None) -> Hashable:
        """Free a running request's KV and queue it again; it will be recomputed from scratch."""
        if self._decisions is not None:
            self._decisions.preempting(seq, self._worker_of(seq) if worker is None else worker, self.now,
                                      worker is not None)
        self._leave_worker(seq, worker=worker)
        seq.computed = 0
        seq.preemptions += 1
        self.counts.preemptions += 1
        seq.move(QUEUED)
        self._enqueue(seq, arrival=False)
        return seq.id

    def _leave_worker(self, seq: Sequence, ended: bool = False, worker: WorkerState | None = None) -> None:
        """Take a running request off its worker (given while that worker is being removed)."""
        worker = worker or self._worker_of(seq)
        worker.remove(seq)
        if ended:  # a preempted request is reported in its plan's `preempted`, not here
            worker.released.append(seq.id)
            if worker.inflight is not None:
                worker.dropped.add(seq.id)
        self.ledger.running[seq.tenant] -= 1

    def _end(self, seq: Sequence, state: RequestState, now: float) -> None:
        seq.move(state)
        seq.finish_time = now
        del self._live[seq.id]

    def _check_result(self, worker: WorkerState, chunks, result: StepResult) -> None:
        steps = getattr(result, "steps")  # the worker's value, whatever its type, until checked
        if not isinstance(steps, int) or not 1 <= steps <= worker.repeat:
            raise WorkerError(f"worker {worker.id}: ran {steps!r} steps of a plan that allows 1 to {worker.repeat}")
        if not result.final and (result.eos or result.steps >= worker.repeat):
            raise WorkerError(f"worker {worker.id}: a progress report must leave steps to run and name no EOS")
        if not result.eos:
            return
        decode = worker.decode
        sampling = {seq.id for seq, tokens in chunks if tokens == seq.remaining} | worker.dropped
        unexpected = [
            rid for rid in result.eos
            if rid not in sampling and getattr(self._live.get(rid), "decoding_on", None) is not decode
        ]
        if unexpected:
            raise WorkerError(
                f"worker {worker.id}: reported EOS for {sorted(map(repr, unexpected))}, "
                "which sampled no token in this step"
            )


    def _decode_set_ends(self, worker: WorkerState, eos: frozenset) -> list[tuple[Sequence, FinishReason]]:
        """Members that sampled EOS or reached max_new_tokens, in admission order."""
        decode = worker.decode
        ends: dict[Sequence, FinishReason] = {}
        for rid in eos:
            seq = self._live.get(rid)
            if seq is not None and seq.decoding_on is decode:
                ends[seq] = FinishReason.EOS
        for seq in decode.pop_at_length():
            ends.setdefault(seq, FinishReason.LENGTH)
        return sorted(ends.items(), key=lambda end: end[0].order)

    def _charge_cached(self, seq: Sequence) -> None:
        # The prompt tokens found cached at admission, once: a token is charged cached or computed.
        cached = min(seq.computed, seq.request.prompt_tokens) - seq.charged_prompt
        if cached > 0:
            seq.charged_prompt += cached
            self.ledger.cached_tokens[seq.tenant] += cached

    def _advance_chunk(self, seq: Sequence, worker: WorkerState, tokens: int, eos: frozenset, now: float,
                       emitted: list[Emitted], finished: list[Finished], decoded_after: int = 0) -> None:
        """A prefill chunk of `tokens` was computed; if it completed the prefill, a token was sampled
        (and `decoded_after` more, in the decode steps of the same report, which it joins)."""
        seq.computed += tokens
        worker.publish(seq)
        tenant = seq.tenant
        prompt = seq.request.prompt_tokens
        charged = max(0, min(seq.computed, prompt) - seq.charged_prompt)  # recompute is free
        seq.charged_prompt += charged
        self.ledger.prompt_tokens[tenant] += charged
        if seq.computed < seq.target:  # a chunk that samples nothing yet
            return
        seq.generated += 1
        self.ledger.add_output(tenant, 1)
        first = seq.first_token_time is None
        if first:
            seq.first_token_time = now
        emitted.append(Emitted(seq.id, 1 + decoded_after, first))
        if seq.id in eos:
            finished.append(self._finish(seq, FinishReason.EOS, now))
        elif seq.generated >= seq.request.max_new_tokens:
            finished.append(self._finish(seq, FinishReason.LENGTH, now))
        else:
            del worker.prefilling[seq]
            worker.decode.join(seq)

    def _finish(self, seq: Sequence, reason: FinishReason, now: float) -> Finished:
        self._leave_worker(seq, ended=True)
        seq.finish_reason = reason
        self._end(seq, RequestState.FINISHED, now)
        self.counts.finished += 1
        return Finished(seq.id, reason, seq.generated)

    def _debug_check(self) -> None:
        if self.config.debug_checks:
            invariants.check(self)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
