"""Virtual Token Counter (Sheng et al., OSDI'24), weighted.

Each tenant has a counter of the service it received, w_p * prompt tokens + w_q * output tokens,
divided by its weight, with the scheduler's service weights (`scheduler.service_weights`). As in
the paper, a request's prompt is charged when it is admitted (so the next admission in the same
step already sees it; recompute after preemption is not charged; its tokens found in the prefix
cache at w_cached) and each output token when it is generated. Admission takes the oldest queued request of the backlogged tenant with the smallest
counter. A tenant that becomes backlogged with a new request has its counter lifted to at least
the smallest counter among backlogged tenants (or, when none is, to the counter of the last tenant
that stopped being backlogged), so idle time earns no credit; under early binding it is also
lifted to at least the smallest counter among the tenants queued in the worker's queue it joins,
which alone that worker admits from (lifted only to a tenant waiting on another worker, it would
be owed the difference here and take it from the tenants beside it). The preemption victim is the latest
running request of the tenant with the largest counter.

A counter is VTC's own charges (prompts at admission, lifts) plus w_q x the output tokens the
ledger says the tenant generated: the output part is read, never copied, so it is what the
ledger, the results and the metrics count, and a decode step charges nothing.
"""

from __future__ import annotations

from ..sequence import Sequence
from .base import LazyMinHeap, Policy, TenantQueue, mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True)
class VTC(Policy):
    name = "vtc"
    uses_service = True
    shares_fairly = True

    def bind(self, tenants, ledger) -> None:
        super().bind(tenants, ledger)
        self._charged = [0.0] * len(self.tenants)  # prompts charged at admission and lifts, normalised
        self._inverse_weight = [1.0 / tenant.weight for tenant in self.tenants]
        self._backlogged = LazyMinHeap()
        self._last_idle: int | None = None  # the tenant that most recently stopped being backlogged

    def counter_of(self, tenant: int) -> float:
        """The tenant's counter now: its charges plus w_q x the output tokens it has generated."""
        output = self.ledger.output_tokens(tenant)
        if not output:
            return self._charged[tenant]
        return self._charged[tenant] + self.ledger.weights.output * output * self._inverse_weight[tenant]

    def new_queue(self) -> "VTCQueue":
        return VTCQueue(self)

    def victim(self, running):
        counter_of = self.counter_of
        return max(running, key=lambda seq: (counter_of(seq.tenant), seq.order))

    def decision_keys(self, seq: Sequence) -> tuple[tuple[str, float], ...]:
        return (("counter", self.counter_of(seq.tenant)), ("submitted", seq.order))

    def on_backlogged(self, tenant: int, arrival: bool) -> None:
        if arrival:
            lowest = self._backlogged.min(self.counter_of)
            if lowest is not None:
                floor = self.counter_of(lowest)
            else:  # its counter now, service received since it left the queue included
                floor = 0.0 if self._last_idle is None else self.counter_of(self._last_idle)
            self._lift(tenant, floor)
        self._backlogged.add(tenant, self.counter_of(tenant))

    def lift_in_queue(self, tenant: int, queued: LazyMinHeap) -> None:
        """`tenant`'s new request is its first in a queue: lift it to the smallest counter among
        that queue's `queued` tenants (under late binding the pool's queue, so no higher than
        `on_backlogged` lifted it)."""
        lowest = queued.min(self.counter_of)
        if lowest is not None:
            self._lift(tenant, self.counter_of(lowest))

    def _lift(self, tenant: int, floor: float) -> None:
        counter = self.counter_of(tenant)
        if floor > counter:
            self._charged[tenant] += floor - counter

    def on_idle(self, tenant: int) -> None:
        self._backlogged.discard(tenant)
        self._last_idle = tenant

    def on_admit(self, seq: Sequence) -> None:
        if seq.preemptions == 0:
            tenant = seq.tenant
            cost = self.ledger.weights.of_prompt(seq.request.prompt_tokens, seq.cached_tokens)
            self._charged[tenant] += cost * self._inverse_weight[tenant]


@mypyc_attr(allow_interpreted_subclasses=True)
class VTCQueue(TenantQueue):
    """Per-tenant FIFOs, and the tenants with queued requests ordered by counter."""

    def __init__(self, policy: VTC) -> None:
        super().__init__()
        self._policy = policy
        self._tenants = LazyMinHeap()

    def push(self, seq: Sequence) -> None:
        if seq.preemptions == 0 and self._fifos.head(seq.tenant) is None:  # a new request, its tenant's first here
            self._policy.lift_in_queue(seq.tenant, self._tenants)
        super().push(seq)

    def _pick(self) -> int | None:
        return self._tenants.min(self._policy.counter_of)

    def _tenant_backlogged(self, tenant: int) -> None:
        self._tenants.add(tenant, self._policy.counter_of(tenant))

    def _tenant_idle(self, tenant: int) -> None:
        self._tenants.discard(tenant)

    def peek_among(self, allowed, cached) -> Sequence | None:
        """The head of the allowed tenant with the smallest counter (then the smaller index)."""
        counter_of = self._policy.counter_of
        tenants = [tenant for tenant in self._tenants if allowed(tenant)]
        return self._fifos.head(min(tenants, key=lambda t: (counter_of(t), t))) if tenants else None

    def pop_chosen(self, seq: Sequence) -> Sequence:
        if seq is self.peek():
            return self.pop()
        assert seq is self._fifos.head(seq.tenant), "pop_chosen of a request the queue did not choose"
        self._fifos.pop(seq.tenant)
        self._popped(seq)
        self._drop_if_empty(seq.tenant)
        return seq


@mypyc_attr(allow_interpreted_subclasses=True)
class LCF(VTC):
    """Least counter first: VTC without the lift, so a tenant returning from idle is owed its idle
    time and starves the others until it has caught up (the baseline of the VTC paper)."""

    name = "lcf"

    def on_backlogged(self, tenant: int, arrival: bool) -> None:
        self._backlogged.add(tenant, self.counter_of(tenant))

    def lift_in_queue(self, tenant: int, queued: LazyMinHeap) -> None:
        pass
