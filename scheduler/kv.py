"""A worker's paged KV cache, counted in fixed-size blocks (vLLM's PagedAttention layout).

Blocks are interchangeable here, so the pool only counts them; which physical block holds which
token is the worker's business.
"""

from __future__ import annotations

import itertools

from .errors import ConfigError, ProtocolError


class BlockPool:
    __slots__ = ("total", "free", "block_size", "watermark")

    def __init__(self, total: int, block_size: int, watermark: float = 0.01) -> None:
        if not isinstance(total, int) or total < 1:
            raise ConfigError(f"kv_blocks: must be an integer >= 1, got {total!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"scheduler.block_size: must be an integer >= 1, got {block_size!r}")
        self.total = total
        self.free = total
        self.block_size = block_size
        # Kept free at admission so that running decodes can grow without immediate preemption.
        self.watermark = int(total * watermark)

    @property
    def used(self) -> int:
        return self.total - self.free

    @property
    def admissible_tokens(self) -> int:
        """The longest sequence an empty pool admits."""
        return (self.total - self.watermark) * self.block_size

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def can_admit(self, blocks: int) -> bool:
        return blocks + self.watermark <= self.free

    def allocate(self, blocks: int) -> None:
        if blocks > self.free:
            raise ProtocolError(f"KV pool: {blocks} blocks asked, {self.free} free")
        self.free -= blocks

    def release(self, blocks: int) -> None:
        if self.free + blocks > self.total:
            raise ProtocolError(f"KV pool: releasing {blocks} blocks would exceed the total {self.total}")
        self.free += blocks


class DecodeGrowth:
    """When a batch of decoding sequences needs new KV blocks over a run of identical steps.

    A sequence with `context` tokens cached holds blocks_for(context + 1) blocks for the step that
    computes its next token, so it next needs a block `offset` = blocks * block_size - context
    steps later (1 <= offset <= block_size), then every block_size steps. Counting sequences by
    offset mod block_size gives the blocks a whole run needs in O(block_size), not O(batch x steps).
    """

    __slots__ = ("block_size", "by_offset", "batch", "_prefix")

    def __init__(self, contexts, block_size: int) -> None:
        by_offset = [0] * block_size  # index offset % block_size
        for context in contexts:
            offset = -(-(context + 1) // block_size) * block_size - context
            by_offset[offset % block_size] += 1
        self._count(by_offset)

    @classmethod
    def from_offsets(cls, by_offset: list[int]) -> "DecodeGrowth":
        """From the sequences counted by offset % block_size (len(by_offset) == block_size)."""
        growth = cls.__new__(cls)
        growth._count(by_offset)
        return growth

    def _count(self, by_offset: list[int]) -> None:
        self.block_size = len(by_offset)
        self.by_offset = by_offset
        self.batch = sum(by_offset)
        # _prefix[r] = blocks allocated at steps 2..r+1, for r < block_size
        self._prefix = list(itertools.accumulate(by_offset[1:], initial=0))

    def allocated(self, steps: int) -> int:
        """Blocks allocated during a run of `steps` steps (the first step's are already held)."""
        full, rest = divmod(steps - 1, self.block_size)
        return full * self.batch + self._prefix[rest]

    def at_step(self, step: int) -> int:
        """Blocks allocated at step `step` (1-based within the run, step >= 1)."""
        return self.by_offset[step % self.block_size]

    def max_steps(self, free: int) -> int:
        """The longest run whose allocations fit in `free` blocks (at least 1)."""
        if self.batch == 0:
            return 1 << 62
        full, left = divmod(free, self.batch)
        rest = max(r for r in range(self.block_size) if self._prefix[r] <= left)
        return full * self.block_size + rest + 1
