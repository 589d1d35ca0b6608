"""Tests of sim.results: metrics on hand-built runs with known answers, and the statistics helpers."""

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.outcomes import Outcome, RejectReason
from sim.results import (
    RECORD_DTYPE,
    RunData,
    StageInfo,
    TenantInfo,
    Timeline,
    WeightedSamples,
    WorkerStats,
    finite_or_none,
    format_report,
    jain_index,
    max_service_gap,
    summarize,
    weighted_percentile,
)

NAN = math.nan


def records(*rows: dict) -> np.ndarray:
    """Rows with defaults: a finished request of tenant 0 unless a row says otherwise."""
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for i, row in enumerate(rows):
        full = {"id": i, "tenant": 0, "worker": 0, "arrival": 0.0, "admit": NAN, "first_token": NAN,
                "finish": NAN, "prompt_tokens": 0, "output_tokens": 0, "outcome": 0, "reason": -1,
                "preemptions": 0} | row
        full["outcome"] = Outcome(full["outcome"]).code if isinstance(full["outcome"], str) else full["outcome"]
        full["reason"] = RejectReason(full["reason"]).code if isinstance(full["reason"], str) else full["reason"]
        out[i] = tuple(full[name] for name in RECORD_DTYPE.names)
    return out


def run(recs, tenants=(TenantInfo("a"),), duration=4.0, workers=(), timeline=None, itl=((), ())):
    return RunData(
        records=recs,
        itl_values=np.asarray(itl[0], dtype=np.float64),
        itl_weights=np.asarray(itl[1], dtype=np.int64),
        duration_s=duration,
        tenants=tuple(tenants),
        workers=tuple(workers),
        timeline=timeline or Timeline.empty(len(tenants)),
    )


def rejected(tenant=0, reason="queue_full", prompt=7):
    return {"tenant": tenant, "outcome": "rejected", "reason": reason, "worker": -1, "prompt_tokens": prompt}


# Three finished requests: TTFT 500/200/1000 ms, TPOT 100/200/- ms, E2EL 1500/1200/1000 ms.
THREE = (
    {"arrival": 0.0, "admit": 0.1, "first_token": 0.5, "finish": 1.5, "prompt_tokens": 100, "output_tokens": 11},
    {"arrival": 1.0, "admit": 1.0, "first_token": 1.2, "finish": 2.2, "prompt_tokens": 50, "output_tokens": 6},
    {"arrival": 2.0, "admit": 2.5, "first_token": 3.0, "finish": 3.0, "prompt_tokens": 10, "output_tokens": 1},
)


def test_latencies_and_throughputs_of_three_requests():
    cancelled = {"arrival": 0.5, "admit": 0.6, "first_token": 0.7, "prompt_tokens": 40, "output_tokens": 2,
                 "outcome": "cancelled"}
    s = summarize(run(records(*THREE, rejected(), cancelled)))["summary"]
    assert (s["requests"], s["completed"], s["rejected"], s["cancelled"], s["unfinished"]) == (5, 3, 1, 1, 0)
    assert s["mean_ttft_ms"] == pytest.approx(1700 / 3)
    assert s["median_ttft_ms"] == pytest.approx(500)
    assert s["p90_ttft_ms"] == pytest.approx(900)  # linear between 500 and 1000, like np.percentile
    assert s["mean_tpot_ms"] == pytest.approx(150)
    assert s["median_tpot_ms"] == pytest.approx(150)
    assert s["p99_tpot_ms"] == pytest.approx(199)
    assert s["mean_e2el_ms"] == pytest.approx(3700 / 3)
    assert s["median_e2el_ms"] == pytest.approx(1200)
    assert s["mean_queue_ms"] == pytest.approx(175)  # 100, 0, 500 and the cancelled one's 100
    assert s["request_throughput"] == pytest.approx(0.75)
    assert s["output_throughput"] == pytest.approx(18 / 4)
    assert s["total_token_throughput"] == pytest.approx((160 + 18) / 4)
    assert s["mean_itl_ms"] is None  # no gaps handed over


def test_itl_is_weighted_by_counts():
    s = summarize(run(records(*THREE), itl=([0.010, 0.020, 0.5], [3, 1, 0])))["summary"]
    assert s["mean_itl_ms"] == pytest.approx(12.5)
    assert s["median_itl_ms"] == pytest.approx(10.0)
    assert s["p99_itl_ms"] == pytest.approx(float(np.percentile([10, 10, 10, 20], 99)))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.integers(0, 6)), min_size=1, max_size=30)
    .filter(lambda xs: sum(w for _, w in xs) > 0),
    st.floats(0, 100),
    st.sampled_from(["inverted_cdf", "linear"]),
)
def test_weighted_percentile_equals_percentile_of_repeat(pairs, q, method):
    values, weights = np.array([v for v, _ in pairs]), np.array([w for _, w in pairs])
    expected = np.percentile(np.repeat(values, weights), q, method=method)
    assert weighted_percentile(values, weights, q, method=method) == expected


def test_weighted_percentile_edges():
    assert weighted_percentile([3.0, 1.0, 2.0], [1, 1, 1], 0) == 1.0
    assert weighted_percentile([3.0, 1.0, 2.0], [1, 1, 1], 100) == 3.0
    assert weighted_percentile([5.0, 1.0], [0, 2], 100) == 1.0  # zero weight is absent
    assert math.isnan(weighted_percentile([], [], 50))
    assert list(weighted_percentile([1.0, 2.0], [1, 3], [0, 50, 100])) == [1.0, 2.0, 2.0]
    with pytest.raises(ValueError):
        weighted_percentile([1.0], [1], 101)
    with pytest.raises(ValueError):
        weighted_percentile([1.0], [-1], 50)


def test_jain_index():
    assert jain_index([5.0, 5.0, 5.0]) == 1.0
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain_index([1.0, 3.0]) == pytest.approx(0.8)
    assert jain_index([7.0]) == 1.0
    assert jain_index([0.0, 0.0]) == 1.0
    assert jain_index([]) is None
    assert jain_index([math.inf, 1.0]) is None and jain_index([NAN]) is None


def test_no_nan_reaches_a_result_or_the_report():
    result = finite_or_none({"summary": {"x": NAN, "n": [1.0, math.inf]}, "tenants": {"t": {"share": -math.inf}}})
    assert result == {"summary": {"x": None, "n": [1.0, None]}, "tenants": {"t": {"share": None}}}
    json.dumps(result, allow_nan=False)


def test_jain_uses_normalised_service_of_tenants_that_submitted():
    tenants = (TenantInfo("a", 1.0), TenantInfo("b", 2.0), TenantInfo("idle", 1.0))
    recs = records(
        {"tenant": 0, "admit": 0.0, "first_token": 0.1, "finish": 0.2, "prompt_tokens": 10, "output_tokens": 5},
        {"tenant": 1, "admit": 0.0, "first_token": 0.1, "finish": 0.2, "prompt_tokens": 20, "output_tokens": 10},
    )
    out = summarize(run(recs, tenants))
    assert out["tenants"]["a"]["service"] == 20.0  # 1 * 10 + 2 * 5
    assert out["tenants"]["b"]["normalised_service"] == 20.0  # (20 + 20) / 2
    assert out["fairness"]["jain_index"] == 1.0  # "idle" submitted nothing: not counted
    assert out["fairness"]["jain_tenants"] == 2


def timeline(service, backlogged) -> Timeline:
    w = np.asarray(service, dtype=np.float64).T
    return Timeline(np.arange(w.shape[0], dtype=np.float64), w, np.asarray(backlogged, dtype=bool).T)


def test_max_service_gap_takes_max_minus_min_inside_a_run():
    # D = W_a - W_b = 0, 5, 1: the gap is 5, though the run's endpoints differ by 1.
    gap = max_service_gap(timeline([[0, 5, 6], [0, 0, 5]], [[1, 1, 1], [1, 1, 1]]))
    assert (gap.gap, gap.pair) == (5.0, (0, 1))


def test_max_service_gap_is_broken_by_a_sample_not_backlogged():
    service = [[0, 5, 6, 7, 8, 12, 16],          # a
               [0, 0, 5, 9, 9, 9, 9],            # b: D = 0, 5, 1, -2, -1, 3, 7
               [0, 0, 0, 100, 100, 100, 100]]    # c: backlogged with a at one sample only
    backlogged = [[1, 1, 1, 1, 1, 1, 1],
                  [1, 1, 1, 0, 1, 1, 1],
                  [0, 0, 0, 1, 0, 0, 0]]
    gap = max_service_gap(timeline(service, backlogged))
    # Runs of (a, b): samples 0-2 (gap 5) and 4-6 (D -1..7: gap 8). Across the break it would be 9.
    assert (gap.gap, gap.pair) == (8.0, (0, 1))
    fairness = summarize(run(records(), [TenantInfo(n) for n in "abc"],
                             timeline=timeline(service, backlogged)))["fairness"]
    assert fairness["max_service_gap"] == 8.0
    assert fairness["service_gap_pair"] == ["a", "b"]
    assert fairness["max_service_gap_note"] is None


def test_max_service_gap_none_when_never_backlogged_together():
    gap = max_service_gap(timeline([[0, 1], [0, 9]], [[1, 0], [0, 1]]))
    assert (gap.gap, gap.pair) == (None, None)


def test_no_gap_names_no_pair():
    tl = timeline([[0, 3, 6], [0, 3, 6]], [[1, 1, 1], [1, 1, 1]])  # served in lockstep
    assert (max_service_gap(tl).gap, max_service_gap(tl).pair) == (0.0, None)
    out = summarize(run(records(*THREE), [TenantInfo("a"), TenantInfo("b")], timeline=tl))
    assert (out["fairness"]["max_service_gap"], out["fairness"]["service_gap_pair"]) == (0.0, None)
    assert "max service gap 0.0" in format_report(out) and " vs " not in format_report(out)


def brute_gap(w, bl):
    best = None
    for f, g in itertools.combinations(range(w.shape[1]), 2):
        for t1 in range(w.shape[0]):
            for t2 in range(t1, w.shape[0]):
                if bl[t1:t2 + 1, f].all() and bl[t1:t2 + 1, g].all():
                    d = abs((w[t2, f] - w[t1, f]) - (w[t2, g] - w[t1, g]))
                    best = d if best is None else max(best, d)
    return best


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4).flatmap(lambda t: st.tuples(
    st.lists(st.lists(st.integers(0, 9), min_size=t, max_size=t), min_size=1, max_size=8),
    st.lists(st.lists(st.booleans(), min_size=t, max_size=t), min_size=8, max_size=8))))
def test_max_service_gap_matches_brute_force(data):
    steps, flags = data
    w = np.cumsum(np.array(steps, dtype=np.float64), axis=0)
    bl = np.array(flags[:len(steps)], dtype=bool)
    assert max_service_gap(Timeline(np.arange(len(w), dtype=float), w, bl)).gap == brute_gap(w, bl)


def test_max_service_gap_restricted_to_heaviest_tenants():
    n = 203
    w = np.vstack([np.zeros(n), np.arange(n, dtype=np.float64)])  # tenant i ends with service i
    tl = Timeline(np.arange(2.0), w, np.ones((2, n), dtype=bool))
    gap = max_service_gap(tl)
    assert (gap.considered, gap.backlogged) == (200, 203)
    assert gap.pair == (3, 202) and gap.gap == 199.0  # tenants 0-2 are dropped
    fairness = summarize(run(records(), [TenantInfo(f"t{i}") for i in range(n)], timeline=tl))["fairness"]
    assert "200 of 203" in fairness["max_service_gap_note"]
    assert fairness["service_gap_pair"] == ["t3", "t202"]


def test_goodput_and_slo_attainment():
    tenants = (TenantInfo("slo", slo_ttft_ms=600, slo_tpot_ms=150), TenantInfo("free"),
               TenantInfo("tpot_only", slo_tpot_ms=1.0))
    rows = [*THREE, *({**r, "tenant": 1} for r in THREE), {**THREE[2], "tenant": 2}]
    out = summarize(run(records(*rows), tenants))
    # "slo": only the first request meets both (the second misses TPOT, the third TTFT).
    assert out["tenants"]["slo"]["request_goodput"] == pytest.approx(0.25)
    assert out["tenants"]["slo"]["slo_attainment"] == pytest.approx(1 / 3)
    assert out["tenants"]["free"]["slo_attainment"] is None  # no SLO: nothing to attain
    assert out["tenants"]["tpot_only"]["slo_attainment"] == 1.0  # one output token: TPOT met trivially
    assert out["summary"]["request_goodput"] == pytest.approx(5 / 4)
    assert out["summary"]["slo_attainment"] == pytest.approx(2 / 4)  # over the 4 requests with an SLO
    free_row = next(line for line in format_report(out).splitlines() if line.startswith("free"))
    assert free_row.split()[-1] == "-" and "100.0%" not in free_row


def test_slo_attainment_counts_requests_that_never_finished_as_misses():
    tenants = (TenantInfo("slo", slo_ttft_ms=600, slo_tpot_ms=150),)
    unfinished = {**THREE[0], "outcome": "unfinished", "finish": NAN}
    out = summarize(run(records(THREE[0], rejected(), unfinished), tenants))
    assert out["summary"]["completed"] == 1 and out["summary"]["slo_attainment"] == pytest.approx(1 / 3)
    assert out["tenants"]["slo"]["slo_attainment"] == pytest.approx(1 / 3)


def test_per_tenant_counts_service_and_rejections():
    tenants = (TenantInfo("a", 2.0), TenantInfo("b"))
    recs = records(*THREE, rejected(1, "rate_limited"), rejected(1, "rate_limited"), rejected(1, "prompt_too_long"),
                   rejected(0, "queue_full"),
                   {"tenant": 1, "admit": 1.0, "prompt_tokens": 30, "output_tokens": 4, "outcome": "unfinished",
                    "first_token": 1.5})
    out = summarize(run(recs, tenants))
    a, b = out["tenants"]["a"], out["tenants"]["b"]
    assert b["rejected_by_reason"] == {"rate_limited": 2, "prompt_too_long": 1}
    assert a["rejected_by_reason"] == {"queue_full": 1}
    assert out["summary"]["rejected_by_reason"] == {"rate_limited": 2, "queue_full": 1, "prompt_too_long": 1}
    assert (a["submitted"], a["completed"], a["rejected"]) == (4, 3, 1)
    assert (b["submitted"], b["completed"], b["rejected"], b["unfinished"]) == (4, 0, 3, 1)
    # Rejected prompts never ran, so they are not service.
    assert (a["prompt_tokens"], a["output_tokens"], a["service"]) == (160, 18, 196.0)
    assert (b["prompt_tokens"], b["output_tokens"], b["service"]) == (30, 4, 38.0)
    assert a["normalised_service"] == 98.0
    assert a["service_share"] == pytest.approx(196 / 234)
    assert a["median_ttft_ms"] == pytest.approx(500)
    assert b["median_ttft_ms"] is None


def test_utilisation_from_worker_stats():
    workers = (WorkerStats(busy_s=3.0, steps=10, seq_steps=40, token_steps=500, kv_block_seconds=200.0,
                           kv_blocks_total=100, preemptions=2, prefix_queries=400, prefix_hits=100),
               WorkerStats(busy_s=1.0, steps=30, seq_steps=40, token_steps=100, kv_block_seconds=0.0,
                           kv_blocks_total=100, preemptions=1, prefix_queries=100, prefix_hits=0))
    out = summarize(run(records(*THREE), workers=workers))
    s = out["summary"]
    assert s["utilisation"] == pytest.approx(0.5)
    assert s["mean_batch_size"] == pytest.approx(2.0)
    assert s["kv_usage_mean"] == pytest.approx(0.25)
    assert s["preemptions"] == 3
    assert s["prefix_cache_hit_rate"] == pytest.approx(100 / 500)  # tokens over the pool, as vLLM counts
    assert out["workers"][0] == {"utilisation": 0.75, "steps": 10, "mean_batch_size": 4.0,
                                 "kv_usage_mean": 0.5, "preemptions": 2, "prefix_cache_queries": 400,
                                 "prefix_cache_hits": 100, "prefix_cache_hit_rate": 0.25}


def test_result_is_strict_json():
    tenants = (TenantInfo("a", slo_ttft_ms=100), TenantInfo("b"))
    out = summarize(run(records(*THREE, rejected(1)), tenants, itl=([0.01], [5]),
                        workers=(WorkerStats(1.0, 1, 1, 1, 1.0, 0, 0),),
                        timeline=timeline([[0, 1], [0, 2]], [[1, 1], [1, 1]])))
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_empty_run_gives_none_and_a_report():
    for recs in (records(), records(rejected(), rejected(reason="no_workers"))):
        out = summarize(run(recs, duration=0.0))
        s = out["summary"]
        json.dumps(out, allow_nan=False)
        for key in ("mean_ttft_ms", "p99_tpot_ms", "median_itl_ms", "p90_e2el_ms", "request_throughput",
                    "utilisation", "mean_batch_size"):
            assert s[key] is None, key
        assert s["slo_attainment"] is None  # tenant "a" has no SLO
        assert out["fairness"]["max_service_gap"] is None
        report = format_report(out, title="empty")
        assert "TTFT" in report and all(len(line) <= 110 for line in report.splitlines())
    assert out["summary"]["rejected_by_reason"] == {"queue_full": 1, "no_workers": 1}


def test_report_tables_are_readable():
    tenants = [TenantInfo("interactive", 2.0, 500, 100), TenantInfo("batch-with-a-very-long-tenant-name")]
    rows = [{**r, "tenant": t, "output_tokens": r["output_tokens"] * 1000} for r in THREE for t in (0, 1)]
    out = summarize(run(records(*rows, rejected(1, "rate_limited")), tenants, itl=([0.01], [3]),
                        workers=(WorkerStats(2.0, 10, 25, 300, 100.0, 50, 1),),
                        timeline=timeline([[0, 10], [0, 20]], [[1, 1], [1, 1]])))
    report = format_report(out, title="fcfs vs vtc")
    lines = report.splitlines()
    assert lines[0] == "fcfs vs vtc"
    assert all(len(line) <= 110 for line in lines)
    assert "rate_limited 1" in report
    assert "9,000.0 output tok/s" in report  # 2 * 18,000 tokens in 4 s
    assert any(line.startswith("interactive") for line in lines)
    assert any(line.startswith("batch-with-a-very-l~") for line in lines)
    assert "Jain" in report and "(interactive vs batch-with-a-very-long-tenant-name)" in report


def test_report_limits_tenant_rows():
    tenants = [TenantInfo(f"t{i}") for i in range(5)]
    recs = records(*({**THREE[0], "tenant": i % 5} for i in range(12)))
    report = format_report(summarize(run(recs, tenants)), max_tenants=2)
    assert "3 more tenants not shown" in report
    shown = [line.split()[0] for line in report.splitlines() if line[:2] in {f"t{i}" for i in range(5)}]
    assert shown == ["t0", "t1"]


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError):
        TenantInfo("a", weight=0.0)
    with pytest.raises(ValueError, match="tenant index"):
        run(records({"tenant": 3}))
    with pytest.raises(ValueError, match="unique"):
        run(records(), tenants=(TenantInfo("a"), TenantInfo("a")))


@given(st.lists(st.tuples(st.lists(st.sampled_from([0.5, 0.25, 1e-3, 7.0]), min_size=1, max_size=5),
                          st.integers(0, 4)), max_size=20),
       st.integers(1, 8))
def test_weighted_samples_merge_to_distinct_values_with_summed_weights(blocks, merge_every):
    samples = WeightedSamples(merge_every=merge_every)
    expected: dict[float, int] = {}
    for values, weight in blocks:
        if len(values) == 1:
            samples.add_one(values[0], weight)
        else:
            samples.add(np.array(values), weight)
        for value in values:
            expected[value] = expected.get(value, 0) + weight
    values, weights = samples.arrays()
    assert values.tolist() == sorted(expected) and weights.tolist() == [expected[v] for v in sorted(expected)]
    assert weights.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# staged load


def staged(recs, stages, **kwargs) -> RunData:
    data = run(recs, **kwargs)
    return RunData(data.records, data.itl_values, data.itl_weights, data.duration_s, data.tenants, data.workers,
                   data.timeline, stages=tuple(StageInfo(*s) for s in stages))


def test_stage_rows_cover_the_requests_arriving_in_each_stage():
    # THREE arrive at 0, 1 and 2 s; stage 0 is [0, 1.5), stage 1 [1.5, 4), stage 2 [4, 6) is empty.
    out = summarize(staged(records(*THREE, {**rejected(), "arrival": 1.2}), [(0, 1.5, 2.0), (1.5, 4, 1.0),
                                                                              (4, 6, 0.5)]))
    first, second, empty = out["stages"]
    assert (first["stage"], first["start_s"], first["end_s"], first["rate"]) == (0, 0.0, 1.5, 2.0)
    assert (first["submitted"], first["completed"], first["rejected"]) == (3, 2, 1)
    assert first["offered_rate"] == pytest.approx(2.0) and first["request_throughput"] == pytest.approx(4 / 3)
    assert first["mean_ttft_ms"] == pytest.approx(350) and first["median_tpot_ms"] == pytest.approx(150)
    assert first["p99_e2el_ms"] == pytest.approx(1500 - 0.01 * 300)  # linear between 1200 and 1500
    assert (second["submitted"], second["completed"], second["mean_ttft_ms"]) == (1, 1, pytest.approx(1000))
    assert second["mean_tpot_ms"] is None  # a single-token request has no TPOT
    assert empty["submitted"] == 0 and empty["median_ttft_ms"] is None and empty["request_throughput"] == 0
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_a_run_without_stages_has_no_stage_key_or_table():
    out = summarize(run(records(*THREE)))
    assert "stages" not in out and "stage " not in format_report(out)


def test_report_prints_a_stage_table():
    out = summarize(staged(records(*THREE), [(0, 1.5, 2.0), (1.5, 4, 1.0)]))
    report = format_report(out)
    lines = report.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("stage"))
    assert lines[head].split()[:5] == ["stage", "start", "s", "end", "s"]
    assert lines[head + 2].split()[:6] == ["0", "0.0", "1.5", "2.00", "1.33", "2"]
    assert lines[head + 3].split()[:6] == ["1", "1.5", "4.0", "1.00", "0.40", "1"]
    assert all(len(line) <= 110 for line in lines)
    many = summarize(staged(records(*THREE), [(k, k + 1, 1.0) for k in range(5)]))
    assert "3 more stages not shown" in format_report(many, max_tenants=2)


def test_a_staged_simulation_reports_each_stage():
    from sim.cluster import simulate
    from sim.config import config_from_dict

    stages = [{"rate": 2, "duration_s": 5}, {"rate": 6, "duration_s": 5}]
    table = {"seed": 2, "duration_s": 3, "cluster": {"workers": 1},
             "tenants": [{"name": "a", "arrival": "constant", "stages": stages, "prompt_tokens": 100,
                          "output_tokens": 10},
                         {"name": "b", "rate": 1.0, "prompt_tokens": 100, "output_tokens": 10}]}
    outs = [summarize(simulate(config_from_dict(table))) for _ in range(2)]
    assert json.dumps(outs[0], allow_nan=False) == json.dumps(outs[1], allow_nan=False)
    rows = outs[0]["stages"]
    assert [(r["start_s"], r["end_s"], r["rate"]) for r in rows] == [(0.0, 5.0, 2.0), (5.0, 10.0, 6.0)]
    b = [r["submitted"] - n for r, n in zip(rows, (10, 30))]  # tenant b's requests, in [0, 3) only
    assert b[1] == 0 and b[0] == outs[0]["tenants"]["b"]["submitted"]
    assert all(r["completed"] == r["submitted"] and r["median_ttft_ms"] > 0 for r in rows)
