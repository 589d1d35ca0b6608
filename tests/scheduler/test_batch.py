"""Tests of scheduler.batch: a BatchMirror rebuilds every step's requests from the plan diffs."""

import pytest

from scheduler.actions import Emitted, Finished, ScheduledItem
from scheduler.batch import BatchMirror
from scheduler.errors import ProtocolError
from scheduler.events import StepResult


def test_the_mirror_lists_the_decode_set_in_admission_order_then_the_chunks(make_scheduler, make_request):
    s, mirror = make_scheduler(), BatchMirror()
    s.submit(make_request("A", prompt=2, max_new=10), 0.0)
    s.submit(make_request("B", prompt=6, max_new=10), 0.0)
    mirror.step(s.plan(0, 1.0))
    assert mirror.report(s.complete(0, StepResult(), 1.0)) == [Emitted("A", 1, True), Emitted("B", 1, True)]
    s.submit(make_request("C", prompt=20), 1.0)
    plan = s.plan(0, 2.0)
    items = mirror.step(plan)
    assert plan.decodes == 2 and plan.decode_context == 8
    assert items == (ScheduledItem("A", 1, 2, True), ScheduledItem("B", 1, 6, True), ScheduledItem("C", 14, 0, False))
    outputs = mirror.report(s.complete(0, StepResult(1, frozenset({"B"})), 2.0))
    assert outputs == [Emitted("A", 1, False), Emitted("B", 1, False), Finished("B", "eos", 2)]
    assert mirror.running == ["A", "C"]
    items = mirror.step(s.plan(0, 3.0))
    assert [(i.request_id, i.context) for i in items] == [("A", 3), ("C", 14)]


def test_a_multi_step_run_counts_its_steps_per_request(make_scheduler, make_request):
    s, mirror = make_scheduler(), BatchMirror()
    s.submit(make_request("A", prompt=4, max_new=20), 0.0)
    mirror.step(s.plan(0, 1.0))
    mirror.report(s.complete(0, StepResult(), 1.0))
    plan = s.plan(0, 2.0)
    mirror.step(plan)
    assert plan.repeat > 5
    assert mirror.report(s.complete(0, StepResult(2, final=False), 2.0)) == [Emitted("A", 2, False)]
    assert mirror.report(s.complete(0, StepResult(3), 3.0)) == [Emitted("A", 3, False)]
    assert mirror.step(s.plan(0, 4.0)) == (ScheduledItem("A", 1, 9, True),)


def test_a_mirror_that_missed_a_plan_says_so(make_scheduler, make_request):
    s, mirror = make_scheduler(), BatchMirror()
    s.submit(make_request("A", prompt=4), 0.0)
    s.plan(0, 1.0)  # not shown to the mirror
    s.complete(0, StepResult(), 1.0)
    with pytest.raises(ProtocolError, match="1 decoding|0 decoding"):
        mirror.step(s.plan(0, 2.0))


def test_a_request_cancelled_in_flight_is_dropped_by_the_driver(make_scheduler, make_request):
    s, mirror = make_scheduler(), BatchMirror()
    for rid in ("A", "B"):
        s.submit(make_request(rid, prompt=4), 0.0)
    mirror.step(s.plan(0, 1.0))
    mirror.report(s.complete(0, StepResult(), 1.0))
    mirror.step(s.plan(0, 2.0))
    s.cancel("A", 2.5)
    outputs = s.complete(0, StepResult(), 3.0)
    with pytest.raises(ProtocolError, match="drop"):
        _copy(mirror).report(outputs)  # it still counts "A" among the decodes
    mirror.drop("A")
    assert mirror.report(outputs) == [Emitted("B", 1, False)] and mirror.running == ["B"]


def _copy(mirror):
    clone = BatchMirror()
    for name in BatchMirror.__slots__:
        value = getattr(mirror, name)
        setattr(clone, name, value.copy() if hasattr(value, "copy") else value)
    return clone
