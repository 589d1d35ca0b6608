"""What a worker is to the runtime: the `Worker` protocol, the `Step` it is handed, the `StepDone`
it returns, and `SimulatedWorker`, which prices steps with a cost model and emits synthetic tokens.

A real engine plugs in by implementing `Worker`: it learns of new requests in `Step.joined` (with
their payload, e.g. the prompt), runs `Step.items` (every request of the step, decode set first,
then prefill chunks), forgets `Step.left`, and returns the token each sampling item produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Protocol

import anyio

from scheduler.actions import ScheduledItem, StepPlan
from scheduler.errors import ConfigError
from scheduler.events import StepResult


@dataclass(frozen=True, slots=True)
class Job:
    """A request joining a worker's batch (admitted, or readmitted after a preemption)."""

    id: Hashable
    prompt_tokens: int
    max_new_tokens: int
    generated: int  # tokens already generated: a recompute after preemption continues after them
    payload: Any = None  # whatever the caller submitted with the request (the prompt, for an engine)


@dataclass(frozen=True, slots=True)
class Step:
    """One step for a worker to run: the core's plan and the whole batch it implies."""

    plan: StepPlan
    items: tuple[ScheduledItem, ...]  # every request the step computes: decode set, then chunks
    joined: tuple[Job, ...] = ()  # requests admitted by this plan
    left: tuple[Hashable, ...] = ()  # requests to forget since the last step: ended, preempted, cancelled


@dataclass(frozen=True, slots=True)
class StepDone:
    """A step's result for the core and the token each sampling item produced, by request."""

    result: StepResult
    tokens: Mapping[Hashable, str] = field(default_factory=dict)


class Worker(Protocol):
    """An engine the runtime drives: one step at a time, never two steps at once."""

    kv_blocks: int  # the KV blocks it holds, of the scheduler's block size

    async def step(self, step: Step) -> StepDone: ...


class StepPricer(Protocol):
    """A cost model: seconds of one step of a plan (sim.costmodel.RooflineCostModel is one)."""

    def plan_step_time(self, plan: StepPlan) -> float: ...


@dataclass(frozen=True, slots=True)
class SimPrompt:
    """A payload for simulated workers: the prompt text and the true output length, where the
    worker samples EOS (as the simulator's workloads have it). None: run to max_new_tokens."""

    text: str = ""
    output_tokens: int | None = None


# Synthetic output, one ASCII character per token: under the serving tokenizer (one token per
# UTF-8 byte, scheduler.runtime.tokenizer) a client that tokenizes the text counts the tokens
# reported in `usage`.
SYNTHETIC_TEXT = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut " \
                 "labore et dolore magna aliqua. "


def synthetic_token(index: int) -> str:
    """The `index`-th token of every synthetic output: the same character for the same position."""
    return SYNTHETIC_TEXT[index % len(SYNTHETIC_TEXT)]


class SimulatedWorker:
    """A worker without a GPU: each step lasts the cost model's step time x `speed` (0: no wait,
    for tests; 1: as long as the simulator says), and every sampling item emits a synthetic token.
    It samples EOS where a request's payload says its output ends (`output_tokens`).

    A step that carries on from the last (it computes a request the last one did) keeps to the
    simulated GPU's own timeline: it ends its step time after the last one ended, not after the
    event loop got round to starting it, since a real GPU does not wait while the serving process
    streams the last step's tokens (vLLM's engine core runs beside its API server). At most one
    step's time is made up that way; a step after an idle spell starts when it is asked for.
    `last_step` is the last step's (start, end) on that timeline (the event loop's clock).

    A step ends on time to well under a millisecond: the event loop's timed waits round up to
    whole milliseconds (epoll's timeout), so the worker sleeps to within `TIMER_ROUNDING_S` of the
    end and yields to other tasks from there until the end has come."""

    def __init__(self, cost: StepPricer, kv_blocks: int, speed: float = 1.0) -> None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed < 0:
            raise ConfigError(f"speed: must be a finite number >= 0, got {speed!r}")
        self.cost = cost
        self.kv_blocks = kv_blocks
        self.speed = float(speed)
        self.steps = 0
        self._sampled: dict[Hashable, int] = {}  # tokens each request has sampled, recompute included
        self._length: dict[Hashable, int | None] = {}  # where each request samples EOS
        self._busy_until = -math.inf  # when the simulated GPU ends its last step (the loop's clock)
        self.last_step: tuple[float, float] | None = None

    async def step(self, step: Step) -> StepDone:
        carries_on = any(item.request_id in self._sampled for item in step.items)
        for rid in step.left:
            self._sampled.pop(rid, None)
            self._length.pop(rid, None)
        for job in step.joined:
            self._sampled[job.id] = job.generated
            self._length[job.id] = getattr(job.payload, "output_tokens", None)
        await self._run(self.cost.plan_step_time(step.plan) * self.speed, carries_on)
        self.steps += 1
        tokens: dict[Hashable, str] = {}
        eos = []
        for item in step.items:
            if not item.samples:
                continue
            rid = item.request_id
            sampled = self._sampled[rid] = self._sampled[rid] + 1
            tokens[rid] = synthetic_token(sampled - 1)
            length = self._length[rid]
            if length is not None and sampled >= length:
                eos.append(rid)
        return StepDone(StepResult(1, frozenset(eos)), tokens)

    async def _run(self, seconds: float, carries_on: bool) -> None:
        """Wait out one step of `seconds` on the simulated GPU's timeline."""
        if seconds <= 0:
            await anyio.sleep(0)  # still yields, so a pool that costs nothing cannot starve the loop
            return
        now = anyio.current_time()
        start = max(self._busy_until, now - seconds) if carries_on else now
        self._busy_until = start + seconds
        self.last_step = (start, self._busy_until)
        await wait_until(self._busy_until)


# asyncio and trio wait with epoll, whose timeout is whole milliseconds rounded up: a timed sleep
# wakes up to this late.
TIMER_ROUNDING_S = 0.001


async def wait_until(deadline: float) -> None:
    """Sleep until `deadline` (the event loop's clock), not a millisecond after it: a timed sleep to
    within TIMER_ROUNDING_S, then yields (other tasks run) until the deadline has passed. On a
    virtual clock, which only a sleep moves, the rest is a plain timed sleep."""
    await anyio.sleep_until(deadline - TIMER_ROUNDING_S)
    now = anyio.current_time()
    while now < deadline:
        await anyio.sleep(0)
        later = anyio.current_time()
        if later == now:
            await anyio.sleep_until(deadline)
            return
        now = later
