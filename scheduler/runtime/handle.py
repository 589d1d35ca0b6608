"""The consumer's side of one request: a `RequestHandle` that yields tokens as they are produced,
and the errors a submission or a stream can end with.

Tokens travel through a bounded buffer of the handle's own (a deque and, while the consumer
waits, one event: a token costs no pass of the event loop, which a memory object stream's
checkpoint per item would; with hundreds of streams that is most of the serving process's CPU).
The worker loop never waits on it: a consumer that falls `stream_buffer` tokens behind (one that
stops reading, or never reads) has its request cancelled with the reason SLOW_CONSUMER, which
frees its KV blocks at once; it can still read what was buffered, then its iteration raises
`RequestCancelled`. Closing the handle (leaving
`async with`, `aclose()`, a cancelled scope such as a `fail_after` deadline, a client that
disconnects) cancels the request if it is still running. Outcomes and reasons are the members of
scheduler.outcomes' tables.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Hashable

import anyio
import anyio.lowlevel

from scheduler.actions import Rejected
from scheduler.outcomes import FinishReason, Outcome, RejectReason
from scheduler.request import Request

if TYPE_CHECKING:
    from .driver import Runtime

class RequestRejected(Exception):
    """The scheduler refused the request; `reason` is one of `RejectReason`."""

    def __init__(self, verdict: Rejected) -> None:
        super().__init__(f"{verdict.reason.value}: {verdict.detail}")
        self.verdict = verdict

    @property
    def reason(self) -> RejectReason:
        return self.verdict.reason

    @property
    def detail(self) -> str:
        return self.verdict.detail

    @property
    def retry_after(self) -> float | None:
        return self.verdict.retry_after


class RequestCancelled(Exception):
    """The request ended before its last token: `reason` (a FinishReason) says why (SLOW_CONSUMER,
    SHUTDOWN, ...)."""

    def __init__(self, request_id: Hashable, reason: FinishReason) -> None:
        super().__init__(f"request {request_id!r} was cancelled: {reason}")
        self.request_id = request_id
        self.reason = reason


class RequestHandle:
    """A submitted request. `async for token in handle` yields its tokens (str); use it as an async
    context manager so that leaving early cancels it. Times are the runtime's clock (seconds since
    the runtime started); `outcome` is None while it runs, then Outcome.FINISHED or CANCELLED, with
    `reason`, a FinishReason (EOS / LENGTH / STOP, or why it was cancelled)."""

    def __init__(self, runtime: Runtime, request: Request, payload: Any, arrival: float, buffer: int) -> None:
        self.request = request
        self.payload = payload
        self.arrival = arrival
        self.admitted_at: float | None = None  # first admission
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.tokens = 0  # tokens produced (delivered into the stream)
        self.outcome: Outcome | None = None
        self.reason: FinishReason | None = None
        self._runtime = runtime
        self._buffer = buffer
        self._queued: deque[str] = deque()  # tokens produced, not yet read
        self._reading = True  # until the consumer closes its end
        self._waiter: anyio.Event | None = None  # set when a token or the end comes
        self._ended = anyio.Event()

    @property
    def id(self) -> Hashable:
        return self.request.id

    @property
    def tenant(self) -> str:
        return self.request.tenant

    def __repr__(self) -> str:
        state = self.outcome or "running"
        return f"<RequestHandle {self.id!r} tenant={self.tenant!r} {state} tokens={self.tokens}>"

    # ----- the consumer's API -------------------------------------------------------------------

    def __aiter__(self) -> RequestHandle:
        return self

    async def __anext__(self) -> str:
        while self._reading and not self._queued and self.outcome is None:
            self._waiter = anyio.Event()
            await self._waiter.wait()
        if self._reading and self._queued:
            await anyio.lowlevel.checkpoint_if_cancelled()
            return self._queued.popleft()
        if self.outcome is Outcome.CANCELLED:
            raise RequestCancelled(self.id, self.reason)
        raise StopAsyncIteration

    async def collect(self) -> list[str]:
        """Every token until the end (raises RequestCancelled if it is cut short)."""
        return [token async for token in self]

    def buffered(self) -> list[str]:
        """The tokens already in the stream, without waiting: a consumer that fell behind catches
        up in one go."""
        if not self._reading:
            return []
        tokens = list(self._queued)
        self._queued.clear()
        return tokens

    def cancel(self, reason: FinishReason | str = FinishReason.CLOSED) -> None:
        """Cancel the request if it still runs (its KV is freed at once) and stop reading."""
        self._runtime._cancel(self, FinishReason(reason))
        self._stop_reading()

    def finish(self, reason: FinishReason | str = FinishReason.STOP) -> None:
        """End the request now as finished, not cancelled (the consumer has what it asked for, such
        as the output up to a stop sequence): its KV is freed at once and it stops reading."""
        self._runtime._cancel(self, FinishReason(reason), Outcome.FINISHED)
        self._stop_reading()

    async def aclose(self) -> None:
        self.cancel()

    async def wait(self) -> None:
        """Until the request has ended (the consumer must still read, or it is a slow consumer)."""
        await self._ended.wait()

    async def __aenter__(self) -> RequestHandle:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        # A cancelled scope (a deadline, a client gone) closes the handle as surely as a return.
        cancelled = exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class())
        self.cancel(FinishReason.CANCELLED if cancelled else FinishReason.CLOSED)

    # ----- the runtime's side -------------------------------------------------------------------

    def _push(self, token: str) -> FinishReason | None:
        """Put a token in the stream without waiting; why the request must end, if it must."""
        if not self._reading:
            return FinishReason.ABANDONED  # the consumer closed its end without cancelling
        if len(self._queued) >= self._buffer:
            return FinishReason.SLOW_CONSUMER
        self._queued.append(token)
        self.tokens += 1
        self._wake()
        return None

    def _end(self, outcome: Outcome, reason: FinishReason, now: float) -> None:
        self.outcome = outcome
        self.reason = reason
        self.finished_at = now
        self._wake()  # the consumer reads what is buffered, then the end
        self._ended.set()

    def _stop_reading(self) -> None:
        self._reading = False
        self._queued.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None
