"""Goodput capacity: the bisection's bracket, rounds of probes, and a real search end to end."""

import gzip

import pytest

from bench_helpers import tiny_table
from benchmarks.capacity import Bisection, Search, capacity_base, highest_load, make_searches, passes, search
from benchmarks.points import run_point
from benchmarks.runner import SerialExecutor, run_points
from benchmarks.store import Outcome, Store
from scheduler.errors import ConfigError


def bisect(threshold: float, **kwargs) -> Bisection:
    b = Bisection(**kwargs)
    while (load := b.next_load()) is not None:
        b.record(load, load <= threshold)
    return b


def test_bisection_brackets_the_threshold_within_the_tolerance():
    b = bisect(2.7, start=1.0, tolerance=0.05)
    assert [load for load, _ in b.probes[:3]] == [1.0, 2.0, 4.0]
    assert b.passed <= 2.7 < b.failed and b.failed - b.passed <= 0.05 * b.failed
    assert len(b.probes) <= 9 and b.note() is None


def test_bisection_halves_from_a_failing_start_and_reports_the_limits():
    b = bisect(0.3, start=1.0, tolerance=0.1)
    assert [load for load, _ in b.probes[:3]] == [1.0, 0.5, 0.25] and b.passed <= 0.3 < b.failed
    assert bisect(0.001, low=0.01).note() == "fails even at load x0.01"
    assert bisect(1e9, high=8.0).note() == "passes up to the highest load probed, x8"
    assert bisect(1e9, high=8.0).passed == 8.0


def doc(load: float, ttft: float, tpot: float) -> dict:
    return {"goodput": {"ttft_attainment": ttft, "tpot_attainment": tpot, "offered_request_rate": 10 * load}}


def test_passing_needs_both_attainments():
    assert passes(doc(1, 0.9, 0.95)) and not passes(doc(1, 0.89, 1.0)) and not passes(doc(1, 1.0, 0.5))
    assert not passes(doc(1, None, None))


def test_searches_advance_together_one_probe_per_round():
    searches = make_searches(tiny_table(), ["fcfs", "vtc"], "tiny", start=1.0, tolerance=0.1)
    thresholds = {"fcfs": 3.0, "vtc": 5.0}
    rounds = []

    def run(points):
        rounds.append(len(points))
        return [Outcome(p, "ok", doc(p.labels["load"], 1.0 if p.labels["load"] <= thresholds[p.labels["policy"]]
                                     else 0.5, 1.0)) for p in points]

    results = search(searches, run, on_round=lambda n: None)
    assert rounds[0] == 2 and sum(rounds) == sum(len(r["probes"]) for r in results)
    by_policy = {r["labels"]["policy"]: r for r in results}
    assert 2.7 <= by_policy["fcfs"]["capacity"] <= 3.0 < by_policy["fcfs"]["failed_at"]
    assert 4.5 <= by_policy["vtc"]["capacity"] <= 5.0
    assert by_policy["vtc"]["at_capacity"]["offered_request_rate"] == 10 * by_policy["vtc"]["capacity"]


def test_a_failed_probe_ends_that_search_with_its_error():
    searches = make_searches(tiny_table(), ["fcfs"], "tiny")
    results = search(searches, lambda points: [Outcome(p, "failed", error="Boom: x") for p in points])
    assert results[0]["capacity"] is None and results[0]["note"] == "probe at load x1 failed: Boom: x"


def test_capacity_base_stops_probes_after_a_drain_unless_the_scenario_has_a_horizon():
    assert capacity_base(table=tiny_table(), drain_s=10)["horizon_s"] == 16.0
    assert capacity_base(table=tiny_table(horizon_s=7.0))["horizon_s"] == 7.0


def test_a_trace_caps_the_highest_load(tmp_path):
    trace = tmp_path / "t.csv.gz"
    with gzip.open(trace, "wt") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        f.write("2023-11-16 18:00:00.0000000,10,5\n2023-11-16 18:01:40.0000000,10,5\n")
    table = tiny_table(duration_s=20.0, tenants=[{"name": "t", "trace": str(trace)}])
    assert highest_load(table) == 5.0  # 100 s of trace over 20 s of arrivals
    assert make_searches(table, ["fcfs"], "t", start=8.0)[0].bisection.start == 5.0


def test_bad_search_settings_are_named():
    with pytest.raises(ConfigError, match="--tolerance: must be in"):
        make_searches(tiny_table(), ["fcfs"], "t", tolerance=1.5)
    with pytest.raises(ConfigError, match="--start: must be in"):
        make_searches(tiny_table(), ["fcfs"], "t", start=0.0)
    with pytest.raises(ConfigError, match="scheduler.policy"):
        make_searches(tiny_table(), ["nope"], "t")


def test_a_real_search_finds_the_load_where_attainment_drops_below_90_percent(tmp_path):
    store = Store(tmp_path)
    [s] = make_searches(capacity_base(table=tiny_table()), ["fcfs"], "tiny", tolerance=0.1)
    [result] = search([s], lambda points: run_points(points, SerialExecutor(), store))
    capacity, failed = result["capacity"], result["failed_at"]
    assert 4.0 <= capacity < failed <= 32.0 and failed - capacity <= 0.1 * failed
    at, beyond = run_point(s.point(capacity).table)["goodput"], run_point(s.point(failed).table)["goodput"]
    assert at["ttft_attainment"] >= 0.9 and at["tpot_attainment"] >= 0.9
    assert min(beyond["ttft_attainment"], beyond["tpot_attainment"]) < 0.9
    assert isinstance(s, Search) and result["at_capacity"] == at
