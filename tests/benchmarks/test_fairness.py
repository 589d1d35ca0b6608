"""The fairness metrics on hand-built runs with known answers, and the benchmarks end to end."""

import numpy as np
import pytest

from benchmarks import fairness
from scheduler.outcomes import Outcome
from sim.fairness import (
    accumulated_service_difference,
    censored_latency,
    censored_percentile,
    cumulative_service_at,
    demand_rates,
    request_costs,
    service_difference,
    service_rates,
    window_edges,
    windowed_service_difference,
)
from scheduler.service import ServiceWeights
from sim.results import RECORD_DTYPE, RunData, TenantInfo, Timeline

FINISHED, UNFINISHED = Outcome.FINISHED.code, Outcome.UNFINISHED.code


def timeline(times, service) -> Timeline:
    service = np.asarray(service, dtype=float)
    return Timeline(np.asarray(times, dtype=float), service, np.zeros(service.shape, dtype=bool))


def records(rows) -> np.ndarray:
    """rows: (tenant, arrival, prompt, output emitted, outcome, first_token)."""
    recs = np.zeros(len(rows), dtype=RECORD_DTYPE)
    recs["id"] = np.arange(len(rows))
    for key in ("admit", "first_token", "finish"):
        recs[key] = np.nan
    for i, (tenant, arrival, prompt, output, outcome, first) in enumerate(rows):
        recs[i]["tenant"], recs[i]["arrival"] = tenant, arrival
        recs[i]["prompt_tokens"], recs[i]["output_tokens"], recs[i]["outcome"] = prompt, output, outcome
        recs[i]["first_token"] = first
    return recs


def test_window_edges_keep_whole_windows_only():
    assert window_edges(0, 130, 60).tolist() == [0, 60, 120]
    assert window_edges(0, 120, 60).tolist() == [0, 60, 120]
    assert window_edges(10, 69, 60).tolist() == [10]
    with pytest.raises(ValueError):
        window_edges(0, 10, 0)


def test_cumulative_service_interpolates_between_samples_and_holds_outside():
    tl = timeline([0, 2, 4], [[0, 0], [20, 10], [20, 30]])
    got = cumulative_service_at(tl, [-1, 0, 1, 2, 3, 4, 10])
    assert got.tolist() == [[0, 0], [0, 0], [10, 5], [20, 10], [20, 20], [20, 30], [20, 30]]
    assert service_rates(tl, [0, 2, 4]).tolist() == [[10, 5], [0, 10]]
    assert accumulated_service_difference(tl, [0, 2, 4]).tolist() == [0, 10, 10]


def test_demand_rates_bin_each_arrival_into_its_window_and_tenant():
    arrival = [0, 1, 59.9, 60, 119, 120, 130]
    tenant = [0, 1, 0, 1, 1, 0, 0]
    cost = [1, 2, 3, 4, 5, 6, 7]
    got = demand_rates(arrival, tenant, cost, [0, 60, 120], 2) * 60  # arrivals at 120 and later are outside
    assert got.tolist() == [[4, 2], [0, 9]]
    assert request_costs([100, 10], [5, 20], ServiceWeights(1, 2), [1, 2]).tolist() == [110, 25]


def test_service_difference_counts_a_tenant_only_as_far_as_it_is_behind_and_unserved():
    service = [[10, 6, 0, 8], [5, 5, 5, 5]]
    demand = [[12, 10, 0, 5], [9, 9, 9, 9]]
    # window 0: the leader adds 0; tenant 1 is 4 behind and 4 short: 4; idle tenant 2 (asked nothing,
    # got nothing) adds 0 though 10 behind; tenant 3 is 2 behind and got 3 more than it asked: 2.
    # window 1: everyone served equally adds nothing whatever they asked.
    assert service_difference(service, demand).tolist() == [6, 0]
    with pytest.raises(ValueError):
        service_difference([[1, 2]], [[1, 2, 3]])


def hand_built_run() -> RunData:
    """Two tenants, weights 1 and 2, two 60 s windows; service weights (1, 2).

    Normalised service rates: a gets 100/s throughout; b gets 50/s, then 100/s.
    Normalised demand: a asks 100/s in both windows (its second request is unfinished: 2,000 prompt
    tokens and a true output of 2,000); b asks (6,000 + 2 x 3,000) / 2 / 60 = 100/s, then
    (4,000 + 2 x 1,000) / 2 / 60 = 50/s.
    """
    t = np.arange(0, 121, 1.0)
    b = np.where(t <= 60, 50 * t, 3000 + 100 * (t - 60))
    tl = timeline(t, np.stack([100 * t, b], axis=1))
    recs = records([
        (0, 10, 3000, 1500, FINISHED, 11),
        (1, 20, 6000, 3000, FINISHED, 21),
        (0, 70, 2000, 100, UNFINISHED, 71),
        (1, 80, 4000, 1000, FINISHED, 81),
    ])
    return RunData(records=recs, itl_values=np.zeros(0), itl_weights=np.zeros(0, dtype=np.int64), duration_s=120.0,
                   tenants=(TenantInfo("a", 1.0), TenantInfo("b", 2.0)), workers=(), timeline=tl,
                   service_weights=(1.0, 2.0))


def test_windowed_service_difference_on_a_hand_built_run():
    data = hand_built_run()
    true_output = np.array([1500, 3000, 2000, 1000])
    wf = windowed_service_difference(data, 60, true_output=true_output)
    assert wf.edges.tolist() == [0, 60, 120]
    np.testing.assert_allclose(wf.service, [[100, 50], [100, 100]])
    np.testing.assert_allclose(wf.demand, [[100, 100], [100, 50]])
    # window 0: b is 50 behind a and 50 short of its demand; window 1: both served alike.
    np.testing.assert_allclose(wf.difference, [50, 0])
    assert wf.max == pytest.approx(50) and wf.mean == pytest.approx(25)
    # Without the workload an unfinished request asks only for what it emitted so far ...
    assert windowed_service_difference(data, 60).demand[1, 0] == pytest.approx((2000 + 2 * 100) / 60)
    # ... and max_new_tokens caps what it asks for.
    capped = windowed_service_difference(data, 60, true_output=true_output, max_new_tokens=np.full(4, 500))
    assert capped.demand[1, 0] == pytest.approx((2000 + 2 * 500) / 60)
    assert capped.demand[0, 1] == pytest.approx(100)  # finished requests keep their emitted tokens


def test_censored_latency_and_percentiles_give_lower_bounds_for_requests_still_waiting():
    recs = records([
        (0, 0.0, 1, 1, FINISHED, 0.5),
        (0, 1.0, 1, 1, FINISHED, 1.2),
        (0, 2.0, 1, 0, UNFINISHED, np.nan),  # still queued at the end
        (0, 3.0, 1, 0, UNFINISHED, 10.0),  # first token after the end
    ])
    latency, censored = censored_latency(recs, end=5.0)
    np.testing.assert_allclose(latency, [0.5, 0.2, 3.0, 2.0])
    assert censored.tolist() == [False, False, True, True]
    value, exact = censored_percentile(latency, censored, 50)
    assert value == pytest.approx(1.25) and not exact
    # A censored value beyond every order statistic the percentile uses cannot move it.
    assert censored_percentile([1, 2, 3, 100], [False, False, False, True], 50) == (2.5, True)
    assert censored_percentile([1, 2, 3, 0.5], [False, False, False, True], 50) == (1.5, False)
    assert censored_percentile([], [], 99) == (None, True)


def test_noisy_neighbour_end_to_end_vtc_protects_the_well_behaved_tenants():
    result = fairness.noisy_neighbour(duration_s=8, policies=("fcfs", "vtc"))
    fcfs, vtc = result["policies"]["fcfs"], result["policies"]["vtc"]
    assert result["capacity"]["service_rate"] > 10_000
    assert vtc["flooder_share"] < fcfs["flooder_share"]
    assert vtc["worst_p99_ratio"] < fcfs["worst_p99_ratio"]
    for p in (fcfs, vtc):  # the pool stays busy and the flooder takes what the others leave
        assert p["utilisation"] >= 0.95
        assert 0.8 < p["flooder_vs_left_over"] < 1.2
        assert sum(t["submitted"] for t in p["tenants"].values()) == sum(
            t["finished"] + t["unfinished"] for t in p["tenants"].values())
    text = fairness.format_noisy(result)
    assert "flooder" in text and "vtc" in text


def test_vtc_paper_overload_end_to_end_vtc_is_fairer_at_the_same_throughput():
    result = fairness.vtc_paper(duration_s=120, setups=("overload",))
    p = result["overload"]["policies"]
    assert p["vtc"]["windows"] == 2
    assert p["vtc"]["max_diff"] < p["fcfs"]["max_diff"] / 5
    assert p["vtc"]["token_throughput"] == pytest.approx(p["fcfs"]["token_throughput"], rel=0.02)
    assert len(p["vtc"]["accumulated_diff"]) == 2
    assert "overload" in fairness.format_vtc_paper(result)


def test_main_runs_the_named_section_with_quick_durations(monkeypatch, capsys):
    seen = []

    def measure(duration_s=None):
        seen.append(duration_s)
        return {"duration": duration_s}

    monkeypatch.setattr(fairness, "SECTIONS", {"noisy": (measure, lambda r: f"table {r['duration']}")})
    monkeypatch.setattr(fairness, "QUICK_DURATION_S", {"noisy": 7.0})
    assert fairness.main(["noisy", "--quick"]) == 0
    assert fairness.main(["all"]) == 0
    assert seen == [7.0, None]
    out = capsys.readouterr().out
    assert "table 7.0" in out and "table None" in out
