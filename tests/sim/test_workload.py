"""Tests for sim.workload: length distributions, arrival processes, trace reading and replay."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import math
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from sim.traces import TraceError, read_trace
from sim.workload import (
    MAX_REQUESTS,
    LengthDist,
    TenantSpec,
    Workload,
    generate,
    stage_windows,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
Z99 = 2.3263478740408408


# ---------------------------------------------------------------------------------------------
# helpers that write tiny traces


def _write(path: Path, text: str, gz: bool) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _azure_text(seconds, prompts, outputs) -> str:
    start = dt.datetime(2023, 11, 16, 18, 15, 46)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for s, p, o in zip(seconds, prompts, outputs):
        t = start + dt.timedelta(microseconds=round(s * 1e6))
        lines.append(f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond:06d}0,{p},{o}")  # 7 digits, as Azure
    return "\n".join(lines) + "\n"


def _mooncake_text(ms, prompts, outputs) -> str:
    rows = []
    for t, p, o in zip(ms, prompts, outputs):
        ids = list(range(math.ceil(p / 512)))
        rows.append(json.dumps({"timestamp": t, "input_length": p, "output_length": o, "hash_ids": ids}))
    return "\n".join(rows) + "\n"


def _vidur_text(prompts, outputs) -> str:
    lines = ["num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio"]
    lines += [f"{p},{o},{p + o},{p / o}" for p, o in zip(prompts, outputs)]
    return "\n".join(lines) + "\n"


def _azure_rows(tmp_path: Path, n: int, rate: float = 10.0, name: str = "big.csv.gz") -> Path:
    """A trace of n rows at constant spacing whose prompt lengths are 1..n (unique per row)."""
    seconds = np.arange(n) / rate
    prompts = np.arange(1, n + 1)
    return _write(tmp_path / name, _azure_text(seconds, prompts, prompts % 7 + 1), gz=True)


def _tenant(name="t", **kw) -> TenantSpec:
    kw.setdefault("rate", 5.0)
    kw.setdefault("prompt", LengthDist("fixed", (100,)))
    kw.setdefault("output", LengthDist("fixed", (10,)))
    return TenantSpec(name=name, **kw)


def _same(a: Workload, b: Workload) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("arrival_s", "tenant", "prompt_tokens", "output_tokens", "max_new_tokens")
    )


# ---------------------------------------------------------------------------------------------
# length distributions


def test_fixed_from_int_and_table():
    rng = np.random.default_rng(0)
    for value in (256, {"dist": "fixed", "value": 256}):
        out = LengthDist.from_config(value, "k").sample(rng, 1000)
        assert out.dtype == np.int64 and np.all(out == 256)


def test_uniform_is_inclusive():
    d = LengthDist.from_config({"dist": "uniform", "min": 3, "max": 7}, "k")
    out = d.sample(np.random.default_rng(1), 20_000)
    assert out.dtype == np.int64
    assert set(np.unique(out).tolist()) == {3, 4, 5, 6, 7}
    assert abs(out.mean() - 5.0) < 0.05


def test_lognormal_matches_mean_and_p99():
    d = LengthDist.from_config({"dist": "lognormal", "mean": 1000, "p99": 4000}, "k")
    out = d.sample(np.random.default_rng(2), 200_000)
    assert out.dtype == np.int64 and out.min() >= 1
    assert abs(out.mean() / 1000 - 1) < 0.02
    assert abs(np.percentile(out, 99) / 4000 - 1) < 0.03


@settings(max_examples=50, deadline=None)
@given(mean=st.floats(1.0, 1e6), ratio=st.floats(1.0001, 14.9))
def test_lognormal_fit_is_exact(mean, ratio):
    mu, sigma = LengthDist.from_config({"dist": "lognormal", "mean": mean, "p99": mean * ratio}, "k").params
    assert math.isclose(math.exp(mu + sigma**2 / 2), mean, rel_tol=1e-9)
    assert math.isclose(math.exp(mu + Z99 * sigma), mean * ratio, rel_tol=1e-9)
    assert 0 < sigma <= Z99  # the smaller root


@settings(max_examples=30, deadline=None)
@given(mean=st.floats(1.0, 50.0), ratio=st.floats(1.01, 14.0), seed=st.integers(0, 2**32))
def test_samples_are_at_least_one(mean, ratio, seed):
    d = LengthDist.from_config({"dist": "lognormal", "mean": mean, "p99": mean * ratio}, "k")
    out = d.sample(np.random.default_rng(seed), 500)
    assert out.dtype == np.int64 and out.min() >= 1


def test_lognormal_without_real_root_names_key_and_range():
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.prompt_tokens\.p99: .*\(1000, 1\d{4}"):
        LengthDist.from_config({"dist": "lognormal", "mean": 1000, "p99": 20_000}, "tenants[0].prompt_tokens")


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ({"dist": "lognormal", "mean": 1000, "p99": 900}, r"k\.p99: must be > mean \(1000\), got 900"),
        ({"dist": "lognormal", "mean": 0, "p99": 900}, r"k\.mean: must be a number in \[1, 2,147,483,647\], got 0"),
        ({"dist": "lognormal", "mean": 10}, r"k\.p99: required"),
        ({"dist": "uniform", "min": 5, "max": 4}, r"k\.max: must be an integer in \[5, 2,147,483,647\], got 4"),
        ({"dist": "uniform", "min": 0, "max": 4}, r"k\.min: must be an integer in \[1, 2,147,483,647\], got 0"),
        ({"dist": "fixed", "value": 0}, r"k\.value: must be an integer in \[1, 2,147,483,647\], got 0"),
        ({"dist": "zipf"}, r"k\.dist: must be one of fixed, uniform, lognormal, empirical"),
        ({"dist": "fixed", "value": 3, "mean": 2}, r"k: unknown key 'mean'; allowed keys: dist, value"),
        ({"dist": "empirical", "values": [3, 0]}, r"k\.values\[1\]: must be an integer in \[1, 2,147,483,647\], got 0"),
        ({"dist": "empirical", "values": [3], "weights": [1, 2]}, r"k\.weights: must be a list of 1"),
        ({"dist": "empirical", "values": [3, 4], "weights": [0, 0]}, r"k\.weights: must sum to > 0"),
        ({"dist": "empirical"}, r"k: an empirical dist needs exactly one of 'values' or 'trace'"),
        (0, r"k: must be an integer in \[1, 2,147,483,647\], got 0"),
        ("big", r"k: must be an integer >= 1 or a table"),
    ],
)
def test_length_config_errors_name_the_key(value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        LengthDist.from_config(value, "k")


def test_empirical_values_and_weights():
    d = LengthDist.from_config({"dist": "empirical", "values": [10, 20, 30], "weights": [1, 0, 3]}, "k")
    out = d.sample(np.random.default_rng(3), 40_000)
    assert set(np.unique(out).tolist()) == {10, 30}
    assert abs((out == 30).mean() - 0.75) < 0.01
    plain = LengthDist.from_config({"dist": "empirical", "values": [5, 5, 9]}, "k")
    assert abs((plain.sample(np.random.default_rng(4), 30_000) == 5).mean() - 2 / 3) < 0.01


def test_empirical_from_trace_relative_to_base_dir(tmp_path):
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "v.csv", _vidur_text([100, 200, 300], [7, 8, 9]), gz=False)
    cfg = {"dist": "empirical", "trace": "d/v.csv", "field": "output"}
    d = LengthDist.from_config(cfg, "k", base_dir=tmp_path)
    assert set(np.unique(d.sample(np.random.default_rng(0), 500)).tolist()) == {7, 8, 9}
    with pytest.raises(ConfigError, match=r"k\.field: must be 'prompt' or 'output'"):
        LengthDist.from_config({**cfg, "field": "input"}, "k", base_dir=tmp_path)
    assert "n=3" in repr(d)  # a trace's values are not dumped into reprs


# ---------------------------------------------------------------------------------------------
# arrival processes


def _gaps(spec: TenantSpec, n: int, seed: int = 0) -> np.ndarray:
    w = generate([spec], np.random.default_rng(seed), requests=n)
    return np.diff(np.concatenate([[0.0], w.arrival_s]))


@pytest.mark.parametrize(("arrival", "cv"), [("poisson", 1.0), ("gamma", 0.5), ("gamma", 3.0)])
def test_renewal_rate_and_cv(arrival, cv):
    gaps = _gaps(_tenant(rate=4.0, arrival=arrival, cv=cv), 100_000)
    assert abs(1 / gaps.mean() / 4.0 - 1) < 0.03
    assert abs(gaps.std() / gaps.mean() / cv - 1) < 0.08


def test_poisson_count_over_duration():
    w = generate([_tenant(rate=5.0)], np.random.default_rng(5), duration_s=4000)
    assert abs(len(w) / 20_000 - 1) < 0.03  # 3% is about 4 standard deviations
    assert w.arrival_s.min() >= 0 and w.arrival_s.max() < 4000


def test_constant_arrivals_are_exact():
    w = generate([_tenant(rate=4.0, arrival="constant")], np.random.default_rng(0), duration_s=10)
    np.testing.assert_allclose(w.arrival_s, np.arange(1, 40) / 4.0)


def test_onoff_is_silent_when_off():
    spec = _tenant(rate=20.0, arrival="onoff", on_s=3.0, off_s=7.0)
    w = generate([spec], np.random.default_rng(6), duration_s=2005)
    phase = w.arrival_s % 10.0
    assert phase.max() < 3.0
    on_seconds = 200 * 3.0 + 3.0  # the last 5 s hold one whole on window
    assert abs(len(w) / (20.0 * on_seconds) - 1) < 0.03


def test_rate_zero_gives_nothing_but_other_tenants_go_on():
    w = generate([_tenant("a", rate=0.0), _tenant("b", rate=2.0)], np.random.default_rng(0), duration_s=100)
    assert len(w) > 100 and np.all(w.tenant == 1)


# ---------------------------------------------------------------------------------------------
# generate()


def _mixed(tmp_path: Path) -> list[TenantSpec]:
    trace = _azure_rows(tmp_path, 400, rate=4.0)
    vidur = _write(tmp_path / "v.csv", _vidur_text([50, 60, 70], [1, 2, 3]), gz=False)
    return [
        _tenant("p", rate=2.0, prompt=LengthDist.from_config({"dist": "lognormal", "mean": 500, "p99": 2000}, "k")),
        _tenant("g", rate=1.0, arrival="gamma", cv=2.0, output=LengthDist("uniform", (1, 100))),
        _tenant("o", rate=3.0, arrival="onoff", on_s=5, off_s=5),
        TenantSpec("s1", trace=str(trace), share=1.0),
        TenantSpec("s2", trace=str(trace), share=2.0),
        TenantSpec("v", trace=str(vidur), rate=1.5, max_new_tokens=64),
    ]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**63))
def test_same_seed_same_workload(tmp_path_factory, seed):
    tenants = _mixed(tmp_path_factory.mktemp("mixed"))
    a = generate(tenants, np.random.default_rng(seed), duration_s=60)
    b = generate(tenants, np.random.default_rng(seed), duration_s=60)
    c = generate(tenants, np.random.default_rng(seed + 1), duration_s=60)
    assert _same(a, b)
    assert not np.array_equal(a.arrival_s, c.arrival_s) or not np.array_equal(a.tenant, c.tenant)


def test_workload_arrays(tmp_path):
    tenants = _mixed(tmp_path)
    w = generate(tenants, np.random.default_rng(0), duration_s=60)
    assert w.arrival_s.dtype == np.float64 and w.tenant.dtype == np.int32
    assert w.prompt_tokens.dtype == w.output_tokens.dtype == w.max_new_tokens.dtype == np.int64
    assert np.all(np.diff(w.arrival_s) >= 0)
    assert w.arrival_s.min() >= 0 and w.arrival_s.max() < 60
    assert set(np.unique(w.tenant).tolist()) == set(range(6))
    assert np.all(w.max_new_tokens[w.tenant == 5] == 64) and np.all(w.max_new_tokens[w.tenant == 0] == 2048)
    assert np.all(w.prompt_tokens >= 1) and np.all(w.output_tokens >= 1)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 1000))
def test_requests_gives_exactly_n(tmp_path_factory, n, seed):
    tenants = _mixed(tmp_path_factory.mktemp("mixed"))
    w = generate(tenants, np.random.default_rng(seed), requests=n)
    assert len(w) == n and np.all(np.diff(w.arrival_s) >= 0)


def test_requests_takes_the_first_arrivals_over_all_tenants():
    tenants = [_tenant("a", rate=1.0, arrival="constant"), _tenant("b", rate=3.0, arrival="constant")]
    w = generate(tenants, np.random.default_rng(0), requests=8)
    # a: 1, 2; b: 1/3, 2/3, 1, 4/3, 5/3, 2 -- ties keep tenant order
    np.testing.assert_allclose(w.arrival_s, [1 / 3, 2 / 3, 1, 1, 4 / 3, 5 / 3, 2, 2])
    assert w.tenant.tolist() == [1, 1, 0, 1, 1, 1, 0, 1]


def test_requests_beyond_a_trace_is_an_error(tmp_path):
    trace = _azure_rows(tmp_path, 50)
    with pytest.raises(ConfigError, match=r"requests: asked for 51 but the tenants give only 50"):
        generate([TenantSpec("t", trace=str(trace))], np.random.default_rng(0), requests=51)


def test_load_scales_rates_and_compresses_traces(tmp_path):
    const = _tenant(rate=2.0, arrival="constant")
    w = generate([const], np.random.default_rng(0), duration_s=10, load=3.0)
    np.testing.assert_allclose(np.diff(w.arrival_s), 1 / 6)
    poisson = [_tenant(rate=2.0)]
    n1 = len(generate(poisson, np.random.default_rng(1), duration_s=3000))
    n3 = len(generate(poisson, np.random.default_rng(1), duration_s=3000, load=3.0))
    assert abs(n3 / n1 / 3 - 1) < 0.05
    path = _azure_rows(tmp_path, 100, rate=10.0)
    trace = read_trace(path)
    w = generate([TenantSpec("t", trace=str(path))], np.random.default_rng(0), duration_s=1e7, load=2.0)
    np.testing.assert_allclose(w.arrival_s, trace.arrival_s / 2.0)
    w = generate([TenantSpec("t", trace=str(path))], np.random.default_rng(0), duration_s=2.5, load=2.0)
    assert len(w) == 50  # rows at 0.0, 0.05, ..., 2.45 s once compressed


def test_trace_rows_replayed_in_order_and_dists_ignored(tmp_path):
    path = _write(tmp_path / "m.jsonl", _mooncake_text([0, 500, 1500], [600, 10, 1100], [5, 0, 7]), gz=False)
    spec = TenantSpec("m", trace=str(path), prompt=LengthDist("fixed", (1,)), output=LengthDist("fixed", (1,)))
    w = generate([spec], np.random.default_rng(0), duration_s=100)
    np.testing.assert_allclose(w.arrival_s, [0.0, 0.5, 1.5])
    assert w.prompt_tokens.tolist() == [600, 10, 1100]
    assert w.output_tokens.tolist() == [5, 1, 7]  # 0 clamped to 1
    assert [p.ids for p in w.prefixes] == [(0, 1), (0,), (0, 1, 2)]
    assert {p.tokens_per_id for p in w.prefixes} == {512}


def test_length_only_trace_keeps_row_pairs(tmp_path):
    prompts = list(range(1, 201))
    path = _write(tmp_path / "v.csv.gz", _vidur_text(prompts, [2 * p for p in prompts]), gz=True)
    w = generate([TenantSpec("v", trace=str(path), rate=10.0)], np.random.default_rng(0), duration_s=200)
    assert abs(len(w) / 2000 - 1) < 0.1
    assert np.all(w.output_tokens == 2 * w.prompt_tokens)
    assert len(np.unique(w.prompt_tokens)) > 150  # rows drawn at random, not a prefix


def test_shared_trace_split_by_share(tmp_path):
    path = _azure_rows(tmp_path, 8000)
    # A second spelling of the same file must land in the same group.
    other = os.path.relpath(path, Path.cwd())
    tenants = [TenantSpec("a", trace=str(path), share=1.0), TenantSpec("b", trace=other, share=3.0)]
    w = generate(tenants, np.random.default_rng(7), duration_s=1e7)
    assert len(w) == 8000
    assert sorted(w.prompt_tokens.tolist()) == list(range(1, 8001))  # every row exactly once
    assert abs((w.tenant == 0).mean() - 0.25) < 0.02
    again = generate(tenants, np.random.default_rng(7), duration_s=1e7)
    assert np.array_equal(w.tenant, again.tenant)
    alone = generate(tenants[:1], np.random.default_rng(7), duration_s=1e7)
    assert len(alone) == 8000 and np.all(alone.tenant == 0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({}, r"exactly one of duration_s or requests"),
        ({"duration_s": 10, "requests": 5}, r"exactly one of duration_s or requests"),
        ({"duration_s": -1}, r"duration_s: must be a number in \(0, 31,536,000\], got -1"),
        ({"requests": 0}, r"requests: must be an integer in \[1, 50,000,000\], got 0"),
        ({"requests": MAX_REQUESTS + 1}, r"requests: must be an integer in \[1, 50,000,000\], got 50000001"),
        ({"duration_s": 10, "load": 0}, r"load: must be a number in \[1e-06, 1,000,000\], got 0"),
    ],
)
def test_generate_argument_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        generate([_tenant()], np.random.default_rng(0), **kwargs)


def test_generate_guards_runaway_rates_and_names():
    with pytest.raises(ConfigError, match=r"above the 50,000,000 limit"):
        generate([_tenant(rate=1e6)], np.random.default_rng(0), duration_s=3600)
    with pytest.raises(ConfigError, match=r"tenants\[1\]\.name: duplicate 't'"):
        generate([_tenant(), _tenant()], np.random.default_rng(0), duration_s=1)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.prompt_tokens: required without a trace"):
        generate([TenantSpec("x", rate=1.0)], np.random.default_rng(0), duration_s=1)


# ---------------------------------------------------------------------------------------------
# tenant config

EXAMPLE = """
[[tenants]]
name = "alice"
weight = 1.0
priority = 0
rate = 2.0
arrival = "poisson"
cv = 1.0
prompt_tokens = { dist = "lognormal", mean = 1000, p99 = 4000 }
output_tokens = { dist = "fixed", value = 256 }
max_new_tokens = 2048
slo = { ttft_ms = 500, tpot_ms = 50 }
[[tenants]]
name = "bob"
trace = "TRACE"
share = 0.5
"""


def test_example_config_parses(tmp_path):
    (tmp_path / "data").mkdir()
    _azure_rows(tmp_path / "data", 30, name="conv.csv.gz")
    tables = tomllib.loads(EXAMPLE.replace("TRACE", "data/conv.csv.gz"))["tenants"]
    alice, bob = (TenantSpec.from_config(t, i, base_dir=tmp_path) for i, t in enumerate(tables))
    assert alice.rate == 2.0 and alice.slo_ttft_ms == 500 and alice.slo_tpot_ms == 50
    assert alice.prompt.kind == "lognormal" and alice.output == LengthDist("fixed", (256,))
    assert bob.trace == str((tmp_path / "data" / "conv.csv.gz").resolve()) and bob.share == 0.5
    w = generate([alice, bob], np.random.default_rng(0), duration_s=10)
    assert (w.tenant == 1).sum() == 30


def test_example_config_with_the_real_trace():
    real = DATA / "azure_llm_2023_conv.csv.gz"
    if not real.exists():
        pytest.skip(f"shared trace data not present at {DATA}")
    tables = tomllib.loads(EXAMPLE.replace("TRACE", "../shared/data/azure_llm_2023_conv.csv.gz"))["tenants"]
    bob = TenantSpec.from_config(tables[1], 1, base_dir=REPO)
    assert Path(bob.trace) == real.resolve()


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("weight", 0, r"tenants\[2\]\.weight: must be a number in \[1e-06, 1,000,000\], got 0 \(tenant 'carol'\)"),
        ("rate", -1, r"tenants\[2\]\.rate: must be a number in \[0, 1,000,000\], got -1 \(tenant 'carol'\)"),
        ("cv", 0.0, r"tenants\[2\]\.cv: must be a number in \[0.001, 100\], got 0"),
        ("on_s", 0, r"tenants\[2\]\.on_s: must be a number in \[0.001, 31,536,000\], got 0"),
        ("max_new_tokens", 0, r"tenants\[2\]\.max_new_tokens: must be an integer in \[1, 2,147,483,647\], got 0"),
        ("max_new_tokens", 1.5, r"tenants\[2\]\.max_new_tokens: must be an integer in \[1, 2,147,483,647\], got 1.5"),
        ("arrival", "burst", r"tenants\[2\]\.arrival: must be one of poisson, gamma, constant, onoff"),
        ("slo", {"ttft_ms": 0}, r"tenants\[2\]\.slo\.ttft_ms: must be a number in \(0, 31,536,000,000\], got 0 \(tenant 'carol'\)"),
        ("slo", {"p99_ms": 3}, r"tenants\[2\]\.slo: unknown key 'p99_ms'; allowed keys: ttft_ms, tpot_ms"),
        ("share", 0, r"tenants\[2\]\.share: must be a number in \[1e-06, 1,000,000\], got 0"),
        ("weight", "heavy", r"tenants\[2\]\.weight: must be a finite number in \[1e-06, 1,000,000\], got 'heavy'"),
        ("prompt_tokens", {"dist": "lognormal", "mean": 10, "p99": 5},
         r"tenants\[2\]\.prompt_tokens\.p99: must be > mean \(10\), got 5 \(tenant 'carol'\)"),
        ("ratee", 1, r"tenants\[2\]: unknown key 'ratee'; allowed keys: name, weight, priority, rate,"),
    ],
)
def test_tenant_config_errors_name_key_and_tenant(key, value, pattern):
    table = {"name": "carol", "rate": 1.0, "prompt_tokens": 10, "output_tokens": 5, key: value}
    with pytest.raises(ConfigError, match=pattern):
        TenantSpec.from_config(table, 2)


def test_tenant_requires_name_rate_and_lengths(tmp_path):
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.name: required, a non-empty string"):
        TenantSpec.from_config({"rate": 1.0}, 0)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.rate: required unless a trace"):
        TenantSpec.from_config({"name": "x", "prompt_tokens": 5, "output_tokens": 5}, 0)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.output_tokens: required without a trace"):
        TenantSpec.from_config({"name": "x", "rate": 1.0, "prompt_tokens": 5}, 0)
    _write(tmp_path / "v.csv", _vidur_text([5], [6]), gz=False)
    with pytest.raises(ConfigError, match=r"tenants\[1\]\.rate: required with a length-only trace \(tenant 'v'\)"):
        TenantSpec.from_config({"name": "v", "trace": "v.csv"}, 1, base_dir=tmp_path)
    with pytest.raises(TraceError, match=r"nope\.csv"):
        TenantSpec.from_config({"name": "v", "trace": "nope.csv"}, 1, base_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# trace files


@pytest.mark.parametrize("gz", [False, True])
def test_read_azure(tmp_path, gz):
    path = _write(tmp_path / "a.csv", _azure_text([0.0, 0.25, 3.5000003], [374, 396, 12], [44, 0, 9]), gz)
    t = read_trace(path)
    assert len(t) == 3 and t.prefixes is None
    np.testing.assert_allclose(t.arrival_s, [0.0, 0.25, 3.5], atol=1e-6)
    assert t.prompt_tokens.tolist() == [374, 396, 12]
    assert t.output_tokens.tolist() == [44, 1, 9]
    assert t.prompt_tokens.dtype == t.output_tokens.dtype == np.int64
    with pytest.raises(ValueError):
        t.prompt_tokens[0] = 5  # cached and shared: read-only


@pytest.mark.parametrize("gz", [False, True])
def test_read_mooncake(tmp_path, gz):
    path = _write(tmp_path / "m.jsonl", _mooncake_text([1000, 1000, 4500], [1, 513, 1024], [3, 4, 5]), gz)
    t = read_trace(path)
    np.testing.assert_allclose(t.arrival_s, [0.0, 0.0, 3.5])
    assert t.prompt_tokens.tolist() == [1, 513, 1024]
    assert [p.ids for p in t.prefixes] == [(0,), (0, 1), (0, 1)]


@pytest.mark.parametrize("gz", [False, True])
def test_read_vidur(tmp_path, gz):
    path = _write(tmp_path / "v.csv", _vidur_text([3772, 2015], [54, 156]), gz)
    t = read_trace(path)
    assert t.arrival_s is None
    assert t.prompt_tokens.tolist() == [3772, 2015] and t.output_tokens.tolist() == [54, 156]


def test_unknown_format_names_file_and_expected_headers(tmp_path):
    path = _write(tmp_path / "odd.csv", "a,b,c\n1,2,3\n", gz=False)
    with pytest.raises(TraceError, match=r"odd\.csv:1: unknown format.*TIMESTAMP,ContextTokens,GeneratedTokens"):
        read_trace(path)


@pytest.mark.parametrize(
    ("name", "text", "line", "what"),
    [
        ("a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,5,6\n"
         "2023-11-16 18:00:01.0,x,6\n", 3, "ContextTokens"),
        ("a2.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,5,6\n"
         "yesterday,5,6\n", 3, "TIMESTAMP"),
        ("a3.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,5\n", 2, "fields"),
        ("v.csv", "num_prefill_tokens,num_decode_tokens\n5,6\n\n7,-1\n", 4, "num_decode_tokens"),
        ("m.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 6}\n{"timestamp": 1, \n', 2, "JSON"),
        ("m2.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 6}\n'
         '{"timestamp": 1, "input_length": 5}\n', 2, "output_length"),
        ("m3.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 6, "hash_ids": ["a"]}\n', 1, "hash_ids"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_row_names_file_and_line(tmp_path, name, text, line, what, gz):
    path = _write(tmp_path / name, text, gz)
    with pytest.raises(TraceError, match=rf"{name.replace('.', '[.]')}:{line}: .*{what}") as info:
        read_trace(path)
    assert info.value.line == line and info.value.path == str(path.resolve())
    assert isinstance(info.value, ConfigError)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(TraceError, match=r"missing\.csv\.gz: cannot read"):
        read_trace(tmp_path / "missing.csv.gz")
    with pytest.raises(TraceError, match=r"empty\.csv: empty file"):
        read_trace(_write(tmp_path / "empty.csv", "", gz=False))
    with pytest.raises(TraceError, match=r"hdr\.csv: no requests"):
        read_trace(_write(tmp_path / "hdr.csv", "num_prefill_tokens,num_decode_tokens\n", gz=False))


def test_parsed_traces_are_cached_until_the_file_changes(tmp_path):
    path = _write(tmp_path / "v.csv", _vidur_text([1, 2], [3, 4]), gz=False)
    first = read_trace(path)
    assert read_trace(str(path)) is first
    _write(path, _vidur_text([1, 2, 5], [3, 4, 6]), gz=False)
    os.utime(path, ns=(first_ns := path.stat().st_mtime_ns + 10**9, first_ns))
    assert len(read_trace(path)) == 3


# ---------------------------------------------------------------------------------------------
# the shared data set (optional)


def _real(name: str):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present (the shared trace data is optional)")
    return read_trace(path)


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("azure_llm_2023_conv.csv.gz", 19_366),
        ("azure_llm_2023_code.csv.gz", 8_819),
        ("mooncake_fast25_conversation.jsonl.gz", 12_031),
        ("vidur_arxiv_summarization_lengths.csv.gz", 28_257),
    ],
)
def test_real_trace_row_counts(name, rows):
    t = _real(name)
    assert len(t) == rows
    assert t.prompt_tokens.min() >= 1 and t.output_tokens.min() >= 1
    assert (t.arrival_s is None) == name.startswith("vidur")


def test_real_azure_conv_stats():
    t = _real("azure_llm_2023_conv.csv.gz")
    assert abs(t.prompt_tokens.mean() - 1155) < 1
    assert abs(len(t) / t.arrival_s.max() - 5.53) < 0.01
    assert np.all(np.diff(t.arrival_s) >= 0)


def test_real_mooncake_hash_ids():
    t = _real("mooncake_fast25_conversation.jsonl.gz")
    blocks = np.array([len(p.ids) for p in t.prefixes])
    assert np.array_equal(blocks, -(-t.prompt_tokens // 512))


# ---------------------------------------------------------------------------------------------
# staged load


def _staged(arrival="poisson", stages=((8.0, 600.0), (20.0, 600.0)), **fields) -> TenantSpec:
    return TenantSpec("s", arrival=arrival, stages=stages, prompt=LengthDist("fixed", (10,)),
                      output=LengthDist("fixed", (5,)), **fields)


def _per_stage(arrival: np.ndarray, ends) -> list[int]:
    return np.diff(np.searchsorted(arrival, [0.0, *ends])).tolist()


def test_poisson_stages_give_about_rate_times_duration_each():
    w = generate([_staged()], np.random.default_rng(0), duration_s=10)
    counts = _per_stage(w.arrival_s, [600, 1200])
    assert len(w) == sum(counts)  # every arrival in a stage: the stages' span, not duration_s = 10
    for count, expected in zip(counts, (4800, 12000)):
        assert abs(count - expected) < 4 * math.sqrt(expected)


def test_gamma_stages_and_load_scale_the_rates():
    w = generate([_staged("gamma", cv=2.0)], np.random.default_rng(1), duration_s=10, load=0.5)
    for count, expected in zip(_per_stage(w.arrival_s, [600, 1200]), (2400, 6000)):
        assert abs(count - expected) < 0.1 * expected


def test_constant_stages_are_exact_and_start_at_each_stage():
    stages = ((2.0, 10.0), (0.0, 5.0), (0.3, 10.0), (1.0, 1.0))
    w = generate([_staged("constant", stages)], np.random.default_rng(0), duration_s=1)
    assert _per_stage(w.arrival_s, [10, 15, 25, 26]) == [20, 0, 3, 1]
    assert w.arrival_s[:2].tolist() == [0.0, 0.5] and w.arrival_s[20] == 15.0


def test_stages_are_deterministic_and_other_tenants_keep_duration_s():
    steady = TenantSpec("b", rate=5.0, prompt=LengthDist("fixed", (10,)), output=LengthDist("fixed", (5,)))
    runs = [generate([_staged(), steady], np.random.default_rng(3), duration_s=100) for _ in range(2)]
    assert all(np.array_equal(getattr(runs[0], f), getattr(runs[1], f))
               for f in ("arrival_s", "tenant", "prompt_tokens", "output_tokens"))
    steady_times = runs[0].arrival_s[runs[0].tenant == 1]
    assert steady_times.max() < 100 < runs[0].arrival_s.max()


def test_stage_windows_share_boundaries_and_sum_rates():
    steady = TenantSpec("t", rate=1.0, prompt=LengthDist("fixed", (1,)), output=LengthDist("fixed", (1,)))
    tenants = [_staged(), steady, dataclasses.replace(_staged(stages=((1.0, 600.0), (2.0, 600.0))), name="u")]
    assert stage_windows(tenants, load=2.0) == ((0.0, 600.0, 18.0), (600.0, 1200.0, 44.0))
    assert stage_windows(tenants[1:2]) == ()


@pytest.mark.parametrize(("table", "message"), [
    ({"stages": []}, r"tenants\[0\]\.stages: must be a list of 1 to 1,000 tables"),
    ({"stages": [{"rate": 1, "duration_s": 1}] * 1001}, r"tenants\[0\]\.stages: must be a list of 1 to 1,000"),
    ({"stages": [5]}, r"tenants\[0\]\.stages\[0\]: must be a table"),
    ({"stages": [{"rate": 1}]}, r"tenants\[0\]\.stages\[0\]\.duration_s: required"),
    ({"stages": [{"duration_s": 1}]}, r"tenants\[0\]\.stages\[0\]\.rate: required"),
    ({"stages": [{"rate": 1, "duration_s": 1, "cv": 2}]}, r"tenants\[0\]\.stages\[0\]: unknown key 'cv'"),
    ({"stages": [{"rate": 1, "duration_s": 1}, {"rate": -1, "duration_s": 1}]},
     r"tenants\[0\]\.stages\[1\]\.rate: must be a number in \[0, 1,000,000\]"),
    ({"stages": [{"rate": 1, "duration_s": 0}]}, r"tenants\[0\]\.stages\[0\]\.duration_s: must be a number in \(0"),
    ({"stages": [{"rate": 1, "duration_s": 3e7}, {"rate": 1, "duration_s": 3e7}]},
     r"tenants\[0\]\.stages: the stages last 6e\+07 s in all; allowed: at most 31,536,000 s"),
    ({"stages": [{"rate": 1, "duration_s": 1}], "rate": 2}, r"tenants\[0\]\.stages: give rate or stages, not both"),
    ({"stages": [{"rate": 1, "duration_s": 1}], "arrival": "onoff"},
     r"tenants\[0\]\.stages: not allowed with arrival = \"onoff\""),
])
def test_bad_stages_are_named(table, message):
    base = {"name": "s", "prompt_tokens": 10, "output_tokens": 5}
    with pytest.raises(ConfigError, match=message):
        TenantSpec.from_config({**base, **table}, 0)


def test_stages_with_a_timestamped_trace_are_refused(tmp_path):
    trace = _write(tmp_path / "t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,10,5\n", False)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.stages: not allowed with a trace that has timestamps"):
        TenantSpec.from_config({"name": "s", "trace": str(trace), "stages": [{"rate": 1, "duration_s": 1}]}, 0)


def test_stages_with_a_length_only_trace_draw_rows(tmp_path):
    trace = _write(tmp_path / "v.csv", "num_prefill_tokens,num_decode_tokens\n10,5\n20,6\n", False)
    spec = TenantSpec.from_config({"name": "s", "trace": str(trace), "arrival": "constant",
                                   "stages": [{"rate": 2, "duration_s": 5}, {"rate": 4, "duration_s": 5}]}, 0)
    w = generate([spec], np.random.default_rng(0), duration_s=1)
    assert len(w) == 30 and set(zip(w.prompt_tokens.tolist(), w.output_tokens.tolist())) <= {(10, 5), (20, 6)}


def test_stages_with_requests_or_different_boundaries_are_refused():
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.stages: not allowed with requests"):
        generate([_staged()], np.random.default_rng(0), requests=10)
    odd = TenantSpec("t", stages=((1.0, 100.0),), prompt=LengthDist("fixed", (1,)), output=LengthDist("fixed", (1,)))
    with pytest.raises(ConfigError, match=r"tenants\[1\]\.stages: the stages' durations must be those of "
                                          r"tenants\[0\]\.stages \(600, 600 s\)"):
        generate([_staged(), odd], np.random.default_rng(0), duration_s=10)


def test_python_stages_are_checked():
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.stages\[0\]\.duration_s: must be a number in \(0"):
        generate([_staged(stages=((1.0, -5.0),))], np.random.default_rng(0), duration_s=10)


def test_staged_arrivals_fall_in_their_own_stage_window():
    stages = tuple((r, d) for r, d in zip((3.0, 7.0, 1.0) * 20, (0.1, 0.7, 1.3) * 20))
    w = generate([_staged("constant", stages)], np.random.default_rng(0), duration_s=1)
    windows = stage_windows(w.tenants)
    counts = [int(np.count_nonzero((w.arrival_s >= a) & (w.arrival_s < b))) for a, b, _ in windows]
    assert counts == [math.ceil(r * d) if r * d > 1e-9 else 0 for r, d in stages]
    assert sum(counts) == len(w)
