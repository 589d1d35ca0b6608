"""One worker as the core sees it, and the one owner of its KV blocks.

A worker has a KV pool and, with prefix caching, a prefix cache; the requests running on it
(prefilling, or in its decode set), its own wait queue under early binding, and the plan in
flight. Every KV block a request takes or gives back goes through this class: an admission holds
the cached blocks its prompt starts with and takes the rest of its prompt's and first sampled
token's, a computed prefill chunk publishes the full prompt blocks it filled to the cache, a
decode step takes the next block of each member that fills one, and leaving the worker (finished,
cancelled, preempted) gives back its own blocks and lets go of the cached ones (which stay cached).
Free blocks run out only when the cache has no idle block left to evict.

A request's blocks are `seq.blocks`, of which its first `seq.cached` are held through the cache
(shared, counted once there); the rest are its own, counted out of the pool.
"""

from __future__ import annotations

from typing import Final, Hashable

from .decodeset import DecodeSet
from .kv import BlockPool, DecodeGrowth, PrefixCache
from .policies.base import WaitQueue
from .request import RequestState
from .sequence import Sequence

# A tenant's recent prefill halves each step and is forgotten after this many; HALVES[age] is
# 0.5 ** age (powers of two, exact), read instead of computing the power at every standing.
PREFILL_MEMORY: Final = 40
HALVES: Final = [0.5 ** age for age in range(PREFILL_MEMORY + 1)]


class WorkerState:
    __slots__ = ("id", "pool", "cache", "running", "prefilling", "decode", "queue", "inflight", "repeat", "growth",
                 "released", "dropped", "seqs_of", "prompt_of", "steps", "_counted", "_prefill", "_match")

    def __init__(self, worker_id: int, pool: BlockPool, queue: WaitQueue | None, decode: DecodeSet,
                 cache: PrefixCache | None = None) -> None:
        self.id = worker_id
        self.pool = pool
        self.cache = cache  # None: prefix caching is off
        self.running: dict[Sequence, None] = {}  # in admission order
        self.prefilling: dict[Sequence, None] = {}  # running, prefill not complete
        self.decode = decode  # running, prefill complete
        self.queue = queue  # None: the worker serves the pool's queue
        self.inflight: list[tuple[Sequence, int]] | None = None  # the plan's chunks, while in flight
        self.repeat = 1  # the in-flight plan's repeat
        self.growth: DecodeGrowth | None = None  # how its decodes grow over its run (repeat > 1)
        self.released: list[Hashable] = []  # requests ended here since the last plan
        self.dropped: set[Hashable] = set()  # requests of the plan in flight cancelled since
        self.seqs_of: dict[int, int] = {}  # tenant -> its requests running here (tenants with one or more)
        self.prompt_of: dict[int, int] = {}  # tenant -> their prompt tokens
        self.steps = 0  # steps planned: a plan noted (`note_prefill`) is one, its repeats the rest
        self._counted = False  # the plan in flight's first step is in `steps`
        self._prefill: dict[int, tuple[float, int]] = {}  # tenant -> (recent prefill tokens per step, as of step)
        self._match: tuple[Sequence, int, int] | None = None  # (seq, blocks cached, of which idle), from fits()

    @property
    def available(self) -> int:
        """Blocks an allocation can have: the free ones and the cached ones no request holds."""
        return self.pool.free + (self.cache.evictable if self.cache is not None else 0)

    @property
    def used(self) -> int:
        """Blocks in use: held by running requests (cached ones no request holds count as free)."""
        return self.pool.total - self.available

    def cached_prefix_of(self, seq: Sequence) -> int:
        """How many leading blocks of `seq`'s prompt are cached here (what its admission would hit)."""
        return self._cached_prefix(seq)[0]

    def cached_blocks(self, hashes) -> int:
        """How many leading blocks of a prompt with these block hashes are cached here."""
        return self.cache.match(hashes)[0] if self.cache is not None and hashes else 0

    def _take(self, blocks: int) -> None:
        # Evict idle cached blocks, least recently released first, when the free ones are too few.
        short = blocks - self.pool.free
        if short > 0:
            assert self.cache is not None  # only idle cached blocks make up for too few free ones
            self.cache.evict(short)
            self.pool.release(short)
        self.pool.allocate(blocks)

    # ----- taking blocks ------------------------------------------------------------------------

    def fits(self, seq: Sequence, reserve: int = 0) -> bool:
        """Whether admitting `seq` now leaves the watermark free (room for decodes to grow) and
        `reserve` blocks more, counting the blocks of its prompt it finds cached."""
        cached, idle = self._cached_prefix(seq)
        self._match = (seq, cached, idle)
        need = self.pool.blocks_for(seq.target) - cached
        return need + self.pool.watermark + reserve <= self.available - idle

    def admit(self, seq: Sequence) -> None:
        """Run `seq` here: hold the cached blocks its prompt starts with (their tokens need no
        prefill) and take the rest of its prompt's and first sampled token's."""
        match = self._match if self._match is not None and self._match[0] is seq else (seq, *self._cached_prefix(seq))
        self._match = None
        cached = match[1]
        if cached:
            assert self.cache is not None
            self.cache.hold(seq.hashes[:cached])
        blocks = self.pool.blocks_for(seq.target)
        self._take(blocks - cached)
        seq.blocks, seq.cached, seq.computed = blocks, cached, cached * self.pool.block_size
        self._count_lookup(seq, cached)
        self.running[seq] = None
        self.prefilling[seq] = None
        tenant = seq.tenant
        self.seqs_of[tenant] = self.seqs_of.get(tenant, 0) + 1
        self.prompt_of[tenant] = self.prompt_of.get(tenant, 0) + seq.request.prompt_tokens

    def _cached_prefix(self, seq: Sequence) -> tuple[int, int]:
        # Leave the prompt's last token to compute: a prefill must sample the first output token.
        if self.cache is None or not seq.hashes:
            return 0, 0
        most = (seq.request.prompt_tokens - 1) // self.pool.block_size
        return self.cache.match(seq.hashes[:most])

    def _count_lookup(self, seq: Sequence, cached: int) -> None:
        # Only a prompt with content is looked up: one without could hit nothing.
        if self.cache is not None and seq.hashes:
            self.cache.queries += seq.request.prompt_tokens
            self.cache.hits += cached * self.pool.block_size

    def publish(self, seq: Sequence) -> None:
        """Cache the full prompt blocks `seq` has computed, in order, while their content is new."""
        if self.cache is None or not seq.hashes:
            return
        full = min(seq.computed // self.pool.block_size, len(seq.hashes))
        if seq.cached < full:  # each block cached moves from the request's own to the cache, still held by it
            seq.cached += self.cache.publish(seq.hashes, seq.cached, full)

    def reserve_decode_step(self) -> bool:
        """Take, in one go, the blocks every decode needs for its next token; False (taking
        nothing) when too few are available."""
        need = self.decode.blocks_needed()
        if need > self.available:
            return False
        self._take(need)
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
        if need > self.available:
            return False
        self._take(need)
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
        self.steps += steps - self._counted  # a run of repeats ages recent prefill as its steps one by one would
        self._counted = False
        self._take(self.decode.advance(steps))
        return self.decode.size

    # ----- what each tenant computes here -----------------------------------------------------

    def note_prefill(self, chunks: list[tuple[Sequence, int]]) -> None:
        """A plan was formed with these prefill chunks: fold each tenant's tokens into its recent
        prefill per step (its first chunks, then an average whose weights halve each step, so a
        flood keeps its standing between its chunks)."""
        self.steps += 1
        self._counted = True
        tokens: dict[int, int] = {}
        for seq, n in chunks:
            tokens[seq.tenant] = tokens.get(seq.tenant, 0) + n
        for tenant, n in tokens.items():
            recent = self.recent_prefill(tenant) + 0.5 * n if tenant in self._prefill else float(n)
            self._prefill[tenant] = (recent, self.steps)

    def add_recent_prefill(self, step: dict[int, float]) -> None:
        """Add each tenant's recent prefill per step to its entry in `step` (what `recent_prefill`
        gives, read for those tenants only, over whichever of the two is smaller)."""
        prefill = self._prefill
        tenants = [t for t in prefill if t in step] if len(prefill) < len(step) else [t for t in step if t in prefill]
        for tenant in tenants:
            step[tenant] += self.recent_prefill(tenant)

    def recent_prefill(self, tenant: int) -> float:
        value, step = self._prefill.get(tenant, (0.0, 0))
        age = self.steps - step
        if age > PREFILL_MEMORY:  # nothing left to speak of
            self._prefill.pop(tenant, None)
            return 0.0
        return value * HALVES[age]

    # ----- giving blocks back -------------------------------------------------------------------

    def remove(self, seq: Sequence) -> None:
        """Take `seq` off this worker, giving back its own blocks and letting go of its cached ones."""
        if seq.decoding_on is not None:
            seq.decoding_on.leave(seq)
        self.prefilling.pop(seq, None)
        del self.running[seq]
        tenant = seq.tenant
        if self.seqs_of[tenant] == 1:
            del self.seqs_of[tenant], self.prompt_of[tenant]
        else:
            self.seqs_of[tenant] -= 1
            self.prompt_of[tenant] -= seq.request.prompt_tokens
        self.pool.release(seq.blocks - seq.cached)
        if seq.cached:
            assert self.cache is not None
            self.cache.release(seq.hashes[:seq.cached])
        seq.blocks = seq.cached = 0
