"""Prefix caching: chained block hashes (scheduler.prefix), the cache's holding and eviction
(kv.PrefixCache), and the core's use of it: a hit skips its prefill, is charged at w_cached, and
is shared, counted once, evicted least recently released first; isolation keeps tenants apart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import Scheduler, SchedulerConfig
from scheduler.errors import ConfigError, ProtocolError
from scheduler.events import StepResult
from scheduler.kv import PrefixCache
from scheduler.prefix import Prefix, block_hashes
from scheduler.request import Request, Tenant

TENANTS = (Tenant("a"), Tenant("b"))
SYSTEM = tuple(range(1000, 1012))  # 12 tokens: three blocks of 4


def scheduler(blocks=64, **config) -> Scheduler:
    defaults = dict(max_num_batched_tokens=64, max_num_seqs=8, block_size=4, kv_watermark=0.0, debug_checks=True)
    s = Scheduler(TENANTS, "fcfs", "global", SchedulerConfig(**(defaults | config)))
    s.add_worker(0, blocks, 0.0)
    return s


def run_one(s: Scheduler, rid, tenant="a", own=(7,), now=0.0, max_new=1):
    """Submit a request whose prompt is the system prompt then `own` tokens; run it to the end."""
    ids = SYSTEM + tuple(own)
    s.submit(Request(rid, tenant, len(ids), max_new, prefix=Prefix(ids)), now)
    plan = s.plan(0, now)
    s.complete(0, StepResult(), now)
    return plan


# ----- block hashes --------------------------------------------------------------------------------


def test_block_hashes_chain_whole_blocks_only():
    hashes = block_hashes(Prefix(SYSTEM + (1, 2)), 14, 4)
    assert len(hashes) == 3  # the last two tokens make no full block
    assert block_hashes(Prefix(SYSTEM + (9,)), 13, 4) == hashes  # same blocks, whatever follows
    other = block_hashes(Prefix((0,) + SYSTEM[1:]), 12, 4)
    assert all(h != o for h, o in zip(hashes, other))  # a different first token changes every later hash


def test_coarse_ids_map_onto_the_pools_blocks():
    # one id per 8 tokens (as Mooncake's per 512): blocks of 4 inside one id share it, at their offset
    coarse = block_hashes(Prefix((5, 6), tokens_per_id=8), 16, 4)
    assert len(coarse) == 4 and len(set(coarse)) == 4
    assert block_hashes(Prefix((5, 9), tokens_per_id=8), 16, 4)[:2] == coarse[:2]


def test_a_salt_separates_chains():
    assert block_hashes(Prefix(SYSTEM), 12, 4, salt=0) != block_hashes(Prefix(SYSTEM), 12, 4, salt=1)


def test_block_hashes_are_the_same_in_every_process():
    # Python randomises the hashes of str per process, and (before 3.12) hashes None by its
    # address: the chains must use neither, or routing by cached blocks differs from run to run.
    program = ("from scheduler.prefix import Prefix, block_hashes; p = Prefix(tuple(range(64)), 1); "
               "print(block_hashes(p, 64, 16), block_hashes(p, 64, 16, salt=3), "
               "block_hashes(Prefix((7, 8), 512), 1024, 16))")
    runs = {subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "random")}
    assert len(runs) == 1


@pytest.mark.parametrize("ids,unit,prompt", [((1, 2), 1, 3), ((1,), 512, 513), ((1, 2, 3), 512, 1024)])
def test_ids_that_do_not_cover_the_prompt_are_named(ids, unit, prompt):
    with pytest.raises(ConfigError, match=rf"{len(ids)} ids for a prompt of {prompt} tokens; allowed: ceil"):
        Prefix(ids, unit).check(prompt)


def test_a_request_with_a_wrong_prefix_is_rejected_with_the_reason():
    s = scheduler()
    verdict = s.submit(Request(1, "a", 5, 1, prefix=Prefix((1, 2))), 0.0)
    assert verdict.reason.value == "invalid_request" and "2 ids for a prompt of 5 tokens" in verdict.detail


# ----- the cache ---------------------------------------------------------------------------------


def test_the_cache_holds_shares_and_evicts_the_least_recently_released_tail_first():
    cache = PrefixCache()
    assert cache.publish([1, 2], 0, 2) == 2 and cache.publish([1, 3], 0, 2) == 0  # 1 is cached already
    cache.hold([1])  # a second request holds block 1
    assert cache.match([1, 2, 3]) == (2, 0) and cache.holders() == {1: 2, 2: 1}
    cache.release([1, 2])  # the first lets both go: 2 goes idle first (a prompt's tail), 1 stays held
    cache.release([1])
    assert cache.idle() == [2, 1] and cache.evictable == 2 and cache.match([1, 2]) == (2, 2)
    cache.evict(1)
    assert cache.idle() == [1] and 2 not in cache and len(cache) == 1
    with pytest.raises(ProtocolError):
        cache.evict(2)


def test_a_hit_skips_the_cached_prefill_and_is_charged_at_w_cached():
    s = scheduler()
    first = run_one(s, 1)
    assert first.chunks[0].num_tokens == 13 and first.chunks[0].context == 0
    second = run_one(s, 2, own=(8,), now=1.0)
    # 12 tokens (three blocks) found cached: only the 13th is computed, attending over the 12
    assert (second.chunks[0].num_tokens, second.chunks[0].context) == (1, 12)
    assert s.ledger.prompt_tokens[0] == 13 + 1 and s.ledger.cached_tokens[0] == 12
    assert s.tenant_service()[0] == pytest.approx(14 * 1.0 + 12 * 0.1 + 2 * 2.0)
    assert s.prefix_cache_stats(0).hits == 12 and s.prefix_cache_stats(0).queries == 26


def test_a_whole_prompt_in_the_cache_still_computes_its_last_token():
    s = scheduler()
    run_one(s, 1, own=(1, 2, 3, 4))  # 16 tokens, four full blocks
    again = run_one(s, 2, own=(1, 2, 3, 4), now=1.0)
    assert (again.chunks[0].num_tokens, again.chunks[0].context) == (4, 12)  # the last block is recomputed


def test_running_requests_share_blocks_counted_once():
    s = scheduler()
    s.submit(Request(1, "a", 13, 8, prefix=Prefix(SYSTEM + (1,))), 0.0)
    s.plan(0, 0.0)
    s.complete(0, StepResult(), 0.0)  # its three full prompt blocks are now cached, held by it
    s.submit(Request(2, "a", 13, 8, prefix=Prefix(SYSTEM + (2,))), 1.0)
    s.plan(0, 1.0)
    worker = s.workers[0]
    assert worker.cache.holders() == dict.fromkeys(s.sequence(1).hashes, 2)
    own = sum(seq.blocks - seq.cached for seq in worker.running)
    assert worker.pool.free + own + len(worker.cache) == worker.pool.total


def test_idle_cached_blocks_are_evicted_when_blocks_are_needed():
    s = scheduler(blocks=8)
    run_one(s, 1)  # three blocks stay cached, idle
    assert s.workers[0].cache.evictable == 3 and s.kv_usage(0).used == 0
    ids = tuple(range(5000, 5031))  # 31 tokens of other content: all 8 blocks
    s.submit(Request(2, "a", 31, 1, prefix=Prefix(ids)), 1.0)
    assert s.plan(0, 1.0).admitted == (2,)  # the 5 free blocks and the 3 evicted
    assert s.workers[0].cache.evictable == 0
    s.complete(0, StepResult(), 1.0)
    assert run_one(s, 3, now=2.0).chunks[0].context == 0  # the system prompt was evicted


def test_with_per_tenant_isolation_no_tenant_hits_anothers_blocks():
    s = scheduler(cache_isolation="tenant")
    run_one(s, 1, tenant="a")
    other = run_one(s, 2, tenant="b", own=(8,), now=1.0)
    assert other.chunks[0].context == 0 and s.ledger.cached_tokens == [0, 0]
    mine = run_one(s, 3, tenant="a", own=(9,), now=2.0)
    assert mine.chunks[0].context == 12


def test_caching_off_shares_nothing():
    s = scheduler(enable_prefix_caching=False)
    run_one(s, 1)
    assert run_one(s, 2, now=1.0).chunks[0].context == 0 and s.workers[0].cache is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 3), st.integers(1, 12)), min_size=1, max_size=25),
       st.sampled_from(["none", "tenant"]))
def test_a_request_finds_cached_only_what_an_earlier_request_of_a_tenant_it_may_share_with_computed(
        requests, isolation):
    s = scheduler(blocks=24, cache_isolation=isolation)
    seen: list[tuple[str, tuple]] = []
    for rid, (tenant, family, own) in enumerate(requests):
        ids = tuple(100 * family + j for j in range(8)) + tuple(10_000 + 50 * rid + j for j in range(own))
        plan = run_one_ids(s, rid, tenant, ids, float(rid))
        shared = max((_common(ids, prior) for who, prior in seen if isolation == "none" or who == tenant),
                     default=0)
        if rid in plan.admitted:
            chunk = next(c for c in plan.chunks if c.request_id == rid)
            assert chunk.context <= min(shared, len(ids) - 1) // 4 * 4
        seen.append((tenant, ids))


def run_one_ids(s, rid, tenant, ids, now):
    s.submit(Request(rid, tenant, len(ids), 1, prefix=Prefix(ids)), now)
    plan = s.plan(0, now)
    if plan:
        s.complete(0, StepResult(), now)
    return plan


def _common(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
