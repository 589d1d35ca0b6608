"""What the core hands out: admission verdicts, step plans, and per-step outputs.

Every class is a frozen, slotted dataclass, so drivers can keep, compare and log them freely.
The reasons they carry are scheduler.outcomes' tables (`RejectReason` is re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from .outcomes import FinishReason, RejectReason

__all__ = ["Admitted", "Emitted", "Finished", "RejectReason", "Rejected", "ScheduledItem", "StepOutputs",
           "StepPlan", "WorkerRemoved"]


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

    The worker keeps its running requests: `admitted` ones join them; `preempted` ones (to be
    recomputed later) and `released` ones (ended since the last plan) leave, and their KV is
    dropped. Its decode set is the running requests whose prefill is complete (a chunk that
    `samples` completes it): each computes one token in every step, `decodes` of them with
    `decode_context` tokens cached in total, so a plan's size does not grow with the batch.
    `chunks`: the step's prefill chunks (new requests, ongoing prefills, recompute).
    `repeat`: how many steps the plan may run before the core must be asked again. A plan of
    decodes alone repeats as it is; a plan whose chunks each complete a prompt that goes on
    decoding runs its first step as planned, then decodes of all of them (`decodes + len(chunks)`).
    """

    worker: int
    chunks: tuple[ScheduledItem, ...] = ()
    decodes: int = 0
    decode_context: int = 0
    repeat: int = 1
    admitted: tuple[Hashable, ...] = ()
    preempted: tuple[Hashable, ...] = ()
    released: tuple[Hashable, ...] = ()

    @property
    def num_tokens(self) -> int:
        return self.decodes + sum(item.num_tokens for item in self.chunks)

    def __bool__(self) -> bool:
        return bool(self.chunks) or self.decodes > 0


@dataclass(frozen=True, slots=True)
class Emitted:
    """`count` new output tokens of a request were produced by the steps just reported: a prefill
    chunk's sampled token, and in a run that goes on decoding after it, one per later step."""

    request_id: Hashable
    count: int
    first: bool  # this includes the request's first token


@dataclass(frozen=True, slots=True)
class Finished:
    request_id: Hashable
    reason: FinishReason  # EOS (the worker said so) or LENGTH (max_new_tokens reached)
    output_tokens: int


@dataclass(frozen=True, slots=True)
class StepOutputs:
    """What a step report produced.

    Each of the plan's `decoded` decode-set requests (those still running when the report came)
    sampled one token in each of the report's `steps` steps; those tokens are counted, not listed.
    `emitted`: tokens sampled by prefill chunks (a request's first token, and its first after a
    recompute), with the decode steps that followed them in the same report. `finished`: requests
    that ended, from the decode set and from chunks.
    """

    steps: int
    decoded: int = 0
    emitted: tuple[Emitted, ...] = ()
    finished: tuple[Finished, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerRemoved:
    """What `remove_worker` did with the worker's requests.

    `requeued`: its running and queued requests, queued again (running ones to be recomputed).
    `ended`: requests that no remaining worker can hold (prompt + max_new_tokens exceeds every
    one's KV cache, which happens when a smaller worker joined after they were accepted); they are
    cancelled with finish_reason `FinishReason.NO_WORKER_FITS` rather than left waiting forever.
    """

    requeued: tuple[Hashable, ...]
    ended: tuple[Hashable, ...] = ()
