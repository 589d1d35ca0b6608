"""Requests, tenants and the request lifecycle.

`Request` is what a caller submits (immutable). `Sequence` is the core's mutable record of one
request while it lives: its state, how many tokens have KV, how many it generated, its KV blocks.
The lifecycle is data (`TRANSITIONS`); every state change goes through `Sequence.move`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Hashable

from .errors import ConfigError
from .prefix import Prefix



class RequestState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    # Members are singletons compared by identity, so identity hashes them: Enum's own __hash__
    # is a Python function, and every state change looks its state up in TRANSITIONS.
    __hash__ = object.__hash__


# None is the state before submit. RUNNING -> QUEUED is a preemption: the request's KV is freed
# and it waits to be recomputed (Sequence.preemptions counts them).
TRANSITIONS: dict[RequestState | None, frozenset[RequestState]] = {
    None: frozenset({RequestState.QUEUED, RequestState.REJECTED}),
    RequestState.QUEUED: frozenset({RequestState.RUNNING, RequestState.CANCELLED}),
    RequestState.RUNNING: frozenset({RequestState.QUEUED, RequestState.FINISHED, RequestState.CANCELLED}),
    RequestState.FINISHED: frozenset(),
    RequestState.CANCELLED: frozenset(),
    RequestState.REJECTED: frozenset(),
}

TERMINAL = frozenset({RequestState.FINISHED, RequestState.CANCELLED, RequestState.REJECTED})


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency objectives of a tenant, in milliseconds; None means no objective."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def __post_init__(self) -> None:
        for key in ("ttft_ms", "tpot_ms"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"slo.{key}: must be a number > 0, got {value!r}")


def _optional_positive(owner: str, key: str, value) -> None:
    if value is not None and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"{owner}{key}: must be a number > 0 or unset, got {value!r}")


@dataclass(frozen=True, slots=True)
class Quota:
    """A tenant's admission limits; None means unlimited.

    Rates are token buckets: `requests_per_s` refills a bucket of `request_burst` requests (default:
    one second's worth, at least 1); `tokens_per_s` refills a bucket of `token_burst` tokens
    (default: one second's worth), and each request costs prompt_tokens + max_new_tokens, what it
    may consume. Caps bound what the tenant has waiting in queues: `max_queued` requests and
    `max_queued_tokens` prompt tokens.
    """

    requests_per_s: float | None = None
    request_burst: float | None = None
    tokens_per_s: float | None = None
    token_burst: float | None = None
    max_queued: int | None = None
    max_queued_tokens: int | None = None

    def __post_init__(self) -> None:
        for key in ("requests_per_s", "request_burst", "tokens_per_s", "token_burst"):
            _optional_positive("quota.", key, getattr(self, key))
        for key in ("max_queued", "max_queued_tokens"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"quota.{key}: must be an integer >= 1 or unset, got {value!r}")


@dataclass(frozen=True, slots=True)
class Tenant:
    """A customer sharing the pool: its fair-share weight, priority class, SLO and quota."""

    name: str
    weight: float = 1.0
    priority: int = 0
    slo: SLO = SLO()
    quota: Quota = Quota()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"tenant.name: must be a non-empty string, got {self.name!r}")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"tenant {self.name!r}: weight must be a finite number > 0, got {self.weight!r}")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise ConfigError(f"tenant {self.name!r}: priority must be an integer, got {self.priority!r}")


@dataclass(frozen=True, slots=True)
class Request:
    """One generation request as the caller submits it. The core never sees the true output length."""

    id: Hashable
    tenant: str
    prompt_tokens: int
    max_new_tokens: int
    priority: int | None = None  # overrides the tenant's priority class when set
    prefix: Prefix | None = None  # the prompt's content, for prefix caching; None: shares nothing
