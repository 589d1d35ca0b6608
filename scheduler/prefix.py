"""What a prompt's KV blocks hold, so that equal prefixes can share cached blocks.

A request may carry its prompt's content as a `Prefix`: one id per `tokens_per_id` tokens (a
token id each for token-level content, one per 512-token block for the Mooncake trace's
`hash_ids`), equal ids at equal positions meaning equal tokens. The core turns it into the chained
hashes of the prompt's full KV blocks at its own block size (`block_hashes`), as vLLM's prefix
caching does: a block's hash is the hash of its parent's and of the tokens it holds, so two prompts
share a block only if they share everything before it too. A salt starts the chain: the tenant
under per-tenant cache isolation (vLLM's `cache_salt`), so no tenant can hit another's blocks.

Hashes are Python's `hash` of tuples of ints, which is the same in every process (str and bytes
hashing is randomised, and before Python 3.12 so is None's, which is its address), so runs stay
reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

CHAIN_ROOT = 0x5EED_F00D  # the parent of a chain's first block
NO_SALT = -1  # the salt of a chain no tenant owns (tenants are indices >= 0)


@dataclass(frozen=True, slots=True)
class Prefix:
    """A prompt's content: `ids[i]` stands for tokens [i x tokens_per_id, (i + 1) x tokens_per_id)."""

    ids: tuple[int, ...]
    tokens_per_id: int = 1

    def check(self, prompt_tokens: int, where: str = "prefix") -> None:
        """Refuse ids that do not cover exactly the prompt (ceil(prompt / tokens_per_id) of them)."""
        unit = self.tokens_per_id
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 1:
            raise ConfigError(f"{where}.tokens_per_id: must be an integer >= 1, got {unit!r}")
        expected = -(-prompt_tokens // unit)
        if len(self.ids) != expected:
            raise ConfigError(f"{where}: {len(self.ids)} ids for a prompt of {prompt_tokens} tokens; allowed: "
                              f"ceil({prompt_tokens} / {unit}) = {expected}, one per {unit} tokens")


def block_hashes(prefix: Prefix, prompt_tokens: int, block_size: int, salt: int | None = None) -> tuple[int, ...]:
    """Chained hashes of the prompt's full blocks of `block_size` tokens (a last partial block has
    none: only full blocks are cached and hit)."""
    ids, unit = prefix.ids, prefix.tokens_per_id
    parent = hash((CHAIN_ROOT, NO_SALT if salt is None else salt))
    hashes = []
    if unit > 1 and unit % block_size == 0:  # blocks inside an id (Mooncake's 512): the id, the offset
        per = unit // block_size
        for block in range(prompt_tokens // block_size):
            parent = hash((parent, ids[block // per], block % per))
            hashes.append(parent)
        return tuple(hashes)
    for start in range(0, prompt_tokens - block_size + 1, block_size):
        parent = hash((parent, _content(ids, unit, start, start + block_size)))
        hashes.append(parent)
    return tuple(hashes)


def _content(ids: tuple[int, ...], unit: int, start: int, end: int) -> tuple:
    # The tokens [start, end) as the ids that hold them, each with where in its unit the block starts.
    if unit == 1:
        return ids[start:end]
    first, last = start // unit, (end - 1) // unit
    return tuple((ids[u], max(start - u * unit, 0)) for u in range(first, last + 1))
