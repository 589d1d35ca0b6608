"""Plans and outputs seen request by request, through one `BatchMirror` per worker, as a driver
that streams every request's tokens sees them."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.actions import ScheduledItem, StepPlan
from scheduler.batch import BatchMirror
from scheduler.core import Scheduler
from scheduler.events import StepResult

# id(scheduler) -> (the scheduler, its mirrors by worker). Not a weak mapping: a compiled Scheduler
# takes no weak references. The scheduler is held so that its id is not reused; forget_all() (after
# every test) lets them go.
_MIRRORS: dict[int, tuple[Scheduler, dict[int, BatchMirror]]] = {}


def mirror_of(scheduler: Scheduler, worker: int) -> BatchMirror:
    """The batch mirror of one worker of `scheduler` (tests see every item through it)."""
    return _MIRRORS.setdefault(id(scheduler), (scheduler, {}))[1].setdefault(worker, BatchMirror())


def forget_all() -> None:
    _MIRRORS.clear()


@dataclass(frozen=True)
class FullPlan:
    """A StepPlan and every item of its first step, as the worker's mirror lists them."""

    plan: StepPlan
    items: tuple[ScheduledItem, ...]

    def __getattr__(self, name):
        return getattr(self.plan, name)

    def __bool__(self) -> bool:
        return bool(self.plan)


def plan_full(scheduler: Scheduler, worker: int, now: float) -> FullPlan:
    plan = scheduler.plan(worker, now)
    return FullPlan(plan, mirror_of(scheduler, worker).step(plan))


def complete_full(scheduler: Scheduler, worker: int, result: StepResult, now: float) -> list:
    """complete(), its outputs request by request: Emitted (and Finished) in step order."""
    outputs = scheduler.complete(worker, result, now)
    return mirror_of(scheduler, worker).report(outputs)


def cancel_full(scheduler: Scheduler, rid, now: float) -> bool:
    """cancel(), also dropping the request from its worker's mirror."""
    seq = scheduler.sequence(rid)
    if seq is not None and seq.worker is not None and seq.worker in scheduler.workers:
        mirror_of(scheduler, seq.worker).drop(rid)
    return scheduler.cancel(rid, now)




def forget_worker(scheduler: Scheduler, worker: int) -> None:
    """The worker left the pool: a worker added later under its id starts with a fresh mirror."""
    _MIRRORS.get(id(scheduler), (scheduler, {}))[1].pop(worker, None)
