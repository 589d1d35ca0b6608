"""The simulation kernel: a heap of (time, seq, callback, args) and a virtual clock. Nothing else."""

from __future__ import annotations

import heapq
import math
from typing import Any, Callable


class EventLoop:
    __slots__ = ("now", "_heap", "_seq")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0  # ties run in the order they were scheduled: determinism

    def at(self, time: float, callback: Callable[..., Any], *args: Any) -> None:
        if time < self.now:
            raise ValueError(f"cannot schedule at {time} before now={self.now}")
        heapq.heappush(self._heap, (time, self._seq, callback, args))
        self._seq += 1

    def pending(self) -> int:
        return len(self._heap)

    def run(self, until: float = math.inf) -> None:
        """Run events in time order until none is left or the next is later than `until`."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            time, _, callback, args = heapq.heappop(heap)
            self.now = time
            callback(*args)
