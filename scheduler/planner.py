"""Step formation: what one worker computes in its next step (continuous batching, Sarathi-style).

A `StepBuilder` is the step's budget (tokens, sequence slots) with the moves that spend it, which
the core calls in this order (`Scheduler.plan`): `grow_decodes` (the decode set decodes one token
each, in bulk; when too few KV blocks are free it yields the victims to preempt, one at a time),
`continue_prefills` (running prefills, chunked), then `select` / `commit` for each new admission
in the policy's order (chunked to what is left). The builder takes KV blocks through the worker
(`scheduler.worker`), which alone takes and gives them back; the core does the bookkeeping of each
admission and preemption between the calls, so later choices see the blocks earlier ones took or
freed. The builder holds no policy code: the victim is a function it is given.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence as Seq

from .actions import ScheduledItem
from .policies.base import WaitQueue
from .request import Sequence
from .worker import WorkerState


class StepBuilder:
    """The step being formed on `worker`: tokens left in it, free sequence slots (a running
    request holds its slot whether or not it gets tokens this step), and its chunks so far."""

    __slots__ = ("worker", "tokens", "seqs", "chunks", "preempted")

    def __init__(self, worker: WorkerState, max_tokens: int, max_seqs: int) -> None:
        self.worker = worker
        self.tokens = max_tokens
        self.seqs = max_seqs - len(worker.running)
        self.chunks: list[tuple[Sequence, int]] = []  # (sequence, tokens computed this step)
        self.preempted = 0

    def grow_decodes(self, victim: Callable[[Seq[Sequence]], Sequence]) -> Iterator[Sequence]:
        """Give every decode the block of its next token. When too few are free, take the members
        out and grow each in running order, yielding `victim(running)` until it fits: the caller
        takes each victim off the worker (freeing its blocks) before asking for the next. Then the
        decodes spend one token each."""
        worker = self.worker
        if worker.decode.size and not worker.reserve_decode_step():
            members = worker.decodes_out()
            for seq in members:
                while seq in worker.running and not worker.grow(seq):
                    self.seqs += 1
                    self.preempted += 1
                    yield victim(list(worker.running))
            worker.decodes_in(members)
        self.tokens -= worker.decode.size

    def continue_prefills(self) -> None:
        """Chunks of the running prefills, in admission order, while tokens are left."""
        for seq in self.worker.prefilling:
            if self.tokens == 0:
                return
            self._chunk(seq)

    def select(self, queue: WaitQueue) -> Sequence | None:
        """The queue's head, if the step has room for one more request and the worker's KV for
        it; None otherwise (no skipping: the order is the policy's). Nothing is admitted right
        after a preemption, which would thrash."""
        if self.preempted or self.tokens <= 0 or self.seqs <= 0:
            return None
        seq = queue.peek_for(self.worker.cached_prefix_of)
        return seq if seq is not None and self.worker.fits(seq) else None

    def commit(self, seq: Sequence) -> None:
        """Run `seq` (popped from its queue) on the worker, with the chunk of its prompt that fits."""
        self.worker.admit(seq)
        self.seqs -= 1
        self._chunk(seq)

    def _chunk(self, seq: Sequence) -> None:
        tokens = min(seq.remaining, self.tokens)
        self.tokens -= tokens
        self.chunks.append((seq, tokens))

    def repeat(self, queue: WaitQueue) -> int:
        """How many identical steps the plan may run before any decision could differ (DESIGN,
        Multi-step).

        Only a step of the decode set alone repeats (no prefill waits, so no chunk is cut short),
        and only while: no member reaches max_new_tokens before the last step, the blocks the
        members grow into are free (so no preemption), and no queued request could be admitted
        (the queue is empty, or every sequence slot is taken; a request that arrives later is the
        driver's to cut the run for). EOS is the driver's to cut too.
        """
        worker = self.worker
        decode = worker.decode
        if self.preempted or self.chunks or worker.prefilling or not decode.size:
            return 1
        if len(queue) and self.seqs > 0:
            return 1  # the head is blocked by KV, and the policy's order may change under it
        steps = decode.steps_to_length()
        if steps <= 1:
            return 1
        return min(steps, decode.growth().max_steps(worker.available))

    def items(self) -> tuple[ScheduledItem, ...]:
        return tuple(ScheduledItem(seq.id, tokens, seq.computed, tokens == seq.remaining)
                     for seq, tokens in self.chunks)
