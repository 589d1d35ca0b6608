"""Which worker a request goes to.

Late binding (`global`): one queue that every worker pulls from when it has room, so no worker
idles while a request waits. Early binding (`round_robin`, `least_loaded`): the request is bound to
a worker's own queue at submit, as a router in front of independent engines does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Sequence

from .errors import ConfigError


class Placement(ABC):
    name: ClassVar[str]
    late_binding: ClassVar[bool] = False

    @abstractmethod
    def choose(self, workers: Sequence[int], load: Callable[[int], int]) -> int:
        """Pick one of `workers` (never empty) for a new request; `load(w)` is w's outstanding requests."""


class GlobalQueue(Placement):
    name = "global"
    late_binding = True

    def choose(self, workers, load):
        raise AssertionError("late binding places nothing at submit")


class RoundRobin(Placement):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, workers, load):
        worker = workers[self._next % len(workers)]
        self._next += 1
        return worker


class LeastLoaded(Placement):
    """Fewest outstanding (queued + running) requests; ties to the lowest worker id."""

    name = "least_loaded"

    def choose(self, workers, load):
        return min(workers, key=lambda w: (load(w), w))


PLACEMENTS: dict[str, type[Placement]] = {cls.name: cls for cls in (GlobalQueue, RoundRobin, LeastLoaded)}


def make_placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise ConfigError(
            f"scheduler.placement: unknown placement {name!r}; allowed: {', '.join(sorted(PLACEMENTS))}"
        )
    return PLACEMENTS[name]()
