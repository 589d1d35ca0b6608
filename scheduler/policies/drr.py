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
from ..sequence import Sequence
from .base import Policy, TenantQueue


class DRR(Policy):
    name = "drr"
    uses_service = True
    shares_fairly = True

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
        """What the head must afford: its whole prompt at w_p (what it finds cached is charged less)."""
        return self.ledger.weights.prompt * seq.request.prompt_tokens if seq.preemptions == 0 else 0.0

    def quantum_of(self, tenant: int) -> float:
        return self.quantum * self.tenants[tenant].weight

    def grant(self, tenant: int) -> None:
        self._credit[tenant] += self.quantum_of(tenant)

    def on_admit(self, seq: Sequence) -> None:
        # the cost of what ran: its prompt, at w_cached for the tokens found in the prefix cache
        if seq.preemptions == 0:
            self._credit[seq.tenant] -= self.ledger.weights.of_prompt(seq.request.prompt_tokens, seq.cached_tokens)

    def new_queue(self) -> "DRRQueue":
        return DRRQueue(self)

    def victim(self, running):
        return max(running, key=lambda seq: (-self.deficit(seq.tenant), seq.order))

    def decision_keys(self, seq: Sequence) -> tuple[tuple[str, float], ...]:
        return (("deficit", self.deficit(seq.tenant)), ("cost", self.cost(seq)), ("submitted", seq.order))

    def on_idle(self, tenant: int) -> None:
        credit = self.deficit(tenant)
        if credit > 0:
            self._credit[tenant] -= credit


class DRRQueue(TenantQueue):
    """Backlogged tenants in turn order. Peeking finds whom the turn comes to without taking it;
    popping takes it: every tenant passed over gets its quanta, and the chosen one comes first."""

    def __init__(self, policy: DRR) -> None:
        super().__init__()
        self._policy = policy
        self._active: deque[int] = deque()  # backlogged tenants in turn order
        self._granted = False  # the tenant at the front has had its quantum this turn

    def _pick(self) -> int | None:
        turn = self._turn()
        return None if turn is None else self._active[turn[1]]

    def _turn(self) -> tuple[int, int] | None:
        """(rounds, position): the first tenant, in turn order over the fewest full rounds of
        turns, whose deficit then covers its head's cost; None when nothing is queued."""
        best = None
        for position, tenant in enumerate(self._active):
            rounds = self._rounds(tenant, self._grants_at_visit(position))
            if best is None or rounds < best[0]:
                best = (rounds, position)
                if rounds == 0:
                    break
        return best

    def _grants_at_visit(self, position: int) -> int:
        # the quantum a tenant gets when the turn reaches it, but the front one's if it had it already
        return 0 if position == 0 and self._granted else 1

    def _rounds(self, tenant: int, grants: int) -> int:
        """Full rounds before `tenant` can afford its head, counted as a turn grants (one quantum
        added at a time, so the sums are the ones taking the turns gives)."""
        policy = self._policy
        cost, credit, quantum = policy.cost(self._fifos.head(tenant)), policy.deficit(tenant), policy.quantum_of(tenant)
        for _ in range(grants):
            credit += quantum
        rounds = 0
        while cost > credit:
            credit += quantum
            rounds += 1
        return rounds

    def _taking(self, tenant: int) -> None:
        """Take the turn to `tenant`: the quanta of every visit on the way, then it is at the front."""
        rounds, chosen = self._turn()
        policy = self._policy
        for position, other in enumerate(self._active):
            visits = rounds + (1 if position <= chosen else 0)
            for _ in range(visits - (1 - self._grants_at_visit(position))):
                policy.grant(other)
        self._active.rotate(-chosen)
        self._granted = True

    def _tenant_backlogged(self, tenant: int) -> None:
        self._active.append(tenant)

    def _tenant_idle(self, tenant: int) -> None:
        if self._active and self._active[0] == tenant:
            self._granted = False
        self._active.remove(tenant)
