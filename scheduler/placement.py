"""Where a request waits: the pool's one queue, or a worker's own.

Late binding (`global`): one queue that every worker pulls from when it has room, so no worker
idles while a request waits. Early binding (`round_robin`, `least_loaded`): the request is bound to
a worker's own queue at submit, as a router in front of independent engines does. A placement
answers both questions the core asks, so the core never branches on which kind it has: does a new
worker get a queue of its own (`worker_queue`), and where does a request wait (`choose`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Protocol

from .errors import ConfigError
from .policies.base import WaitQueue


@dataclass(frozen=True, slots=True)
class Place:
    """Where a request waits: `queue`, bound to `worker` (None: whichever worker pulls it)."""

    queue: WaitQueue
    worker: int | None


class PlaceView(Protocol):
    """What a placement may read of the pool when it places one request."""

    def load(self, worker: int) -> int:
        """The worker's outstanding requests: queued for it and running on it."""

    def kv_usage(self, worker: int) -> float:
        """The fraction of the worker's KV blocks in use (cached blocks no request holds are free)."""

    def cached_blocks(self, worker: int) -> int:
        """How many leading blocks of this request's prompt the worker has cached."""

    @property
    def prompt_blocks(self) -> int:
        """The full blocks of this request's prompt: the most it could find cached."""

    @property
    def prefix_key(self) -> int | None:
        """A hash of the start of this request's prompt (None without content): equal keys, equal
        first blocks, so consistent hashing on it gives a prefix a home."""


class Placement(ABC):
    name: ClassVar[str]

    def worker_queue(self, new_queue: Callable[[], WaitQueue]) -> WaitQueue | None:
        """The queue a worker joining the pool serves on its own; None: it serves the pool's."""
        return new_queue()

    @abstractmethod
    def choose(self, pool: WaitQueue, queues: Mapping[int, WaitQueue], view: PlaceView) -> Place:
        """Where a new request waits: the pool's queue, or one of the workers' own `queues` (by
        worker id, in id order, never empty), reading the pool through `view`."""


class GlobalQueue(Placement):
    name = "global"

    def worker_queue(self, new_queue):
        return None

    def choose(self, pool, queues, view):
        return Place(pool, None)


class RoundRobin(Placement):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, pool, queues, view):
        ids = list(queues)
        worker = ids[self._next % len(ids)]
        self._next += 1
        return Place(queues[worker], worker)


class LeastLoaded(Placement):
    """Fewest outstanding (queued + running) requests; ties to the lowest worker id."""

    name = "least_loaded"

    def choose(self, pool, queues, view):
        worker = min(queues, key=lambda w: (view.load(w), w))
        return Place(queues[worker], worker)


PLACEMENTS: dict[str, type[Placement]] = {cls.name: cls for cls in (GlobalQueue, RoundRobin, LeastLoaded)}


def make_placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise ConfigError(
            f"scheduler.placement: unknown placement {name!r}; allowed: {', '.join(sorted(PLACEMENTS))}"
        )
    return PLACEMENTS[name]()
