"""A worker's paged KV cache, counted in fixed-size blocks (vLLM's PagedAttention layout).

Blocks are interchangeable here, so the pool only counts them; which physical block holds which
token is the worker's business.
"""

from __future__ import annotations

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
