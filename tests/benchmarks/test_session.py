"""A session writes its manifest and CSV at the end, also when interrupted."""

import csv

import pytest

from bench_helpers import tiny_table
from benchmarks.points import make_point, run_point
from benchmarks.runner import Interrupted
from benchmarks.session import Session
from benchmarks.store import load_results
from scheduler.errors import ConfigError


def points():
    return [make_point({"load": load}, tiny_table(load=load)) for load in (1.0, 2.0, 3.0)]


def test_manifest_and_csv_follow_every_run_call(tmp_path):
    with Session("sweep", tmp_path, jobs=1, progress=False) as session:
        session.run(points()[:2])
        session.run(points())
        session.extra["grid"] = {"axes": {"load": [1.0, 2.0, 3.0]}}
    assert session.counts() == {"ok": 3, "cached": 2, "failed": 0, "pending": 0}
    manifest, docs = load_results(tmp_path)
    assert manifest["grid"] == {"axes": {"load": [1.0, 2.0, 3.0]}} and len(docs) == 3
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 5


def test_an_interrupt_still_writes_what_finished(tmp_path):
    calls = []

    def stop_on_third(table):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(table)
        return run_point(table)

    with pytest.raises(Interrupted):
        with Session("sweep", tmp_path, jobs=1, progress=False, runner=stop_on_third) as session:
            session.run(points())
    manifest, docs = load_results(tmp_path)
    assert [p["status"] for p in manifest["points"]] == ["ok", "ok", "pending"] and len(docs) == 2
    assert [r["status"] for r in csv.DictReader((tmp_path / "results.csv").open())] == ["ok", "ok", "pending"]


def test_a_bad_executor_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="--executor"):
        with Session("sweep", tmp_path, executor="threads"):
            pass
