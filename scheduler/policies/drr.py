"""Weighted deficit round robin (Shreedhar and Varghese, 1995) on tokens.

Backlogged tenants take turns. On its turn a tenant's deficit grows by quantum x weight; it admits
requests while the head's cost (w_p x prompt tokens, nothing for recompute) fits in its deficit,
then the turn passes on. Output tokens are charged as generated (w_q each), so a tenant whose
requests generate a lot goes into debt and waits more turns. A tenant that stops being backlogged
keeps its debt but loses its credit. The preemption victim is the latest request of the tenant
with the smallest deficit.
"""

from __future__ import annotations

from collections import deque

from ..errors import ConfigError
from ..request import Sequence
from .base import Policy, TenantQueue


class DRR(Policy):
    name = "drr"
    uses_service = True

    def __init__(self, quantum: float = 1024.0, w_p: float = 1.0, w_q: float = 2.0) -> None:
        for key, value, low in (("quantum", quantum, 0), ("w_p", w_p, -1), ("w_q", w_q, -1)):
            if not (isinstance(value, (int, float)) and value > low and value >= 0):
                rule = "> 0" if key == "quantum" else ">= 0"
                raise ConfigError(f"scheduler.policy_params.{key}: must be a number {rule}, got {value!r}")
        self.quantum = float(quantum)
        self.w_p = float(w_p)
        self.w_q = float(w_q)

    def bind(self, tenants) -> None:
        super().bind(tenants)
        self.deficit = [0.0] * len(self.tenants)

    def cost(self, seq: Sequence) -> float:
        return self.w_p * seq.request.prompt_tokens if seq.preemptions == 0 else 0.0

    def new_queue(self) -> "DRRQueue":
        return DRRQueue(self)

    def victim(self, running):
        return max(running, key=lambda seq: (-self.deficit[seq.tenant], seq.order))

    def on_idle(self, tenant: int) -> None:
        self.deficit[tenant] = min(self.deficit[tenant], 0.0)

    def on_service(self, tenant: int, prompt_tokens: int, output_tokens: int) -> None:
        if output_tokens:
            self.deficit[tenant] -= self.w_q * output_tokens


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
                policy.deficit[tenant] += policy.quantum * policy.tenants[tenant].weight
                self._granted = True
            if policy.cost(self._fifos.head(tenant)) <= policy.deficit[tenant]:
                return tenant
            active.rotate(-1)
            self._granted = False
        return None

    def _popped(self, seq: Sequence) -> None:
        self._policy.deficit[seq.tenant] -= self._policy.cost(seq)

    def _tenant_backlogged(self, tenant: int) -> None:
        self._active.append(tenant)

    def _tenant_idle(self, tenant: int) -> None:
        if self._active and self._active[0] == tenant:
            self._granted = False
        self._active.remove(tenant)
