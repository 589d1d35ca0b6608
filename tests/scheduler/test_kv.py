"""Tests of scheduler.kv.BlockPool: block arithmetic, the admission watermark, and errors."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError, ProtocolError
from scheduler.kv import BlockPool


def test_fresh_pool_is_all_free():
    pool = BlockPool(10, 4)
    assert (pool.total, pool.free, pool.used, pool.block_size) == (10, 10, 0, 4)


@pytest.mark.parametrize("tokens,blocks", [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3), (400, 100)])
def test_blocks_for_rounds_up(tokens, blocks):
    assert BlockPool(10, 4).blocks_for(tokens) == blocks


@given(tokens=st.integers(0, 10_000), block_size=st.integers(1, 64))
@settings(max_examples=100, deadline=None)
def test_blocks_for_is_the_smallest_cover(tokens, block_size):
    blocks = BlockPool(1, block_size).blocks_for(tokens)
    assert blocks * block_size >= tokens > (blocks - 1) * block_size or (tokens == 0 and blocks == 0)


def test_allocate_and_release_keep_used_plus_free_equal_total():
    pool = BlockPool(10, 4)
    pool.allocate(3)
    pool.allocate(7)
    assert (pool.free, pool.used) == (0, 10)
    pool.release(4)
    assert (pool.free, pool.used) == (4, 6)
    pool.release(6)
    assert (pool.free, pool.used) == (10, 0)


def test_allocate_beyond_free_raises_and_changes_nothing():
    pool = BlockPool(10, 4)
    pool.allocate(8)
    with pytest.raises(ProtocolError, match="3 blocks asked, 2 free"):
        pool.allocate(3)
    assert pool.free == 2


def test_release_beyond_total_raises_and_changes_nothing():
    pool = BlockPool(10, 4)
    pool.allocate(2)
    with pytest.raises(ProtocolError, match="exceed the total 10"):
        pool.release(3)
    assert pool.free == 8


def test_watermark_is_kept_free_at_admission_only():
    pool = BlockPool(100, 16, watermark=0.05)
    assert pool.watermark == 5
    assert pool.admissible_tokens == 95 * 16
    assert pool.can_admit(95) and not pool.can_admit(96)
    pool.allocate(10)
    assert pool.can_admit(85) and not pool.can_admit(86)
    pool.allocate(90)  # allocation itself may dig into the watermark (running requests growing)
    assert pool.free == 0 and not pool.can_admit(0)


def test_watermark_rounds_down_to_whole_blocks():
    assert BlockPool(10, 4, watermark=0.01).watermark == 0
    assert BlockPool(10, 4, watermark=0.0).admissible_tokens == 40
    assert BlockPool(250, 4, watermark=0.01).watermark == 2


@pytest.mark.parametrize("total", [0, -1, 1.5, "3", None])
def test_bad_total_names_kv_blocks(total):
    with pytest.raises(ConfigError, match="kv_blocks"):
        BlockPool(total, 4)


@pytest.mark.parametrize("block_size", [0, -4, 2.0])
def test_bad_block_size_names_the_key(block_size):
    with pytest.raises(ConfigError, match="scheduler.block_size"):
        BlockPool(10, block_size)
