"""Strict priority classes (lower value first), FCFS within a class, with optional aging.

With `aging` = a > 0 a request's effective priority falls by a per second of waiting:
p - a * (now - arrival). Every queued request ages at the same rate, so the order is that of the
time-free key p + a * arrival, and a heap keeps it. Starvation bound: a request of priority p that
arrived at t can only be overtaken by requests of priority p' arriving before t + (p - p') / a, so
it waits at most for the requests that arrive in that window (finitely many at a finite rate).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..sequence import Sequence
from .base import KeyedQueue, Policy


class Priority(Policy):
    name = "priority"

    def __init__(self, aging: float = 0.0) -> None:
        if not (isinstance(aging, (int, float)) and aging >= 0):
            raise ConfigError(f"scheduler.policy_params.aging: must be a number >= 0 (classes per second), got {aging!r}")
        self.aging = float(aging)

    def priority_of(self, seq: Sequence) -> int:
        own = seq.request.priority
        return self.tenants[seq.tenant].priority if own is None else own

    def key(self, seq: Sequence) -> float:
        return self.priority_of(seq) + self.aging * seq.arrival

    def new_queue(self) -> KeyedQueue:
        return KeyedQueue(self.key)

    def victim(self, running):
        return max(running, key=lambda seq: (self.key(seq), seq.order))

    def decision_keys(self, seq: Sequence) -> tuple[tuple[str, float], ...]:
        return (("priority", self.priority_of(seq)), ("aged_priority", self.key(seq)), ("submitted", seq.order))
