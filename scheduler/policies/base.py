"""The policy interface: the order of queued requests and the preemption victim, nothing else.

A policy makes wait queues (one for the whole pool under late binding, one per worker under early
binding) and may keep per-tenant state (VTC counters) shared by its queues. The core tells it when
tenants get service and when they become backlogged or idle; it never asks a policy to plan.
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Collection, Iterator, Sequence as Seq, TypeVar

from ..request import Tenant
from ..sequence import Sequence
from ..ledger import Ledger

_Class = TypeVar("_Class")

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # no mypyc here, so no compiled build that would read it
    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_Class], _Class]:  # type: ignore[misc]
        return lambda cls: cls

# A compiled build (sim.compiled) compiles the classes below; every policy and queue written in
# Python, ours or a user's, subclasses them, which a compiled class allows only when it says so.


@mypyc_attr(allow_interpreted_subclasses=True)
class WaitQueue(ABC):
    """Queued requests in the order a policy admits them."""

    @abstractmethod
    def push(self, seq: Sequence) -> None: ...

    @abstractmethod
    def peek(self) -> Sequence | None:
        """The request the policy admits next, or None when empty."""

    @abstractmethod
    def pop(self) -> Sequence:
        """Remove and return what `peek` returned."""

    @abstractmethod
    def remove(self, seq: Sequence) -> None: ...

    def peek_for(self, cached: Callable[[Sequence], int]) -> Sequence | None:
        """The request the policy admits next on a worker that has `cached(seq)` leading blocks of
        seq's prompt cached: a locality-aware queue may prefer a hit; the others ignore it."""
        return self.peek()

    def peek_among(self, allowed: Callable[[int], bool], cached: Callable[[Sequence], int]) -> Sequence | None:
        """The request the policy admits next among the tenants `allowed` admits, when isolation
        keeps the others out of this step; None when the policy's order cannot pass a tenant over
        (the default: only the policies that share by weight can)."""
        return None

    def pop_chosen(self, seq: Sequence) -> Sequence:
        """Remove and return what `peek_for` or `peek_among` returned."""
        assert seq is self.peek(), "pop_chosen of a request the queue did not choose"
        return self.pop()

    def tenant_heads(self, tenants: Collection[int], limit: int) -> list[Sequence]:
        """The first queued request of each of `tenants` in the policy's order, among the first
        `limit` looked at (scheduler.decisions' candidates); the order of the queue is unchanged.
        Here: the head, then each tenant's oldest, for a queue that knows no better."""
        head, wanted = self.peek(), set(tenants)
        found = {} if head is None else {head.tenant: head}
        for seq in sorted(self, key=lambda s: s.order)[:limit]:
            if seq.tenant in wanted and seq.tenant not in found:
                found[seq.tenant] = seq
        return list(found.values())

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Sequence]: ...


@mypyc_attr(allow_interpreted_subclasses=True)
class KeyedQueue(WaitQueue):
    """A heap ordered by key(seq), then submission order; removal is lazy."""

    def __init__(self, key) -> None:
        self._key = key
        self._heap: list[list[Any]] = []
        self._live: dict[int, list[Any]] = {}  # seq.order -> its heap entry

    def push(self, seq: Sequence) -> None:
        entry = [self._key(seq), seq.order, seq]
        self._live[seq.order] = entry
        heapq.heappush(self._heap, entry)

    def peek(self) -> Sequence | None:
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def pop(self) -> Sequence:
        seq = self.peek()
        assert seq is not None, "pop from an empty queue"
        heapq.heappop(self._heap)
        del self._live[seq.order]
        return seq

    def remove(self, seq: Sequence) -> None:
        self._live.pop(seq.order)[2] = None

    def tenant_heads(self, tenants: Collection[int], limit: int) -> list[Sequence]:
        # Best first through the heap's tree: the entries in key order, each tenant's first kept.
        heap, wanted = self._heap, set(tenants)
        found: dict[int, Sequence] = {}
        frontier, looked = ([(heap[0], 0)] if heap else []), 0
        while frontier and len(found) < len(wanted) and looked < limit:
            entry, i = heapq.heappop(frontier)  # (key, order) decide: orders are unique
            seq = entry[2]
            if seq is not None:
                looked += 1
                if seq.tenant in wanted:
                    found.setdefault(seq.tenant, seq)
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
        return list(found.values())

    def __contains__(self, seq: Sequence) -> bool:
        return seq.order in self._live

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self):
        return (entry[2] for entry in self._live.values())


@mypyc_attr(allow_interpreted_subclasses=True)
class Fifos(ABC):
    """Queued requests per tenant, each tenant's oldest first, for the policies that choose a
    tenant first (`TenantQueue`)."""

    @abstractmethod
    def push(self, seq: Sequence) -> bool:
        """Queue seq; True when its tenant had nothing queued before."""

    @abstractmethod
    def head(self, tenant: int) -> Sequence | None:
        """The tenant's oldest queued request, or None."""

    @abstractmethod
    def pop(self, tenant: int) -> Sequence:
        """Take the tenant's oldest queued request."""

    @abstractmethod
    def remove(self, seq: Sequence) -> None: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Sequence]: ...


@mypyc_attr(allow_interpreted_subclasses=True)
class TenantFifos(Fifos):
    """Fifos as heaps by arrival order, with lazy removal."""

    def __init__(self) -> None:
        self._fifo: dict[int, list[tuple[int, Sequence]]] = {}
        self._removed: set[int] = set()  # orders of lazily removed requests
        self._size = 0

    def push(self, seq: Sequence) -> bool:
        was_empty = self.head(seq.tenant) is None
        heapq.heappush(self._fifo.setdefault(seq.tenant, []), (seq.order, seq))
        self._size += 1
        return was_empty

    def head(self, tenant: int) -> Sequence | None:
        fifo = self._fifo.get(tenant)
        while fifo and fifo[0][0] in self._removed:
            self._removed.discard(heapq.heappop(fifo)[0])
        return fifo[0][1] if fifo else None

    def pop(self, tenant: int) -> Sequence:
        seq = self.head(tenant)
        if seq is None:
            raise IndexError(f"pop: tenant {tenant} has nothing queued")
        heapq.heappop(self._fifo[tenant])
        self._size -= 1
        return seq

    def remove(self, seq: Sequence) -> None:
        self._removed.add(seq.order)
        self._size -= 1

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Sequence]:
        return (seq for fifo in self._fifo.values() for order, seq in fifo if order not in self._removed)


@mypyc_attr(allow_interpreted_subclasses=True)
class TenantQueue(WaitQueue):
    """A wait queue that picks a tenant, then admits that tenant's oldest request.

    Subclasses say how the tenant is picked and follow tenants gaining or losing queued requests.
    """

    def __init__(self) -> None:
        self._fifos: Fifos = TenantFifos()

    @abstractmethod
    def _pick(self) -> int | None:
        """The tenant whose head is admitted next, or None when nothing is queued."""

    @abstractmethod
    def _tenant_backlogged(self, tenant: int) -> None: ...

    @abstractmethod
    def _tenant_idle(self, tenant: int) -> None: ...

    def _taking(self, tenant: int) -> None:
        """The head of `tenant`, which `_pick` chose, is about to be popped."""

    def _popped(self, seq: Sequence) -> None:
        """`seq` was admitted from this queue."""

    def push(self, seq: Sequence) -> None:
        if self._fifos.push(seq):
            self._tenant_backlogged(seq.tenant)

    def peek(self) -> Sequence | None:
        tenant = self._pick()
        return None if tenant is None else self._fifos.head(tenant)

    def pop(self) -> Sequence:
        seq = self.peek()
        assert seq is not None, "pop from an empty queue"
        self._taking(seq.tenant)
        self._fifos.pop(seq.tenant)
        self._popped(seq)
        self._drop_if_empty(seq.tenant)
        return seq

    def remove(self, seq: Sequence) -> None:
        self._fifos.remove(seq)
        self._drop_if_empty(seq.tenant)

    def _drop_if_empty(self, tenant: int) -> None:
        if self._fifos.head(tenant) is None:
            self._tenant_idle(tenant)

    def tenant_heads(self, tenants: Collection[int], limit: int) -> list[Sequence]:
        heads = (self._fifos.head(tenant) for tenant in tenants)  # a tenant's oldest is its first
        return [head for head in heads if head is not None]

    def __len__(self) -> int:
        return len(self._fifos)

    def __iter__(self):
        return iter(self._fifos)


@mypyc_attr(allow_interpreted_subclasses=True)
class Policy(ABC):
    """Base of every policy. Subclasses set `name` and usually override `new_queue` and `victim`.

    A policy that shares the pool by tenant weight sets `shares_fairly`: the core then keeps each
    tenant to its fair share inside the step too (`scheduler.isolation`); one that orders by
    arrival, class or deadline does not, and its order alone decides.

    A policy that orders by service reads it from the scheduler's ledger (`self.ledger`, given at
    `bind`): tokens processed and generated, and the service weights, one definition for all."""

    name: ClassVar[str]
    # True when the order or the victim depends on service received (counters, deficits): a driver
    # that runs steps ahead must report them before the core decides anything (see sim.cluster).
    uses_service: ClassVar[bool] = False
    shares_fairly: ClassVar[bool] = False
    now: float = -math.inf  # the core's current time (`advance`)

    def advance(self, now: float) -> None:
        """The core's clock moved to `now` (called before every decision)."""
        self.now = now

    def bind(self, tenants: Seq[Tenant], ledger: Ledger) -> None:
        """Called once by the scheduler with its tenants (indexed as Sequence.tenant) and ledger."""
        self.tenants = tuple(tenants)
        self.ledger = ledger

    @abstractmethod
    def new_queue(self) -> WaitQueue: ...

    def victim(self, running: Seq[Sequence]) -> Sequence:
        """The running request to preempt when KV runs out. Default: the latest submitted."""
        return max(running, key=lambda seq: seq.order)

    def decision_keys(self, seq: Sequence) -> tuple[tuple[str, float], ...]:
        """What the order and the victim compare of `seq` now, named, for decision records
        (scheduler.decisions). Default: the submission order (first come, first served)."""
        return (("submitted", seq.order),)

    def on_backlogged(self, tenant: int, arrival: bool) -> None:
        """`tenant` just got its first queued request (`arrival`: a new request, not a requeue)."""

    def on_idle(self, tenant: int) -> None:
        """`tenant` just lost its last queued request."""

    def on_admit(self, seq: Sequence) -> None:
        """`seq` was just admitted to a worker (again, if `seq.preemptions` > 0)."""


@mypyc_attr(allow_interpreted_subclasses=True)
class LazyMinHeap:
    """Min-heap over integer ids whose keys only grow; stale entries are fixed when they surface.

    VTC counters only increase while a tenant is backlogged, so an entry's key can only be too
    small: when it reaches the top it is re-pushed with the current key instead of being updated
    on every charge (which would cost a heap operation per request per step).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._version: dict[int, int] = {}  # member -> version of its one live entry
        self._next_version = 0

    def add(self, item: int, key: float) -> None:
        version = self._next_version
        self._next_version += 1
        self._version[item] = version
        heapq.heappush(self._heap, (key, item, version))

    def discard(self, item: int) -> None:
        self._version.pop(item, None)

    def __contains__(self, item: int) -> bool:
        return item in self._version

    def __len__(self) -> int:
        return len(self._version)

    def __iter__(self):
        return iter(self._version)

    def min(self, key_of) -> int | None:
        """The member with the smallest current key_of(member); ties go to the smaller id."""
        heap = self._heap
        while heap:
            key, item, version = heap[0]
            if self._version.get(item) != version:
                heapq.heappop(heap)
            elif key != key_of(item):
                heapq.heapreplace(heap, (key_of(item), item, version))
            else:
                return item
        return None
