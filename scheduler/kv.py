"""A worker's paged KV cache, counted in fixed-size blocks (vLLM's PagedAttention layout).

Blocks are interchangeable here, so the pool only counts them; which physical block holds which
token is the worker's business. The prefix cache keeps full blocks by content hash, shared by the
requests that hold them and kept after, until evicted.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence

from .errors import ConfigError, ProtocolError


class BlockPool:
    __slots__ = ("total", "free", "block_size", "watermark")

    def __init__(self, total: object, block_size: object, watermark: float = 0.01) -> None:
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

    def __init__(self, by_offset: list[int]) -> None:
        """From the sequences counted by offset % block_size (len(by_offset) == block_size)."""
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

    def max_steps(self, free: int) -> int | float:
        """The longest run whose allocations fit in `free` blocks (at least 1; math.inf for no batch)."""
        if self.batch == 0:
            return math.inf
        full, left = divmod(free, self.batch)
        rest = bisect.bisect_right(self._prefix, left) - 1  # the prefix sums never fall
        return full * self.block_size + rest + 1


class PrefixCache:
    """A worker's cached full KV blocks, by chained block hash (`scheduler.prefix`).

    A cached block is held by the running requests that reference it (shared, counted once), or by
    none: then it stays cached, to be hit again, until blocks are needed and it is evicted, least
    recently released first (vLLM's prefix caching). Its blocks are outside the pool's free count;
    `evictable` of them can be taken back at any time.
    """

    __slots__ = ("_holders", "_idle", "queries", "hits")

    def __init__(self) -> None:
        self._holders: dict[int, int] = {}  # hash -> requests holding the block
        self._idle: OrderedDict[int, None] = OrderedDict()  # cached, held by none, oldest first
        self.queries = 0  # prompt tokens looked up, as vLLM counts them
        self.hits = 0  # of those, tokens found cached

    def __len__(self) -> int:
        """Blocks the cache keeps, held or not."""
        return len(self._holders) + len(self._idle)

    @property
    def evictable(self) -> int:
        return len(self._idle)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._holders or block_hash in self._idle

    def holders(self) -> dict[int, int]:
        """A copy: each held block's hash and how many requests hold it."""
        return dict(self._holders)

    def idle(self) -> list[int]:
        """A copy: the hashes of the blocks no request holds, the next to be evicted first."""
        return list(self._idle)

    def match(self, hashes: Sequence[int]) -> tuple[int, int]:
        """(leading blocks of `hashes` cached, how many of those no request holds)."""
        matched = idle = 0
        for block_hash in hashes:
            if block_hash in self._holders:
                matched += 1
            elif block_hash in self._idle:
                matched += 1
                idle += 1
            else:
                break
        return matched, idle

    def hold(self, hashes: Sequence[int]) -> None:
        """One more request holds each of these cached blocks."""
        for block_hash in hashes:
            if block_hash in self._idle:
                del self._idle[block_hash]
                self._holders[block_hash] = 1
            else:
                self._holders[block_hash] += 1

    def publish(self, hashes: Sequence[int], start: int, end: int) -> int:
        """Cache the blocks a request just filled, hashes[start:end] in order, held by it, up to
        the first whose content is cached already; returns how many it cached."""
        holders, idle = self._holders, self._idle
        for i in range(start, end):
            block_hash = hashes[i]
            if block_hash in holders or block_hash in idle:
                return i - start
            holders[block_hash] = 1
        return end - start

    def release(self, hashes: Sequence[int]) -> None:
        """A request gives these blocks back. The last block goes idle first, so that a prompt's
        tail is evicted before its head (which more requests share)."""
        held, idle = self._holders, self._idle
        for block_hash in reversed(hashes):
            holders = held[block_hash] - 1
            if holders:
                held[block_hash] = holders
            else:
                del held[block_hash]
                idle[block_hash] = None

    def evict(self, blocks: int) -> None:
        """Drop the `blocks` least recently released idle blocks (their memory becomes free)."""
        if blocks > len(self._idle):
            raise ProtocolError(f"prefix cache: {blocks} blocks to evict, {len(self._idle)} idle")
        popitem = self._idle.popitem
        for _ in range(blocks):
            popitem(last=False)
