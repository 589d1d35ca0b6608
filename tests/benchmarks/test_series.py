"""Distributions and over-time series rebuilt from per-request records."""

import numpy as np
import pytest

from bench_helpers import tiny_table
from benchmarks.series import QUANTILES, busy_fraction, kv_blocks, series, worker_activity
from sim.cluster import simulate
from sim.config import config_from_dict
from sim.results import RECORD_DTYPE, summarize


def test_busy_fraction_is_the_union_of_intervals_per_bin():
    starts, stops = np.array([0.0, 0.5, 3.0]), np.array([1.0, 2.0, 3.5])
    got = busy_fraction(starts, stops, np.array([0.0, 2.0, 4.0, 6.0]))
    assert got.tolist() == [1.0, 0.25, 0.0]
    assert busy_fraction(np.zeros(0), np.zeros(0), np.array([0.0, 1.0])).tolist() == [0.0]


def test_kv_blocks_hold_the_prompt_and_the_tokens_generated_so_far():
    recs = np.zeros(1, dtype=RECORD_DTYPE)
    recs[0] = (0, 0, 0, 0.0, 1.0, 2.0, 4.0, 30, 21, 0, -1, 0)  # admit 1, first token 2, finish 4
    times = np.array([0.5, 1.5, 2.0, 3.0, 4.0])
    # before admission: nothing; prefill: 30 tokens = 2 blocks of 16; at the first token 31;
    # halfway 30 + 11 = 41 (3 blocks); at the finish it has let go.
    assert kv_blocks(recs, recs["finish"], 16, times).tolist() == [0, 2, 2, 3, 0]


@pytest.fixture(scope="module")
def tiny_run():
    config = config_from_dict(tiny_table(load=12.0))
    return config, simulate(config)


def test_busy_time_matches_the_simulators_count_and_kv_comes_close(tiny_run):
    config, data = tiny_run
    assert data.workers[0].preemptions == 0  # busy time is exact only without preemption
    edges = np.linspace(0, data.duration_s, 41)
    busy, kv = worker_activity(data, config.scheduler.block_size, edges)
    busy_s = float(busy[0] @ np.diff(edges))
    assert busy_s == pytest.approx(data.workers[0].busy_s, rel=1e-9)
    kv_mean = summarize(data)["summary"]["kv_usage_mean"]
    assert kv.mean() == pytest.approx(kv_mean, rel=0.15)


def test_series_quantiles_agree_with_the_summary(tiny_run):
    config, data = tiny_run
    s, summary = series(data, config.scheduler.block_size), summarize(data)["summary"]
    assert len(s["ttft_ms"]) == len(QUANTILES) == len(s["quantiles"])
    assert s["ttft_ms"][100] == pytest.approx(summary["median_ttft_ms"], rel=1e-5)
    assert s["tpot_ms"][198] == pytest.approx(summary["p99_tpot_ms"], rel=1e-5)
    assert np.all(np.diff(s["ttft_ms"]) >= 0)
    service = np.array(s["service"])
    assert service.shape == (2, len(s["time_s"])) and np.all(np.diff(service, axis=1) >= 0)
    assert np.array(s["busy"]).shape == np.array(s["kv_usage"]).shape == (1, len(s["time_s"]) - 1)
