"""The decode set of one worker: its running requests past prefill, advancing one token per step.

Every member computes exactly one token in every step, so the set advances them together: it keeps
a step `clock`, and each member remembers the clock at which it joined, so a step costs O(1)
whatever the batch size. What decisions need is kept in aggregate: members by KV block phase (how
many need a new block at each step), their cached tokens in total (the cost model's input), members
per tenant (service is charged per tenant in bulk), and a heap of the clocks at which members reach
max_new_tokens. Members' own counts are read from the clock (`Sequence.computed` etc.).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Iterator

from .kv import DecodeGrowth
from .request import Sequence


class DecodeSet:
    __slots__ = ("clock", "size", "block_size", "reserved", "tenants", "_by_phase", "_context_base",
                 "_deadlines", "_join_ids", "_growth")

    def __init__(self, block_size: int) -> None:
        self.clock = 0  # steps the set has advanced
        self.size = 0
        self.block_size = block_size
        # 1 between a plan (which allocated the block its first step needs) and its first report
        self.reserved = 0
        self.tenants: dict[int, int] = {}  # tenant -> members
        # _by_phase[p]: members that need a new block at the step starting at clock c, c % B == p
        self._by_phase = [0] * block_size
        self._context_base = 0  # sum of (computed at join - clock at join) over members
        self._deadlines: list[tuple[int, int, Sequence]] = []  # (clock at max_new_tokens, join id, seq)
        self._join_ids = itertools.count()
        self._growth: tuple[int, DecodeGrowth] | None = None  # (clock, growth) until membership changes

    # ----- membership ---------------------------------------------------------------------------

    def join(self, seq: Sequence) -> None:
        """Take in a running request whose prefill is complete (it holds blocks for its tokens)."""
        clock = self.clock
        seq.joined = clock
        seq.join_id = next(self._join_ids)
        seq.decoding_on = self
        self._growth = None
        self.size += 1
        self._by_phase[(clock - seq._computed) % self.block_size] += 1
        self._context_base += seq._computed - clock
        self.tenants[seq.tenant] = self.tenants.get(seq.tenant, 0) + 1
        deadline = clock + seq.request.max_new_tokens - seq._generated
        heapq.heappush(self._deadlines, (deadline, seq.join_id, seq))

    def leave(self, seq: Sequence) -> None:
        """Let a member go, writing its counts back into it."""
        computed, generated, blocks = seq.computed, seq.generated, seq.blocks
        self._growth = None
        self.size -= 1
        self._by_phase[(seq.joined - seq._computed) % self.block_size] -= 1
        self._context_base -= seq._computed - seq.joined
        left = self.tenants[seq.tenant] - 1
        if left:
            self.tenants[seq.tenant] = left
        else:
            del self.tenants[seq.tenant]
        seq.decoding_on = None
        seq._computed, seq._generated, seq._blocks = computed, generated, blocks

    def blocks_of(self, seq: Sequence) -> int:
        return -(-(seq.computed + self.reserved) // self.block_size)

    # ----- steps --------------------------------------------------------------------------------

    @property
    def context(self) -> int:
        """Tokens cached by all members together."""
        return self._context_base + self.size * self.clock

    def blocks_needed(self) -> int:
        """New blocks the next step needs (members whose cached tokens fill their last block)."""
        return self._by_phase[self.clock % self.block_size]

    def growth(self) -> DecodeGrowth:
        """How the members grow into new blocks over a run of steps starting now."""
        if self._growth is None or self._growth[0] != self.clock:
            phase = self.clock % self.block_size
            by_offset = self._by_phase[phase:] + self._by_phase[:phase]
            self._growth = (self.clock, DecodeGrowth.from_offsets(by_offset))
        return self._growth[1]

    def advance(self, steps: int) -> int:
        """Members computed `steps` tokens each; returns the new blocks those steps took beyond the
        first step's `reserved` ones (all of them when a progress report already took those)."""
        grown = 0 if self.reserved else self.blocks_needed()
        if self.size and steps > 1:
            grown += self.growth().allocated(steps)
        self.clock += steps
        self.reserved = 0
        return grown

    def steps_to_length(self) -> int:
        """Steps until the first member reaches max_new_tokens (a huge number with no members)."""
        heap = self._deadlines
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] - self.clock if heap else 1 << 62

    def pop_at_length(self) -> Iterator[Sequence]:
        """Members that have reached max_new_tokens, taken off the heap (they stay members)."""
        heap = self._deadlines
        while heap and (heap[0][0] <= self.clock or not self._current(heap[0])):
            entry = heapq.heappop(heap)
            if self._current(entry):
                yield entry[2]

    def _current(self, entry: tuple[int, int, Sequence]) -> bool:
        _, join_id, seq = entry
        return seq.decoding_on is self and seq.join_id == join_id
