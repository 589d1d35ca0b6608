"""Grid points on executors: identical results, resume from the cache, failures recorded."""

import socket

import pytest

from bench_helpers import tiny_table
from benchmarks.points import make_point, run_point
from benchmarks.runner import (
    Interrupted,
    RayExecutor,
    SerialExecutor,
    check_ray_address,
    make_executor,
    run_points,
)
from benchmarks.store import Store, dump_json
from scheduler.errors import ConfigError


def grid(n: int = 4) -> list:
    return [make_point({"policy": p, "load": load}, tiny_table(scheduler={"policy": p}, load=load))
            for p in ("fcfs", "vtc") for load in (1.0, 3.0)][:n]


class Counting:
    """A runner that counts its calls and can fail or stop on chosen tables."""

    def __init__(self, interrupt_after: int | None = None, fail_load: float | None = None):
        self.calls, self.interrupt_after, self.fail_load = [], interrupt_after, fail_load

    def __call__(self, table):
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(table)
        if table.get("load") == self.fail_load:
            raise ValueError(f"no luck at load {self.fail_load}")
        return run_point(table)


def docs(outcomes) -> list[str]:
    return [dump_json(o.doc) for o in outcomes]


def test_process_pool_and_serial_give_byte_identical_documents(tmp_path):
    points = grid()
    serial = run_points(points, SerialExecutor(), Store(tmp_path / "serial"))
    with make_executor("process", 2) as pool:
        pooled = run_points(points, pool, Store(tmp_path / "pool"))
    assert [o.status for o in pooled] == ["ok"] * 4
    assert docs(pooled) == docs(serial)
    assert len({o.point.key for o in pooled}) == 4
    for o in pooled:
        assert (tmp_path / "pool" / "runs" / f"{o.point.key}.json").read_text() == dump_json(o.doc)


def test_an_interrupted_run_resumes_with_the_points_it_had_not_finished(tmp_path):
    points, store = grid(), Store(tmp_path)
    first = Counting(interrupt_after=2)
    with pytest.raises(Interrupted) as stop:
        run_points(points, SerialExecutor(), store, runner=first)
    assert [o.status for o in stop.value.outcomes] == ["ok", "ok", "pending", "pending"]
    second = Counting()
    outcomes = run_points(points, SerialExecutor(), store, runner=second)
    assert [o.status for o in outcomes] == ["cached", "cached", "ok", "ok"]
    assert second.calls == [p.table for p in points[2:]]
    assert docs(outcomes) == docs(run_points(points, SerialExecutor(), Store(tmp_path / "fresh")))
    again = Counting()
    run_points(points, SerialExecutor(), store, runner=again, fresh=True)
    assert len(again.calls) == 4


def test_a_failing_point_is_recorded_and_the_rest_go_on_and_it_is_retried(tmp_path):
    points, store = grid(), Store(tmp_path)
    outcomes = run_points(points, SerialExecutor(), store, runner=Counting(fail_load=3.0))
    assert [o.status for o in outcomes] == ["ok", "failed", "ok", "failed"]
    assert outcomes[1].error == "ValueError: no luck at load 3.0" and outcomes[1].doc is None
    retry = Counting()
    assert [o.status for o in run_points(points, SerialExecutor(), store, runner=retry)] == \
        ["cached", "ok", "cached", "ok"]
    assert len(retry.calls) == 2


def test_points_with_one_config_run_once(tmp_path):
    a = make_point({"name": "a"}, tiny_table())
    b = make_point({"name": "b"}, tiny_table(load=1))  # the same config spelled differently
    runner = Counting()
    outcomes = run_points([a, b], SerialExecutor(), Store(tmp_path), runner=runner)
    assert len(runner.calls) == 1 and outcomes[0].doc is outcomes[1].doc


def test_bad_executor_choices_are_named():
    with pytest.raises(ConfigError, match="--executor: unknown executor 'dask'; allowed: process, ray, serial"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--jobs: must be an integer >= 1, got 0"):
        make_executor("process", 0)
    assert isinstance(make_executor("process", 1), SerialExecutor)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_an_unreachable_ray_address_fails_at_once_naming_it():
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigError, match=f"cannot reach a Ray cluster at '{address}'"):
        check_ray_address(address)
    with pytest.raises(ConfigError, match="RAY_ADDRESS: expected host:port"):
        check_ray_address("somewhere")
    check_ray_address("auto")  # left to ray


def test_ray_executor_without_ray_or_with_a_dead_address_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port()}")
    with pytest.raises(ConfigError, match="--executor ray: (ray is not installed|cannot reach)"):
        RayExecutor()
