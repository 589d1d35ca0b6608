"""Step formation: what one worker computes in its next step (continuous batching, Sarathi-style).

A `StepBuilder` is the step's budget (tokens, sequence slots) with the moves that spend it, which
the core calls in this order (`Scheduler.plan`): `grow_decodes` (the decode set decodes one token
each, in bulk; when too few KV blocks are free, `preempt_to_grow` yields the victims to preempt,
one at a time), `continue_prefills` (running prefills, chunked), then `select` / `commit` for each
new admission in the policy's order (chunked to what is left), then
`continue_prefills(over_share=True)`; `repeat` says how many steps the plan may run. The builder
takes KV blocks through the worker (`scheduler.worker`), which alone takes and gives them back; the
core does the bookkeeping of each admission and preemption between the calls, so later choices see
the blocks earlier ones took or freed. The builder holds no policy code: the victim is a function it is given, and who is over
its fair share a `StepIsolation` it is given (`scheduler.isolation`): under-share tenants' running
prefills go first, then the admissions, then the over-share tenants' prefills with what is left,
at most `over_tokens` of them, and no more than fills the step to `latency_tokens`; a full
tenant does not take the last `slot_headroom` slots or the last `kv_headroom` blocks.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence as Seq

from .actions import ScheduledItem
from .isolation import Standing
from .kv import DecodeGrowth
from .policies.base import WaitQueue
from .sequence import Sequence
from .worker import WorkerState


class StepIsolation:
    """The isolation rules of one step (SchedulerConfig's, with the worker's standing). The
    standing is measured when a decision first reads it: a step of decodes alone, or one with no
    room to admit, costs nothing."""

    __slots__ = ("fair_prefill", "over_tokens", "slot_headroom", "kv_headroom", "_measure", "_latency_of",
                 "_standing", "_latency")

    def __init__(self, measure: Callable[[], Standing], latency_of: Callable[[Standing], float], fair_prefill: bool,
                 over_tokens: float, slot_headroom: int, kv_headroom: int) -> None:
        self.fair_prefill = fair_prefill  # under-share prefill first; over-share prefill after the admissions
        self.over_tokens = over_tokens  # over-share prefill tokens this step may still take (math.inf: no cap)
        self.slot_headroom = slot_headroom  # the last free slots a full tenant may not take
        self.kv_headroom = kv_headroom  # the last free KV blocks a full tenant may not take
        self._measure, self._latency_of = measure, latency_of
        self._standing: Standing | None = None
        self._latency: float | None = None

    @property
    def measured(self) -> bool:
        return self._standing is not None

    @property
    def standing(self) -> Standing:
        if self._standing is None:
            self._standing = self._measure()
        return self._standing

    @property
    def latency_tokens(self) -> float:
        """Over-share work may fill the step to this many tokens (math.inf: no limit)."""
        if self._latency is None:
            self._latency = self._latency_of(self.standing)
        return self._latency


class StepBuilder:
    """The step being formed on `worker`: tokens left in it, free sequence slots (a running
    request holds its slot whether or not it gets tokens this step), and its chunks so far."""

    __slots__ = ("worker", "max_tokens", "tokens", "seqs", "chunks", "preempted", "isolation", "deferred",
                 "shielded")

    def __init__(self, worker: WorkerState, max_tokens: int, max_seqs: int,
                 isolation: StepIsolation | None = None) -> None:
        self.worker = worker
        self.max_tokens = max_tokens
        self.tokens = max_tokens
        self.seqs = max_seqs - len(worker.running)
        self.chunks: list[tuple[Sequence, int]] = []  # (sequence, tokens computed this step)
        self.preempted = 0
        self.isolation = isolation
        self.deferred: list[Sequence] = []  # over-share prefills, chunked after the admissions
        self.shielded = False  # room was made for under-share tenants: no full tenant takes it back

    def grow_decodes(self) -> bool:
        """Give every decode the block of its next token, and spend a token of the step on each;
        False (taking nothing) when too few blocks are free: then `preempt_to_grow`."""
        worker = self.worker
        if worker.decode.size and not worker.reserve_decode_step():
            return False
        self.tokens -= worker.decode.size
        return True

    def preempt_to_grow(self, victim: Callable[[Seq[Sequence]], Sequence]) -> Iterator[Sequence]:
        """Take the decode set's members out and grow each in running order, yielding
        `victim(running)` until it fits: the caller takes each victim off the worker (freeing its
        blocks) before asking for the next. Then the decodes spend one token each."""
        worker = self.worker
        members = worker.decodes_out()
        for seq in members:
            while seq in worker.running and not worker.grow(seq):
                self.seqs += 1
                self.preempted += 1
                yield victim(list(worker.running))
        worker.decodes_in(members)
        self.tokens -= worker.decode.size

    def continue_prefills(self, over_share: bool = False) -> None:
        """Chunks of the running prefills, in admission order, while tokens are left: those of
        under-share tenants (or all, without fair prefill); then, called after the admissions,
        those of over-share tenants, which the first call set aside."""
        prefills: Iterable[Sequence]
        if over_share:  # the smallest claims on the step first, so the largest gets what is left
            standing = self._isolation().standing
            prefills = sorted(self.deferred, key=lambda seq: standing.claim(seq.tenant))
            self.deferred = []
        else:
            prefills = self.worker.prefilling
            isolation = self.isolation
            if isolation is not None and isolation.fair_prefill and prefills and isolation.standing.over:
                over = isolation.standing.over
                self.deferred = [seq for seq in prefills if seq.tenant in over]
                prefills = [seq for seq in prefills if seq.tenant not in over]
        for seq in prefills:
            if self.tokens == 0:
                return
            self._chunk(seq)

    def select(self, queue: WaitQueue) -> Sequence | None:
        """The request the policy admits next, if the step has room for one more request and the
        worker's KV for it; None otherwise. The order is the policy's: only isolation passes a
        tenant over (`_keeps_out`), for the next in the policy's order among the
        others. Nothing is admitted right after a preemption, which would thrash."""
        if self.preempted or self.tokens <= 0 or self.seqs <= 0:
            return None
        cached = self.worker.cached_prefix_of
        seq = queue.peek_for(cached)
        isolation = self.isolation
        if seq is None or isolation is None:
            return seq if seq is not None and self.worker.fits(seq) else None
        if self._keeps_out(seq.tenant):
            seq = queue.peek_among(lambda tenant: not self._keeps_out(tenant), cached)
            if seq is None:
                return None
        if self.worker.fits(seq, isolation.kv_headroom):
            return seq  # it fits with the headroom kept, so whether its tenant is full does not matter
        full = seq.tenant in isolation.standing.full and self._holds_headroom()
        return seq if not full and self.worker.fits(seq) else None

    def commit(self, seq: Sequence) -> None:
        """Run `seq` (popped from its queue) on the worker, with the chunk of its prompt that fits."""
        self.worker.admit(seq)
        self.seqs -= 1
        if self.isolation is not None and self.isolation.measured:  # else measured with it, later
            self.isolation.standing.admitted(seq.tenant, seq.request.prompt_tokens)
        self._chunk(seq)

    def _chunk(self, seq: Sequence) -> None:
        tokens = min(seq.remaining, self.tokens, self._allowance(seq.tenant))
        if tokens <= 0 and seq.remaining > 0:
            return  # an over-share prefill with nothing left for it waits for the next step
        self.tokens -= tokens
        self.chunks.append((seq, tokens))
        isolation = self.isolation
        if isolation is not None and seq.tenant in isolation.standing.over:
            isolation.over_tokens -= tokens

    def _allowance(self, tenant: int) -> int:
        """The most prefill tokens a chunk of `tenant` may take: all that is left under share."""
        isolation = self.isolation
        if isolation is None or tenant not in isolation.standing.over:
            return self.tokens
        used = self.max_tokens - self.tokens
        return int(max(0, min(self.tokens, isolation.over_tokens, isolation.latency_tokens - used)))

    def _keeps_out(self, tenant: int) -> bool:
        """Whether isolation keeps `tenant` from one more slot: it is full and the free slots are
        the headroom, held for arrivals (or were made by preempting for the others), or it is over
        share and the step has no prefill left for it or its running prefills wait for what the
        admissions leave."""
        isolation = self._isolation()
        if (self.shielded or self.seqs <= isolation.slot_headroom) and tenant in isolation.standing.full and (
                self.shielded or self._holds_headroom()):
            return True
        if tenant not in isolation.standing.over:
            return False
        # its running prefills, set aside, come before any new one of its own, after the others'
        return self._allowance(tenant) <= 0 or any(seq.tenant == tenant for seq in self.deferred)

    def _holds_headroom(self) -> bool:
        # a tenant with more requests queued than the headroom has slots is backlogged, not arriving
        isolation = self._isolation()
        return isolation.standing.holds_headroom(max(isolation.slot_headroom, 1))

    def _isolation(self) -> StepIsolation:
        # what the isolation rules' moves read: only a step with them makes those moves
        assert self.isolation is not None
        return self.isolation

    def repeat(self, queue: WaitQueue) -> tuple[int, DecodeGrowth | None]:
        """How many steps the plan may run before any decision could differ (DESIGN, Multi-step),
        and how its decodes grow into new KV blocks over them (None for one step).

        A step of decodes alone repeats, and so does a step whose prefill chunks each complete a
        prompt that goes on decoding (no other prefill waits): its later steps are decodes of all.
        Only while: no member reaches max_new_tokens before the last step, the blocks the members
        grow into are free (so no preemption), and no queued request could be admitted (the queue
        is empty, or every sequence slot is taken; a request that arrives later is the driver's to
        cut the run for). EOS is the driver's to cut too.
        """
        worker = self.worker
        decode = worker.decode
        steps: int | float
        if self.preempted or (len(queue) and self.seqs > 0):
            return 1, None  # with a queue: the head is blocked by KV, and the order may change under it
        if not self.chunks:
            if worker.prefilling or not decode.size:
                return 1, None
            steps, growth = decode.steps_to_length(), decode.growth()
        else:
            joining = self._joining()
            if joining is None:
                return 1, None
            steps, growth = joining
        if steps <= 1:
            return 1, None
        steps = min(steps, growth.max_steps(worker.available))  # finite: the set has members
        return (int(steps), growth) if steps > 1 else (1, None)

    def _joining(self) -> tuple[int | float, DecodeGrowth] | None:
        """When every running prefill completes in this step's chunks and goes on decoding: the
        steps until a member of the decode set they join reaches max_new_tokens, and how that set
        grows (a new member with c tokens cached needs a block at step 2 when c fills its last
        one, then every block_size steps); None otherwise."""
        worker = self.worker
        if len(self.chunks) != len(worker.prefilling):
            return None
        decode = worker.decode
        steps = decode.steps_to_length()
        by_offset = list(decode.growth().by_offset)
        size = len(by_offset)
        for seq, tokens in self.chunks:
            left = seq.request.max_new_tokens - seq.generated  # its first sample is one of them
            if tokens != seq.remaining or left <= 1:
                return None
            steps = min(steps, left)
            by_offset[(1 - seq.target) % size] += 1
        return steps, DecodeGrowth(by_offset)

    def items(self) -> tuple[ScheduledItem, ...]:
        return tuple(ScheduledItem(seq.id, tokens, seq.computed, tokens == seq.remaining)
                     for seq, tokens in self.chunks)
