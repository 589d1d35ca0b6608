import pytest

from sim.engine import EventLoop


def test_events_run_in_time_order_and_ties_in_scheduling_order():
    loop = EventLoop()
    seen = []
    loop.at(2.0, seen.append, "late")
    loop.at(1.0, seen.append, "first")
    loop.at(1.0, seen.append, "second")
    loop.run()
    assert seen == ["first", "second", "late"]
    assert loop.now == 2.0


def test_callbacks_can_schedule_more_events_and_run_stops_at_until():
    loop = EventLoop()
    ticks = []

    def tick():
        ticks.append(loop.now)
        loop.at(loop.now + 1.0, tick)

    loop.at(0.0, tick)
    loop.run(until=3.5)
    assert ticks == [0.0, 1.0, 2.0, 3.0]
    assert loop.pending() == 1


def test_scheduling_in_the_past_is_refused():
    loop = EventLoop()
    loop.at(5.0, lambda: None)
    loop.run()
    with pytest.raises(ValueError, match="before now"):
        loop.at(4.0, lambda: None)
