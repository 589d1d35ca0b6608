"""Locality-aware VTC: prefer the request whose prompt the asking worker has cached, within a bound.

After Deficit Longest Prefix Match (DLPM; Cao et al., 2025, "Locality-aware Fair Scheduling in LLM
Serving", arXiv:2501.14312), which serves requests in longest-prefix-match order while each client
stays within its fair share, "a high degree of prefix locality with a fairness guarantee" (its
abstract); D2LPM extends it to many workers. Here the share is kept by VTC's counters (the
counters, their charges and lift, and the victim are `VTC`'s, inherited): admission may pick any
queued request of a tenant whose counter is within `bound` of the smallest counter among the
queue's backlogged tenants, and picks the one with the longest cache hit on the asking worker
(`peek_for`). When no such request hits longer than VTC's own choice (the oldest request of the
tenant with the smallest counter), VTC's choice is taken, so `bound` = 0 is VTC exactly. Only
requests no longer than VTC's choice are preferred, so that a worker with room for VTC's choice
never stays idle for a hit it cannot hold (the core's planner admits the choice or nothing). Under late
binding every free worker asks the pool's queue, so each takes the requests whose prefixes it holds.

The bound. A tenant is admitted only while its counter is at most `bound` above every other
backlogged tenant's, where VTC admits only at the smallest counter: each step of VTC's argument
(Sheng et al., OSDI'24: |W_f - W_g| <= 2U, U = max(w_p L_input, w_q M)) holds with the other
counter raised by `bound`. So a counter never leads another backlogged one by more than U/w +
`bound`, and over any interval in which two tenants are backlogged together their weight-normalised
service differs by at most 2U / min(w) + 2 `bound` (the lead can swing from one side to the other).
Under late binding M is what all the pool's batches hold together.

`bound` is in normalised service units. The default, 4096, is U for 4096-token prompts at w_p = 1:
it lets a tenant run about one long request ahead for a hit, and keeps the slack within VTC's own
2U wherever U is at least that (a KV cache of 2048+ tokens at w_q = 2 already gives it).

The scan is bounded: a peek asks the worker about at most `scan` requests (default 32), the oldest
ceil(scan / E) of each of the E eligible tenants, lowest counter first, so it costs one counter
read per backlogged tenant of the queue and `scan` cache look-ups, whatever the queue's length.
The price: a hit queued behind a tenant's first few requests is missed until those go, and among
more than `scan` eligible tenants only the `scan` lowest counters' oldest requests are asked about
(their heads; a tenant's shared system prompt is usually there).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Callable, Iterator

from ..errors import ConfigError
from ..sequence import Sequence
from .base import Fifos
from .vtc import VTC, VTCQueue


class DLPM(VTC):
    name = "dlpm"

    def __init__(self, bound: float = 4096.0, scan: int = 32) -> None:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 <= bound < math.inf:
            raise ConfigError(f"scheduler.policy_params.bound: must be a finite number >= 0, got {bound!r}")
        if isinstance(scan, bool) or not isinstance(scan, int) or scan < 1:
            raise ConfigError(f"scheduler.policy_params.scan: must be an integer >= 1, got {scan!r}")
        self.bound = float(bound)
        self.scan = scan

    def new_queue(self) -> "DLPMQueue":
        return DLPMQueue(self)


class OrderedFifos(Fifos):
    """Queued requests per tenant in submission order, with out-of-order removal.

    Its head is `base.TenantFifos`'s (the oldest live request); kept in a deque per tenant so that a tenant's oldest k requests are its first k live entries. Removal
    is lazy and keyed by push, so a request removed from the middle and queued again (admitted out
    of order, then preempted) leaves no stale entry that could pass for it.
    """

    def __init__(self) -> None:
        self._lines: dict[int, deque[tuple[int, int, Sequence]]] = {}  # tenant -> (order, push, seq)
        self._live: dict[Sequence, int] = {}  # queued request -> the push of its live entry
        self._pushes = 0

    def push(self, seq: Sequence) -> bool:
        was_empty = self.head(seq.tenant) is None
        self._pushes += 1
        self._live[seq] = self._pushes
        _insert(self._lines.setdefault(seq.tenant, deque()), (seq.order, self._pushes, seq))
        return was_empty

    def head(self, tenant: int) -> Sequence | None:
        line = self._lines.get(tenant)
        while line and self._live.get(line[0][2]) != line[0][1]:
            line.popleft()
        if not line:
            self._lines.pop(tenant, None)
            return None
        return line[0][2]

    def oldest(self, tenant: int, k: int) -> list[Sequence]:
        """The tenant's `k` oldest queued requests; the dead entries among them are dropped for good."""
        line, live, kept = self._lines.get(tenant), self._live, []
        while line and len(kept) < k:
            entry = line.popleft()
            if live.get(entry[2]) == entry[1]:
                kept.append(entry)
        if line is not None:
            line.extendleft(reversed(kept))
        return [entry[2] for entry in kept]

    def pop(self, tenant: int) -> Sequence:
        seq = self.head(tenant)
        self._lines[tenant].popleft()
        del self._live[seq]
        return seq

    def remove(self, seq: Sequence) -> None:
        del self._live[seq]

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self):
        return iter(list(self._live))


def _insert(line: deque, entry: tuple[int, int, Sequence]) -> None:
    # Arrivals come in submission order; only a request queued again (preempted) goes back in
    # among older ones, and it is older than most of what waits, so the walk from the front is short.
    if not line or line[-1][0] < entry[0]:
        line.append(entry)
        return
    position = next(i for i, other in enumerate(line) if other[0] >= entry[0])
    line.insert(position, entry)


class DLPMQueue(VTCQueue):
    """VTC's queue (its `peek` and `pop` are VTC's order) whose `peek_for` prefers cache hits among
    the requests of the tenants within `bound` of the smallest counter."""

    def __init__(self, policy: DLPM) -> None:
        super().__init__(policy)
        self._fifos = OrderedFifos()
        self._backlogged: dict[int, None] = {}  # tenants with queued requests here

    def peek_for(self, cached: Callable[[Sequence], int]) -> Sequence | None:
        head = self.peek()
        policy = self._policy
        if head is None or not policy.bound:
            return head
        best, best_hit, most = head, cached(head), head.target
        # Strictly longer hits only: on a tie the earlier candidate (VTC's head, then the lower
        # counter, then the older request) keeps its place. And no longer a prompt than the head's,
        # so the choice holds no more blocks than VTC's would: where VTC's head fits, it fits too.
        for seq in self._candidates(policy.counter_of(head.tenant) + policy.bound):
            if seq.target <= most and (hit := cached(seq)) > best_hit:
                best, best_hit = seq, hit
        return best

    def _candidates(self, ceiling: float) -> Iterator[Sequence]:
        """At most `scan` requests: the tenants whose counter is at most `ceiling`, lowest counter
        (then id) first, each with its oldest ceil(scan / those tenants) requests."""
        counter_of, scan = self._policy.counter_of, self._policy.scan
        eligible = [(counter, tenant) for tenant in self._backlogged if (counter := counter_of(tenant)) <= ceiling]
        each = -(-scan // len(eligible))
        for _, tenant in heapq.nsmallest(scan, eligible):
            yield from self._fifos.oldest(tenant, each)

    def pop_chosen(self, seq: Sequence) -> Sequence:
        if seq is self.peek():
            return self.pop()
        self._fifos.remove(seq)
        self._popped(seq)
        self._drop_if_empty(seq.tenant)
        return seq

    def _tenant_backlogged(self, tenant: int) -> None:
        super()._tenant_backlogged(tenant)
        self._backlogged[tenant] = None

    def _tenant_idle(self, tenant: int) -> None:
        super()._tenant_idle(tenant)
        del self._backlogged[tenant]
