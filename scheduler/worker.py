"""One worker as the core sees it, and the one owner of its KV blocks.

A worker has a KV pool, the requests running on it (prefilling, or in its decode set), its own
wait queue under early binding, and the plan in flight. Every KV block a request takes or gives
back goes through this class: an admission takes the blocks of the request's prompt and first
sampled token, a decode step takes the next block of each member that fills one, and leaving the
worker (finished, cancelled, preempted) gives them all back.
"""

from __future__ import annotations

from typing import Hashable

from .decodeset import DecodeSet
from .kv import BlockPool
from .policies.base import WaitQueue
from .request import RequestState, Sequence


class WorkerState:
    __slots__ = ("id", "pool", "running", "prefilling", "decode", "queue", "inflight", "repeat",
                 "released", "dropped")

    def __init__(self, worker_id: int, pool: BlockPool, queue: WaitQueue | None, decode: DecodeSet) -> None:
        self.id = worker_id
        self.pool = pool
        self.running: dict[Sequence, None] = {}  # in admission order
        self.prefilling: dict[Sequence, None] = {}  # running, prefill not complete
        self.decode = decode  # running, prefill complete
        self.queue = queue  # None: the worker serves the pool's queue
        self.inflight: list[tuple[Sequence, int]] | None = None  # the plan's chunks, while in flight
        self.repeat = 1  # the in-flight plan's repeat
        self.released: list[Hashable] = []  # requests ended here since the last plan
        self.dropped: set[Hashable] = set()  # requests of the plan in flight cancelled since

    # ----- taking blocks ------------------------------------------------------------------------

    def fits(self, seq: Sequence) -> bool:
        """Whether admitting `seq` now leaves the watermark free (room for decodes to grow)."""
        return self.pool.can_admit(self.pool.blocks_for(seq.target))

    def admit(self, seq: Sequence) -> None:
        """Run `seq` here, holding the blocks of its prompt and first sampled token."""
        blocks = self.pool.blocks_for(seq.target)
        self.pool.allocate(blocks)
        seq.blocks = blocks
        self.running[seq] = None
        self.prefilling[seq] = None

    def reserve_decode_step(self) -> bool:
        """Take, in one go, the blocks every decode needs for its next token; False (taking
        nothing) when too few are free."""
        need = self.decode.blocks_needed()
        if need > self.pool.free:
            return False
        self.pool.allocate(need)
        self.decode.reserved = 1
        return True

    def decodes_out(self) -> list[Sequence]:
        """Take the decode set's members out of it, in running order, to grow them one by one."""
        members = [seq for seq in self.running if seq.decoding_on is self.decode]
        for seq in members:
            self.decode.leave(seq)
        return members

    def grow(self, seq: Sequence) -> bool:
        """Take the block `seq`'s next token needs, if it needs one; False when none is free."""
        need = self.pool.blocks_for(seq.computed + 1) - seq.blocks
        if need > self.pool.free:
            return False
        self.pool.allocate(need)
        seq.blocks += need
        return True

    def decodes_in(self, members: list[Sequence]) -> None:
        """The members still running join the set again, each holding its next token's block."""
        for seq in members:
            if seq.state is RequestState.RUNNING:
                self.decode.join(seq)
        self.decode.reserved = 1

    def advance_decodes(self, steps: int) -> int:
        """The decode set ran `steps` steps: take the blocks the later ones grew into (the plan made
        sure they were free); returns the members."""
        self.pool.allocate(self.decode.advance(steps))
        return self.decode.size

    # ----- giving blocks back -------------------------------------------------------------------

    def remove(self, seq: Sequence) -> None:
        """Take `seq` off this worker, giving back every block it holds."""
        if seq.decoding_on is not None:
            seq.decoding_on.leave(seq)
        self.prefilling.pop(seq, None)
        del self.running[seq]
        self.pool.release(seq.blocks)
        seq.blocks = 0
