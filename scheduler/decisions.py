"""Decision records: what the policy saw at each admission and preemption, and what it chose.

Opt-in (`Scheduler(..., record_decisions=True)`): the core then keeps a `DecisionLog`, which its
admission and preemption functions feed, and a driver drains the records with
`Scheduler.drain_decisions()` and writes them where it likes (the simulator as JSON lines). With
recording off no log exists and the core pays one `is None` test per admission and preemption.

Three kinds of record, each a frozen, slotted `Decision`:

- "admit": a request left a queue for a worker. `candidates` are the first request of every
  tenant with requests in that queue, in the policy's order (at most `HEAD_SCAN` queued requests
  are looked at to find them), each with the keys the policy orders by (`Policy.decision_keys`:
  arrival, VTC counter, deadline, slack, deficit ...); `chosen` is the admitted one; `cause` is
  "isolation" when isolation inside the step passed over the policy's first choice (a tenant at
  its fair share, scheduler.isolation) for it.
- "preempt": a running request was taken off its worker to be recomputed later. `candidates` are,
  per tenant running there, the request the policy would take from that tenant (`Policy.victim`
  over the tenant's running requests), with the same keys; `cause` is "step" (the step ran out of
  KV blocks, or a share preemption made room) or "worker_removed".
- "blocked": a step had tokens and sequence slots left, requests waited, and the policy's next
  request did not fit the worker's KV (`chosen` is that head). `candidates` are the tenants' first
  requests with `fits` saying whether each would have fitted: one that fits is a request waiting
  behind a blocked head (head-of-line blocking). Recorded when a worker's blocked head (or what
  fits beside it) changes, not at every step it stays blocked.

`queued`: per tenant, its requests waiting in any queue at the decision (the ledger's count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

from .policies.base import Policy, WaitQueue
from .sequence import Sequence
from .worker import WorkerState

HEAD_SCAN = 4096  # queued requests a record looks at to find every tenant's first one

ADMIT, PREEMPT, BLOCKED = "admit", "preempt", "blocked"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A request as the policy saw it: its tenant (index), arrival, and the policy's keys."""

    request_id: Hashable
    tenant: int
    arrival: float
    keys: tuple[tuple[str, float], ...]
    fits: bool | None = None  # "blocked" records only: whether it would have fitted the worker's KV


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str  # ADMIT, PREEMPT or BLOCKED
    time: float
    worker: int
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    queued: tuple[int, ...]
    queue: int | None = None  # the worker whose own queue it was (early binding); None: the pool's
    cause: str = ""  # PREEMPT: why; ADMIT: "isolation" when the policy's first choice was passed over


class DecisionLog:
    """The records of one scheduler, in the order its decisions were made."""

    __slots__ = ("_policy", "_queued", "_records", "_blocked")

    def __init__(self, policy: Policy, queued: Callable[[], tuple[int, ...]]) -> None:
        self._policy = policy
        self._queued = queued  # per tenant, requests waiting now
        self._records: list[Decision] = []
        self._blocked: dict[int, tuple] = {}  # worker -> what its last "blocked" record said

    def drain(self) -> list[Decision]:
        records, self._records = self._records, []
        return records

    def _candidate(self, seq: Sequence, fits: bool | None = None) -> Candidate:
        return Candidate(seq.id, seq.tenant, seq.arrival, self._policy.decision_keys(seq), fits)

    def _heads(self, queue: WaitQueue) -> list[Sequence]:
        queued = self._queued()
        return queue.tenant_heads([t for t, n in enumerate(queued) if n], HEAD_SCAN)

    def admitting(self, seq: Sequence, queue: WaitQueue, worker: WorkerState, now: float) -> None:
        """`seq` is about to be popped from `queue` and admitted on `worker`."""
        self._blocked.pop(worker.id, None)
        heads = self._heads(queue)
        if not any(head is seq for head in heads):  # a locality-aware or isolating choice past its tenant's head
            heads.append(seq)
        passed = queue.peek_for(worker.cached_prefix_of) is not seq  # isolation kept the policy's first out
        self._records.append(Decision(ADMIT, now, worker.id, self._candidate(seq),
                                      tuple(self._candidate(head) for head in heads), self._queued(),
                                      None if worker.queue is None else worker.id, "isolation" if passed else ""))

    def preempting(self, seq: Sequence, worker: WorkerState, now: float, removed: bool) -> None:
        """`seq`, running on `worker`, is about to be preempted (`removed`: the worker leaves)."""
        by_tenant: dict[int, list[Sequence]] = {}
        for running in worker.running:
            by_tenant.setdefault(running.tenant, []).append(running)
        victim = self._policy.victim
        candidates = tuple(self._candidate(victim(group)) for _, group in sorted(by_tenant.items()))
        self._records.append(Decision(PREEMPT, now, worker.id, self._candidate(seq), candidates, self._queued(),
                                      None if worker.queue is None else worker.id,
                                      "worker_removed" if removed else "step"))

    def stopped(self, room: bool, queue: WaitQueue, worker: WorkerState, now: float) -> None:
        """The step took its last admission; `room`: it had tokens and slots left for more."""
        head = queue.peek_for(worker.cached_prefix_of) if room and len(queue) else None
        if head is None or worker.fits(head):
            self._blocked.pop(worker.id, None)
            return
        heads = self._heads(queue)
        fits = [other is not head and worker.fits(other) for other in heads]
        said = (head.id, tuple(other.id for other, ok in zip(heads, fits) if ok))
        if self._blocked.get(worker.id) == said:
            return  # the same blocked head with the same requests fitting beside it
        self._blocked[worker.id] = said
        candidates = tuple(self._candidate(other, ok) for other, ok in zip(heads, fits))
        self._records.append(Decision(BLOCKED, now, worker.id, self._candidate(head, False), candidates,
                                      self._queued(), None if worker.queue is None else worker.id))
