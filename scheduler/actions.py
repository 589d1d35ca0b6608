"""What the core hands out: admission verdicts, step plans, and per-step outputs.

Every class is a frozen, slotted dataclass, so drivers can keep, compare and log them freely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Hashable


class RejectReason(str, enum.Enum):
    """Why a request was refused; the complete, documented set."""

    RATE_LIMITED = "rate_limited"  # the tenant's token bucket is empty
    QUEUE_FULL = "queue_full"  # a per-tenant or global cap on queued requests or tokens
    PROMPT_TOO_LONG = "prompt_too_long"  # prompt + max_new_tokens exceeds a worker's KV capacity
    UNKNOWN_TENANT = "unknown_tenant"  # the tenant is not configured
    INVALID_REQUEST = "invalid_request"  # non-positive token counts, duplicate id, wrong types
    NO_WORKERS = "no_workers"  # the pool has no worker to run it


@dataclass(frozen=True, slots=True)
class Admitted:
    request_id: Hashable


@dataclass(frozen=True, slots=True)
class Rejected:
    request_id: Hashable
    reason: RejectReason
    detail: str = ""
    retry_after: float | None = None  # seconds until a retry could pass a rate limit, when known


@dataclass(frozen=True, slots=True)
class ScheduledItem:
    """One request's share of a step: compute `num_tokens` tokens on top of `context` cached ones.

    `samples` is true when the step completes the request's pending tokens, so the worker samples
    its next output token (the last prefill chunk, and every decode).
    """

    request_id: Hashable
    num_tokens: int
    context: int
    samples: bool

    @property
    def is_decode(self) -> bool:
        """One token on top of the cache: a decode (or a one-token prompt, which costs the same)."""
        return self.num_tokens == 1


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What a worker runs next, as a diff against its previous step.

    `items`: every request computed in this step. `admitted`: requests new to this worker.
    `preempted`: requests whose KV the worker must drop (they will be recomputed elsewhere or later).
    `released`: requests that ended (finished or cancelled) since the last plan; drop their KV too.
    `repeat`: how many identical decode steps may run before the core must be asked again.
    """

    worker: int
    items: tuple[ScheduledItem, ...]
    preempted: tuple[Hashable, ...] = ()
    repeat: int = 1
    admitted: tuple[Hashable, ...] = ()
    released: tuple[Hashable, ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(item.num_tokens for item in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True, slots=True)
class Emitted:
    """`count` new output tokens of a request were produced by the step that just completed."""

    request_id: Hashable
    count: int
    first: bool  # this includes the request's first token


@dataclass(frozen=True, slots=True)
class Finished:
    request_id: Hashable
    reason: str  # "eos" (the worker said so) or "length" (max_new_tokens reached)
    output_tokens: int
