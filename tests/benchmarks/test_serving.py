"""The serving benchmark's order-of-service figure tells a fair policy from FCFS, on the
simulator's run of the flood's arrivals (the HTTP runs are in tests/scheduler/runtime/test_load.py)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from benchmarks.serving import FLOOD, FLOODER, QUIET, _counts, overtaken, prompt, prompt_index, token_events

pytest.importorskip("starlette", reason="the serving benchmark needs the serve extra: pip install -e '.[serve]'")


def simulated_admissions(policy: str) -> list[tuple[str, float, float]]:
    from sim.cluster import Simulation
    from sim.serve import serve_config_from_dict

    table = tomllib.loads(FLOOD)
    table["scheduler"]["policy"] = policy
    config = serve_config_from_dict(table)
    records = Simulation(config.sim).run().records
    admitted = records[~np.isnan(records["admit"])]
    return [(config.tenants[r["tenant"]], float(r["arrival"]), float(r["admit"])) for r in admitted]


def test_vtc_admits_almost_no_flood_request_ahead_of_a_waiting_quiet_one_and_fcfs_admits_its_queue():
    vtc, fcfs = (overtaken(simulated_admissions(policy), QUIET, FLOODER) for policy in ("vtc", "fcfs"))
    assert set(vtc) == set(QUIET) and max(vtc.values()) <= 3
    assert min(fcfs.values()) >= 100  # mallory's queue holds 120


def test_overtaken_counts_only_admissions_strictly_inside_the_wait():
    rows = [("q", 1.0, 3.0), ("f", 0.0, 1.0), ("f", 0.5, 2.0), ("f", 0.6, 2.5), ("f", 0.7, 3.0), ("f", 4.0, 4.0)]
    assert overtaken(rows, ["q"], "f") == {"q": 2}
    assert overtaken([("f", 0.0, 0.0)], ["q"], "f") == {"q": 0}


def test_prompt_has_the_asked_number_of_tokens():
    from scheduler.runtime.api import count_tokens

    assert [count_tokens(prompt(n)) for n in (1, 64, 512)] == [1, 64, 512]


@pytest.mark.slow
def test_the_health_benchmark_holds_its_streams_open_while_it_probes():
    import anyio

    from benchmarks.serving import report_health, run_health

    r = anyio.run(run_health, 8, 0.5)
    assert (r["streams"], r["peak_streams"], r["open_after_probe"]) == (8, 8, 8)
    assert r["idle"]["probes"] >= 1 and r["busy"]["probes"] >= 1 and r["tokens_per_s"] > 0
    assert "8 streams open" in report_health([r])


def test_token_events_count_each_event_once_wherever_the_stream_is_cut():
    from scheduler.runtime import api

    request = api.Completion(api.COMPLETION, "llama-3-8b", "hi", 2, 16, stream=True)
    stream = api.TokenEvents(request, "cmpl-1", 3).encode(list("abcde")) + api.sse(
        api.chunk(request, "cmpl-1", 3, None, "length")) + api.sse("[DONE]")
    for size in range(1, len(stream) + 1):
        total, tail = 0, b""
        for at in range(0, len(stream), size):
            count, tail = token_events(tail, stream[at:at + size])
            total += count
        assert total == 5, size


def test_prompt_index_reads_back_the_unique_number_and_stream_counts_parse():
    assert prompt_index(prompt(64, unique=321)) == 321
    assert _counts("100,500") == [100, 500]
    for bad in ("", "0", "a,1"):
        with pytest.raises(Exception, match="--streams"):
            _counts(bad)


def test_the_ttft_runs_load_is_a_fraction_of_what_the_simulated_pool_finishes_under_a_flood():
    from benchmarks.serving import capacity_rate, steady

    capacity = capacity_rate()
    text, rate, simulation = steady(0.5, 2.0)
    assert 10 < capacity < 1000 and rate == pytest.approx(capacity / 2)
    assert f"rate = {rate}" in text and len(simulation.workload) > 0


@pytest.mark.slow
def test_the_throughput_benchmark_counts_streamed_tokens_and_the_servers_cpu():
    import anyio

    from benchmarks.serving import report_throughput, run_throughput, run_ttft

    r = anyio.run(run_throughput, 8, 0.5)
    assert r["streams"] == 8 and r["tokens"] > 0 and r["cpu_s"] > 0 and r["ended"].get("cancelled", 0) == 0
    t = anyio.run(run_ttft, 0.2, 1.0)
    assert t["finished"] == t["requests"] > 0 and 0 <= t["runtime_added_p50_ms"] <= t["runtime_p50_ms"]
    assert t["runtime_p50_ms"] < t["client_p50_ms"]
    assert "8 " in report_throughput({8: [r]}, [t]) and "runtime adds" in report_throughput({8: [r]}, [t])


def test_gpu_time_counts_the_steps_within_a_window():
    from benchmarks.serving import gpu_time

    spans = np.array([(0.0, 1.0), (1.0, 2.5), (4.0, 5.0)])
    assert gpu_time(spans, 0.5, 4.5) == pytest.approx(0.5 + 1.5 + 0.5)
    assert gpu_time(spans, 2.5, 4.0) == 0.0
    assert gpu_time(spans, 6.0, 7.0) == 0.0
