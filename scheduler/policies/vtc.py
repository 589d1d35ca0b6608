"""Virtual Token Counter (Sheng et al., OSDI'24), weighted.

Each tenant has a counter of the service it received, w_p * prompt tokens + w_q * output tokens,
divided by its weight. As in the paper, a request's prompt is charged when it is admitted (so the
next admission in the same step already sees it; recompute after preemption is not charged) and
each output token when it is generated. Admission takes the oldest queued request of the backlogged tenant with the
smallest counter. A tenant that becomes backlogged with a new request has its counter lifted to at
least the smallest counter among backlogged tenants (or, when none is, to the counter of the last
tenant that stopped being backlogged), so idle time earns no credit. The preemption victim is the
latest running request of the tenant with the largest counter.

Output tokens of decoding requests are charged lazily (`lazy_output`): a counter is the settled
`counters[tenant]` plus what the tenant's decoding requests generated since, read from the decode
sets' clocks, so a step charges nothing and a decision reads only the counters it compares.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..request import Sequence
from .base import LazyMinHeap, Policy, TenantQueue


class VTC(Policy):
    name = "vtc"
    uses_service = True
    lazy_output = True

    def __init__(self, w_p: float = 1.0, w_q: float = 2.0) -> None:
        for key, value in (("w_p", w_p), ("w_q", w_q)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(f"scheduler.policy_params.{key}: must be a number >= 0, got {value!r}")
        self.w_p = float(w_p)
        self.w_q = float(w_q)

    def bind(self, tenants) -> None:
        super().bind(tenants)
        self.counters = [0.0] * len(self.tenants)
        self._inverse_weight = [1.0 / tenant.weight for tenant in self.tenants]
        self._backlogged = LazyMinHeap()
        self._last_idle: int | None = None  # the tenant that most recently stopped being backlogged

    def counter_of(self, tenant: int) -> float:
        """The tenant's counter now: settled service plus its decoding requests' tokens since."""
        pending = self.decoding.pending(tenant)
        if not pending:
            return self.counters[tenant]
        return self.counters[tenant] + self.w_q * pending * self._inverse_weight[tenant]

    def new_queue(self) -> "VTCQueue":
        return VTCQueue(self)

    def victim(self, running):
        counter_of = self.counter_of
        return max(running, key=lambda seq: (counter_of(seq.tenant), seq.order))

    def on_backlogged(self, tenant: int, arrival: bool) -> None:
        self.decoding.settle(tenant)  # counters[tenant] is then its counter now
        if arrival:
            lowest = self._backlogged.min(self.counter_of)
            if lowest is not None:
                floor = self.counter_of(lowest)
            else:  # its counter now, service received since it left the queue included
                floor = 0.0 if self._last_idle is None else self.counter_of(self._last_idle)
            self.counters[tenant] = max(self.counters[tenant], floor)
        self._backlogged.add(tenant, self.counters[tenant])

    def on_idle(self, tenant: int) -> None:
        self._backlogged.discard(tenant)
        self._last_idle = tenant

    def on_admit(self, seq: Sequence) -> None:
        if seq.preemptions == 0:
            self._charge(seq.tenant, self.w_p * seq.request.prompt_tokens)

    def on_service(self, tenant: int, prompt_tokens: int, output_tokens: int) -> None:
        if output_tokens:
            self._charge(tenant, self.w_q * output_tokens)

    def _charge(self, tenant: int, cost: float) -> None:
        self.counters[tenant] += cost * self._inverse_weight[tenant]


class VTCQueue(TenantQueue):
    """Per-tenant FIFOs, and the tenants with queued requests ordered by counter."""

    def __init__(self, policy: VTC) -> None:
        super().__init__()
        self._policy = policy
        self._tenants = LazyMinHeap()

    def _pick(self) -> int | None:
        return self._tenants.min(self._policy.counter_of)

    def _tenant_backlogged(self, tenant: int) -> None:
        self._tenants.add(tenant, self._policy.counter_of(tenant))

    def _tenant_idle(self, tenant: int) -> None:
        self._tenants.discard(tenant)


class LCF(VTC):
    """Least counter first: VTC without the lift, so a tenant returning from idle is owed its idle
    time and starves the others until it has caught up (the baseline of the VTC paper)."""

    name = "lcf"

    def on_backlogged(self, tenant: int, arrival: bool) -> None:
        self._backlogged.add(tenant, self.counter_of(tenant))
