"""Tests of scheduler.request: the lifecycle table, Sequence.move, and Tenant/SLO validation."""

import dataclasses
import itertools
import math

import pytest

from scheduler.errors import ConfigError, ProtocolError
from scheduler.request import SLO, TERMINAL, TRANSITIONS, Request, RequestState, Tenant
from scheduler.sequence import Sequence

Q, R, F, C, X = (RequestState.QUEUED, RequestState.RUNNING, RequestState.FINISHED, RequestState.CANCELLED,
                 RequestState.REJECTED)

# The lifecycle of DESIGN.md, written out independently of the table under test (a preemption
# takes a running request straight back to the queue).
EXPECTED = {
    None: {Q, X},
    Q: {R, C},
    R: {Q, F, C},
    F: set(),
    C: set(),
    X: set(),
}
ALL_PAIRS = list(itertools.product([None, *RequestState], RequestState))


def test_transition_table_is_the_documented_lifecycle():
    assert {src: set(dst) for src, dst in TRANSITIONS.items()} == EXPECTED
    assert TERMINAL == {F, C, X}
    assert all(not TRANSITIONS[state] for state in TERMINAL)


@pytest.mark.parametrize("src,dst", [pair for pair in ALL_PAIRS if pair[1] in EXPECTED[pair[0]]],
                         ids=lambda s: "new" if s is None else getattr(s, "value", s))
def test_allowed_transition_moves(make_sequence, src, dst):
    seq = make_sequence(0, state=src)
    seq.move(dst)
    assert seq.state is dst


@pytest.mark.parametrize("src,dst", [pair for pair in ALL_PAIRS if pair[1] not in EXPECTED[pair[0]]],
                         ids=lambda s: "new" if s is None else getattr(s, "value", s))
def test_forbidden_transition_raises_and_keeps_state(make_sequence, src, dst):
    seq = make_sequence(0, state=src)
    source_name = "new" if src is None else src.value
    with pytest.raises(ProtocolError, match=f"r0.*from {source_name} to {dst.value}"):
        seq.move(dst)
    assert seq.state is src


def test_full_lifecycle_with_preemption(make_sequence):
    seq = make_sequence(0, state=None)
    for state in (Q, R, Q, R, F):
        seq.move(state)
    assert seq.state is F


def test_sequence_target_and_remaining():
    seq = Sequence(Request("x", "a", 10, 5), 0, 0, 3.0)
    assert (seq.state, seq.arrival, seq.target, seq.remaining) == (None, 3.0, 10, 10)
    seq.computed = 10
    seq.generated = 1
    assert (seq.target, seq.remaining) == (11, 1)
    assert "id='x'" in repr(seq) and "state=new" in repr(seq)


def test_request_is_frozen():
    request = Request(1, "a", 3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.prompt_tokens = 5


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"name": ""}, "tenant.name"),
        ({"name": 3}, "tenant.name"),
        ({"name": "t", "weight": 0}, "weight"),
        ({"name": "t", "weight": -1.0}, "weight"),
        ({"name": "t", "weight": math.nan}, "weight"),
        ({"name": "t", "weight": math.inf}, "weight"),
        ({"name": "t", "weight": "2"}, "weight"),
        ({"name": "t", "priority": 1.5}, "priority"),
        ({"name": "t", "priority": True}, "priority"),
    ],
)
def test_tenant_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        Tenant(**kwargs)


def test_valid_tenant():
    tenant = Tenant("t", weight=2, priority=-3, slo=SLO(ttft_ms=500, tpot_ms=20.5))
    assert (tenant.weight, tenant.priority, tenant.slo.ttft_ms, tenant.slo.tpot_ms) == (2, -3, 500, 20.5)
    assert Tenant("u").slo == SLO(None, None)


@pytest.mark.parametrize("field", ["ttft_ms", "tpot_ms"])
@pytest.mark.parametrize("value", [0, -5, "100"])
def test_slo_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"slo.{field}"):
        SLO(**{field: value})
