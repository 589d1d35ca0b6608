"""First come, first served: admit in submission order; preempt the latest submitted."""

from __future__ import annotations

from .base import KeyedQueue, Policy


class FCFS(Policy):
    name = "fcfs"

    def new_queue(self) -> KeyedQueue:
        return KeyedQueue(lambda seq: 0)
