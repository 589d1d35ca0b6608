"""Scenario tables, dotted-key overrides, cache keys and the run document."""

import numpy as np
import pytest

from benchmarks.points import (
    check_key,
    load_table,
    make_point,
    point_key,
    run_point,
    scenario_path,
    slo_attainment,
    with_overrides,
)
from benchmarks.store import dump_json
from scheduler.errors import ConfigError
from scheduler.outcomes import Outcome
from sim.config import config_from_dict
from sim.results import RECORD_DTYPE, RunData, TenantInfo, Timeline

from bench_helpers import tiny_table

pytest_plugins = ["bench_fixtures"]  # the tiny_scenario and shared_data fixtures

FINISHED, REJECTED, UNFINISHED = Outcome.FINISHED.code, Outcome.REJECTED.code, Outcome.UNFINISHED.code


def test_scenarios_are_found_by_name_or_path_and_unknown_names_list_the_known(tiny_scenario):
    assert scenario_path("azure_code").name == "azure_code.toml"
    assert scenario_path(tiny_scenario) == tiny_scenario
    with pytest.raises(ConfigError, match="unknown scenario 'nope'; allowed: .*azure_code"):
        scenario_path("nope")
    with pytest.raises(ConfigError, match="file not found"):
        scenario_path("missing/dir.toml")


def test_load_table_makes_trace_paths_absolute(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "s.toml").write_text(
        'duration_s = 5\n[[tenants]]\nname = "t"\ntrace = "../data/x.csv"\n'
        '[[tenants]]\nname = "u"\nrate = 1.0\noutput_tokens = 5\n'
        'prompt_tokens = { dist = "empirical", trace = "../data/y.csv", field = "prompt" }\n')
    table = load_table(tmp_path / "cfg" / "s.toml")
    assert table["tenants"][0]["trace"] == str(tmp_path / "data" / "x.csv")
    assert table["tenants"][1]["prompt_tokens"]["trace"] == str(tmp_path / "data" / "y.csv")


@pytest.mark.parametrize("key", ["nope", "cluster.gpus", "scheduler.policy.extra", "cluster", "tenants.a"])
def test_unknown_keys_are_named_with_the_allowed_ones(key):
    with pytest.raises(ConfigError) as err:
        check_key(tiny_table(), key)
    assert str(err.value).startswith(f"{key}: unknown config key; allowed: seed, duration_s")
    assert "cluster.{workers" in str(err.value)


def test_tenant_keys_name_a_tenant_or_all():
    check_key(tiny_table(), "tenants.a.rate")
    check_key(tiny_table(), "tenants.*.slo.ttft_ms")
    with pytest.raises(ConfigError, match="no tenant named 'zz'; tenants: a, b, or"):
        check_key(tiny_table(), "tenants.zz.rate")


def test_overrides_set_nested_keys_and_leave_the_input_alone():
    base = tiny_table()
    out = with_overrides(base, {"cluster.workers": 3, "tenants.*.rate": 0.5, "tenants.b.slo.tpot_ms": 80,
                                "requests": 50})
    assert out["cluster"]["workers"] == 3 and base["cluster"]["workers"] == 1
    assert [t["rate"] for t in out["tenants"]] == [0.5, 0.5]
    assert out["tenants"][1]["slo"] == {"ttft_ms": 1000, "tpot_ms": 80}
    assert "duration_s" not in out and out["requests"] == 50  # requests replaces duration_s


def test_a_new_policy_drops_the_old_policy_params_unless_set():
    base = tiny_table(scheduler={"policy": "vtc", "policy_params": {"w_q": 3.0}})
    assert "policy_params" not in with_overrides(base, {"scheduler.policy": "fcfs"})["scheduler"]
    kept = with_overrides(base, {"scheduler.policy": "priority", "scheduler.policy_params.aging": 0.5})
    assert kept["scheduler"]["policy_params"] == {"aging": 0.5}
    assert with_overrides(base, {"load": 2.0})["scheduler"]["policy_params"] == {"w_q": 3.0}


def test_keys_follow_the_resolved_config_not_its_spelling():
    a = config_from_dict(tiny_table(load=1))
    b = config_from_dict(tiny_table(load=1.0))
    c = config_from_dict(tiny_table(seed=4))
    assert point_key(a) == point_key(b) != point_key(c)
    assert len(point_key(a)) == 16


def test_make_point_names_the_point_of_a_bad_value():
    with pytest.raises(ConfigError,
                       match=r"load: must be a number in \[1e-06, 1,000,000\], got -1.*\(point policy=fcfs, load=-1\)"):
        make_point({"policy": "fcfs", "load": -1}, tiny_table(load=-1))


def test_run_point_is_deterministic_silent_and_has_the_design_keys(capsys):
    table = tiny_table()
    first, second = run_point(table), run_point(table)
    assert dump_json(first) == dump_json(second)
    assert capsys.readouterr() == ("", "")
    assert first["seed"] == 3 and first["config"] == table
    for key in ("request_throughput", "output_throughput", "total_token_throughput", "mean_ttft_ms",
                "median_tpot_ms", "p99_itl_ms", "p90_e2el_ms", "request_goodput"):
        assert key in first["summary"]
    assert first["goodput"]["requests"] == first["summary"]["requests"] > 0
    assert first["key"] == point_key(config_from_dict(table))


def run_data(rows, tenants) -> RunData:
    """rows: (tenant, arrival, first_token, finish, output tokens, outcome)."""
    recs = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for i, (tenant, arrival, first, finish, output, outcome) in enumerate(rows):
        recs[i] = (i, tenant, 0, arrival, arrival, first, finish, 10, output, outcome, -1, 0)
    return RunData(recs, np.zeros(0), np.zeros(0, dtype=np.int64), 10.0, tenants, (),
                   Timeline.empty(len(tenants)))


def test_slo_attainment_counts_every_submitted_request():
    tenants = (TenantInfo("s", slo_ttft_ms=100, slo_tpot_ms=10), TenantInfo("free"))
    nan = float("nan")
    data = run_data([
        (0, 0.0, 0.05, 0.15, 11, FINISHED),   # TTFT 50 ms, TPOT 10 ms: meets both
        (0, 0.0, 0.2, 0.3, 11, FINISHED),     # TTFT 200 ms: misses TTFT only
        (0, 0.0, 0.05, 0.5, 11, FINISHED),    # TPOT 45 ms: misses TPOT only
        (0, 0.0, 0.05, 0.05, 1, FINISHED),    # one token: no TPOT, meets it
        (0, 0.0, 0.05, nan, 3, UNFINISHED),   # first token in time, never finished: misses TPOT
        (0, 0.0, nan, nan, 0, REJECTED),      # misses both
        (1, 0.0, nan, nan, 0, REJECTED),      # a tenant without SLOs meets them overall
        (1, 0.0, 9.0, 9.9, 5, FINISHED),
    ], tenants)
    config = config_from_dict(tiny_table(duration_s=4.0))
    got = slo_attainment(data, config)
    assert got["requests"] == 8 and got["offered_request_rate"] == 2.0
    assert got["ttft_attainment"] == 6 / 8
    assert got["tpot_attainment"] == 5 / 8
    assert got["attainment"] == 4 / 8
    assert got["tenants"] == {
        "s": {"requests": 6, "ttft_attainment": 4 / 6, "tpot_attainment": 3 / 6, "attainment": 2 / 6},
        "free": {"requests": 2, "ttft_attainment": None, "tpot_attainment": None, "attainment": None}}
