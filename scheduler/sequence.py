"""`Sequence`: the core's live record of one request (its state, its progress, its KV), which the
core alone writes; `scheduler.request` holds what a caller passes in (requests, tenants, SLOs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable

from .errors import ProtocolError
from .outcomes import FinishReason
from .request import TRANSITIONS, Request, RequestState

if TYPE_CHECKING:
    from .decodeset import DecodeSet


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
