"""Weighted deficit round robin (Shreedhar and Varghese, 1995) on tokens.

Backlogged tenants take turns. On its turn a tenant's deficit grows by quantum x weight; it admits
requests while the head's cost (w_p x prompt tokens, nothing for recompute) fits in its deficit,
then the turn passes on. Output tokens are charged as generated (w_q each, read from the ledger),
so a tenant whose requests generate a lot goes into debt and waits more turns. A tenant that stops
being backlogged keeps its debt but loses its credit. The preemption victim is the latest request
of the tenant with the smallest deficit. w_p and w_q are the scheduler's service weights.
"""

from __future__ import annotations

from collections import deque

from ..errors import ConfigError
from ..request import Sequence
from .base import Policy, TenantQueue


class DRR(Policy):
    name = "drr"
    uses_service = True

    def __init__(self, quantum: float = 1024.0) -> None:
        if isinstance(quantum, bool) or not isinstance(quantum, (int, float)) or not quantum > 0:
            raise ConfigError(f"scheduler.policy_params.quantum: must be a number > 0, got {quantum!r}")
        self.quantum = float(quantum)

    def bind(self, tenants, ledger) -> None:
        super().bind(tenants, ledger)
        self._credit = [0.0] * len(self.tenants)  # quanta granted less prompt costs admitted

    def deficit(self, tenant: int) -> float:
        """Credit left: quanta granted - prompts admitted - w_q x output tokens generated."""
        output = self.ledger.output_tokens(tenant)
        return self._credit[tenant] - self.ledger.weights.output * output if output else self._credit[tenant]

    def cost(self, seq: Sequence) -> float:
        return self.ledger.weights.prompt * seq.request.prompt_tokens if seq.preemptions == 0 else 0.0

    def grant(self, tenant: int) -> None:
        self._credit[tenant] += self.quantum * self.tenants[tenant].weight

    def charge(self, seq: Sequence) -> None:
        self._credit[seq.tenant] -= self.cost(seq)

    def new_queue(self) -> "DRRQueue":
        return DRRQueue(self)

    def victim(self, running):
        return max(running, key=lambda seq: (-self.deficit(seq.tenant), seq.order))

    def on_idle(self, tenant: int) -> None:
        credit = self.deficit(tenant)
        if credit > 0:
            self._credit[tenant] -= credit


class DRRQueue(TenantQueue):
    def __init__(self, policy: DRR) -> None:
        super().__init__()
        self._policy = policy
        self._active: deque[int] = deque()  # backlogged tenants in turn order
        self._granted = False  # the tenant at the front has had its quantum this turn

    def _pick(self) -> int | None:
        policy, active = self._policy, self._active
        while active:
            tenant = active[0]
            if not self._granted:
                policy.grant(tenant)
                self._granted = True
            if policy.cost(self._fifos.head(tenant)) <= policy.deficit(tenant):
                return tenant
            active.rotate(-1)
            self._granted = False
        return None

    def _popped(self, seq: Sequence) -> None:
        self._policy.charge(seq)

    def _tenant_backlogged(self, tenant: int) -> None:
        self._active.append(tenant)

    def _tenant_idle(self, tenant: int) -> None:
        if self._active and self._active[0] == tenant:
            self._granted = False
        self._active.remove(tenant)
