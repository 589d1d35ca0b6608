"""Requests, tenants and the request lifecycle.

`Request` is what a caller submits (immutable). `Sequence` is the core's mutable record of one
request while it lives: its state, how many tokens have KV, how many it generated, its KV blocks.
The lifecycle is data (`TRANSITIONS`); every state change goes through `Sequence.move`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable

from .errors import ConfigError, ProtocolError
from .prefix import Prefix
from .outcomes import FinishReason

if TYPE_CHECKING:
    from .decodeset import DecodeSet


class RequestState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


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


class Sequence:
    """The core's live record of one request. Read it; only the core writes it.

    While the request decodes, its worker's `DecodeSet` advances it a token per step without
    touching it: `computed`, `generated` and `blocks` then read the set's step clock.
    """

    __slots__ = (
        "request", "tenant", "order", "state", "arrival", "admit_time", "first_token_time",
        "finish_time", "finish_reason", "_computed", "_generated", "charged_prompt", "_blocks",
        "worker", "preemptions", "decoding_on", "joined", "join_id", "hashes", "cached", "cached_tokens",
    )

    def __init__(self, request: Request, tenant: int, order: int, now: float) -> None:
        self.request = request
        self.tenant = tenant  # index into the scheduler's tenants
        self.order = order  # submission order, the tie-breaker of every queue
        self.state: RequestState | None = None
        self.arrival = now
        self.admit_time: float | None = None
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.finish_reason: FinishReason | None = None
        self._computed = 0  # tokens whose KV exists on the worker (when it joined the decode set)
        self._generated = 0  # output tokens sampled and streamed so far (idem)
        self.charged_prompt = 0  # prompt tokens already counted as service (recompute is free)
        self._blocks = 0  # KV blocks held (outside the decode set)
        self.worker: int | None = None
        self.preemptions = 0
        self.decoding_on: DecodeSet | None = None  # the set advancing it, while it decodes
        self.joined = 0  # that set's clock when it joined
        self.join_id = 0  # which join it is, for the set's lazily cleaned heap
        self.hashes: tuple[int, ...] = ()  # its prompt's full KV blocks' hashes (with prefix caching)
        self.cached = 0  # its leading blocks held through its worker's prefix cache (shared)
        self.cached_tokens = 0  # prompt tokens found cached at its first admission

    @property
    def computed(self) -> int:
        """Tokens whose KV exists on the worker."""
        decode = self.decoding_on
        return self._computed if decode is None else self._computed + decode.clock - self.joined

    @computed.setter
    def computed(self, value: int) -> None:
        self._require_outside_decode_set()
        self._computed = value

    @property
    def generated(self) -> int:
        """Output tokens sampled (and streamed) so far."""
        decode = self.decoding_on
        return self._generated if decode is None else self._generated + decode.clock - self.joined

    @generated.setter
    def generated(self, value: int) -> None:
        self._require_outside_decode_set()
        self._generated = value

    @property
    def blocks(self) -> int:
        """KV blocks held."""
        decode = self.decoding_on
        return self._blocks if decode is None else decode.blocks_of(self)

    @blocks.setter
    def blocks(self, value: int) -> None:
        self._require_outside_decode_set()
        self._blocks = value

    def _require_outside_decode_set(self) -> None:
        if self.decoding_on is not None:
            raise ProtocolError(f"request {self.id!r}: written while its decode set advances it")

    @property
    def id(self) -> Hashable:
        return self.request.id

    @property
    def target(self) -> int:
        """Tokens that must have KV before the next token can be sampled."""
        return self.request.prompt_tokens + self.generated

    @property
    def remaining(self) -> int:
        """Tokens to compute before the next sample: 1 while decoding, more while prefilling."""
        return self.target - self.computed

    def move(self, state: RequestState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise ProtocolError(
                f"request {self.id!r}: cannot go from {self._name(self.state)} to {state.value}"
            )
        self.state = state

    @staticmethod
    def _name(state: RequestState | None) -> str:
        return "new" if state is None else state.value

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.id!r}, state={self._name(self.state)}, computed={self.computed}, "
            f"generated={self.generated}, blocks={self.blocks}, worker={self.worker})"
        )
