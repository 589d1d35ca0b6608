"""Tests of scheduler.decodeset: members advance by the clock, aggregates equal what members say."""

from hypothesis import given
from hypothesis import strategies as st

from scheduler.decodeset import DecodeSet, DecodingTenants
from scheduler.request import Request
from scheduler.sequence import Sequence

BLOCK = 4


def member(order, computed, generated=1, max_new=100, tenant=0):
    seq = Sequence(Request(order, "a", computed, max_new), tenant, order, 0.0)
    seq.computed, seq.generated, seq.blocks = computed, generated, -(-computed // BLOCK)
    return seq


def test_members_counts_are_read_from_the_clock_and_written_back_on_leaving():
    decode = DecodeSet(BLOCK)
    seq = member(0, computed=8, generated=1)
    decode.join(seq)
    decode.advance(3)
    assert (seq.computed, seq.generated, seq.blocks) == (11, 4, 3)
    decode.leave(seq)
    assert seq.decoding_on is None and (seq._computed, seq._generated, seq._blocks) == (11, 4, 3)
    decode.advance(5)  # no longer a member: nothing moves
    assert (seq.computed, seq.generated) == (11, 4)


def test_blocks_needed_counts_members_whose_last_block_is_full():
    decode = DecodeSet(BLOCK)
    decode.join(member(0, computed=8))
    decode.join(member(1, computed=6))
    assert decode.blocks_needed() == 1  # 8 tokens fill two blocks; 6 leave room
    decode.advance(1)
    assert decode.blocks_needed() == 0  # 9 and 7
    decode.advance(1)
    assert decode.blocks_needed() == 1  # 10 and 8


def test_tenants_and_context_follow_joins_and_leaves():
    decode = DecodeSet(BLOCK)
    a, b, c = member(0, 8, tenant=0), member(1, 5, tenant=1), member(2, 3, tenant=1)
    for seq in (a, b, c):
        decode.join(seq)
    decode.advance(2)
    assert decode.tenants == {0: 1, 1: 2} and decode.context == 10 + 7 + 5 and decode.size == 3
    decode.leave(b)
    assert decode.tenants == {0: 1, 1: 1} and decode.context == 10 + 5
    decode.leave(a)
    assert decode.tenants == {1: 1} and decode.size == 1


def test_length_deadlines_skip_members_that_left_or_joined_again():
    decode = DecodeSet(BLOCK)
    short, long = member(0, 8, generated=1, max_new=4), member(1, 8, generated=1, max_new=10)
    decode.join(short)
    decode.join(long)
    assert decode.steps_to_length() == 3
    decode.leave(short)
    assert decode.steps_to_length() == 9
    decode.join(short)  # joined again at clock 0 with 1 token: its old deadline entry is stale
    decode.advance(3)
    assert list(decode.pop_at_length()) == [short] and short.generated == 4
    assert list(decode.pop_at_length()) == [] and decode.steps_to_length() == 6


@given(st.lists(st.integers(1, 40), min_size=1, max_size=12), st.lists(st.integers(1, 9), min_size=1, max_size=6))
def test_advance_allocates_exactly_the_blocks_members_grow_into(contexts, reports):
    """A plan takes blocks_needed() (the first step's), each report what advance() returns; the
    total always equals every member's blocks_for(computed + reserved)."""
    decode = DecodeSet(BLOCK)
    members = [member(i, c) for i, c in enumerate(contexts)]
    for seq in members:
        decode.join(seq)
    held = sum(-(-c // BLOCK) for c in contexts)
    held += decode.blocks_needed()  # the plan
    decode.reserved = 1
    for steps in reports:
        held += decode.advance(steps)  # progress reports: the first takes no first-step blocks again
        assert held == sum(seq.blocks for seq in members) == sum(-(-seq.computed // BLOCK) for seq in members)
    assert [seq.computed for seq in members] == [c + sum(reports) for c in contexts]


def test_pending_output_is_read_across_sets_and_settled_once():
    settled = []
    registry = DecodingTenants(lambda tenant, tokens: settled.append((tenant, tokens)))
    one, two = DecodeSet(BLOCK, registry), DecodeSet(BLOCK, registry)
    a1, a2, b = member(0, 8, tenant=0), member(1, 8, tenant=0), member(2, 8, tenant=1)
    one.join(a1)
    one.join(b)
    two.join(a2)
    one.advance(3)
    two.advance(5)
    assert registry.pending(0) == 3 + 5 and registry.pending(1) == 3 and settled == []
    one.leave(b)  # a membership change settles that tenant in that set
    assert settled == [(1, 3)] and registry.pending(1) == 0
    registry.settle(0)
    registry.settle(1)
    assert sorted(settled) == [(0, 3), (0, 5), (1, 3)] and registry.pending(0) == 0
    one.advance(2)
    registry.settle(0)
    assert settled[-1] == (0, 2)


# A decode-set operation: (kind, set, tenant or member index, steps); preempting a member and
# admitting it again later, or on another worker, is a leave then a join of the same Sequence.
OPS = st.lists(st.tuples(st.sampled_from(["join", "rejoin", "leave", "advance", "settle"]),
                         st.integers(0, 3), st.integers(0, 5), st.integers(0, 7)), max_size=60)


def owed_walk(sets, tenant):
    """The pending output of `tenant` as the sum over every set it decodes on."""
    return sum(decode.owed(tenant) for decode in sets if tenant in decode.tenants)


@given(OPS)
def test_pending_is_the_walk_over_sets_after_any_sequence_of_changes(ops):
    """The running total `pending` reads equals the sum of owed() over the sets, and settled plus
    pending is every token the members generated in any set, through joins, leaves, rejoins on
    other sets, steps of any length and settlements."""
    settled = [0] * 6
    registry = DecodingTenants(lambda tenant, tokens: settled.__setitem__(tenant, settled[tenant] + tokens), 2)
    sets = [DecodeSet(BLOCK, registry) for _ in range(4)]
    seqs: list[Sequence] = []
    for kind, where, which, steps in ops:
        decode = sets[where]
        idle = [seq for seq in seqs if seq.decoding_on is None]
        members = [seq for seq in seqs if seq.decoding_on is not None]
        if kind == "join":
            seq = member(len(seqs), computed=5 + which, tenant=which)
            seqs.append(seq)
            decode.join(seq)
        elif kind == "rejoin" and idle:
            decode.join(idle[which % len(idle)])
        elif kind == "leave" and members:
            seq = members[which % len(members)]
            seq.decoding_on.leave(seq)
        elif kind == "advance":
            decode.advance(steps)
        elif kind == "settle":
            registry.settle(which)
        for tenant in range(6):
            assert registry.pending(tenant) == owed_walk(sets, tenant)
            generated = sum(seq.generated - 1 for seq in seqs if seq.tenant == tenant)
            assert settled[tenant] + registry.pending(tenant) == generated
    for seq in seqs:
        if seq.decoding_on is not None:
            seq.decoding_on.leave(seq)
    assert [registry.pending(tenant) for tenant in range(8)] == [0] * 8  # all settled on leaving
