"""How a request ends and why: the one table of outcomes, of finish reasons and of rejections.

Owns `Outcome`, `FinishReason` and `RejectReason`. The core, the simulator's records and summary,
the runtime's handles, the HTTP server and the Prometheus metrics all take their values from
here. Each is a `StrEnum`, so a member prints, formats and serialises (JSON, label values) as its
plain string. `code` is a member's index in its table, the one integer encoding (the simulator's
numpy records store it); `from_code` reads it back.
"""

from __future__ import annotations

import enum


class Table(enum.StrEnum):
    """A table of strings whose members also have a stable integer code: their declaration order.
    New members go at the end, so the codes already written keep their meaning."""

    @property
    def code(self) -> int:
        return list(type(self)).index(self)

    @classmethod
    def from_code(cls, code: int) -> Table:
        return list(cls)[code]


class Outcome(Table):
    """How a request ended. A running request has no outcome yet."""

    FINISHED = "finished"  # it produced its last token (or its consumer ended it as complete)
    REJECTED = "rejected"  # refused at submission, with a RejectReason
    CANCELLED = "cancelled"  # ended before its last token, with a FinishReason that says why
    UNFINISHED = "unfinished"  # still queued or running when a simulation's horizon came

    @property
    def ended(self) -> bool:
        """The request is over (a server counts it); an unfinished one is only cut off."""
        return self is not Outcome.UNFINISHED


class FinishReason(Table):
    """Why a request that was admitted ended: finished, or cancelled."""

    EOS = "eos"  # finished: the worker sampled end-of-sequence
    LENGTH = "length"  # finished: max_new_tokens reached
    STOP = "stop"  # finished: the consumer ended it at a stop sequence
    NO_WORKER_FITS = "no_worker_fits"  # cancelled by the core: no remaining worker's KV cache holds it
    NO_WORKERS = "no_workers"  # cancelled: the pool lost its last worker
    SHUTDOWN = "shutdown"  # cancelled: the runtime stopped
    SLOW_CONSUMER = "slow_consumer"  # cancelled: the consumer fell a whole stream buffer behind
    ABANDONED = "abandoned"  # cancelled: the consumer stopped reading without cancelling
    CLOSED = "closed"  # cancelled: the consumer closed its handle before the end
    CANCELLED = "cancelled"  # cancelled: the consumer's scope was cancelled (a deadline, say)
    CLIENT_DISCONNECTED = "client_disconnected"  # cancelled: the HTTP client went away
    ABORTED = "aborted"  # cancelled: the HTTP response ended before the request did


class RejectReason(Table):
    """Why a request was refused; the complete, documented set."""

    RATE_LIMITED = "rate_limited"  # the tenant's token bucket is empty
    QUEUE_FULL = "queue_full"  # a per-tenant or global cap on queued requests or tokens
    PROMPT_TOO_LONG = "prompt_too_long"  # prompt + max_new_tokens exceeds a worker's KV capacity
    UNKNOWN_TENANT = "unknown_tenant"  # the tenant is not configured
    INVALID_REQUEST = "invalid_request"  # non-positive token counts, duplicate id, wrong types
    NO_WORKERS = "no_workers"  # the pool has no worker to run it
