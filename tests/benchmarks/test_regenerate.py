"""RESULTS.md regeneration: the pipeline on a tiny suite, and the real suite's workloads."""

import csv

import pytest

from bench_helpers import tiny_table
from benchmarks.regenerate import SUITE, _with_data, capacity_summary, regenerate, suite_workloads
from scheduler.errors import ConfigError
from sim.config import config_from_dict

pytest_plugins = ["bench_fixtures"]  # the tiny_scenario and shared_data fixtures

pytest.importorskip("matplotlib", reason="the report draws figures with the optional `plot` extra (matplotlib): pip install -e '.[plot]'")


@pytest.mark.slow
def test_a_tiny_suite_goes_all_the_way_to_the_report(tmp_path):
    suite = {"tiny": (tiny_table(), (1.0, 12.0))}
    output = regenerate(suite=suite, policies=("fcfs", "vtc"), work=tmp_path / "work", output=tmp_path / "R.md",
                        jobs=1, progress=False)
    text = output.read_text()
    assert text.startswith("# fairbatch benchmark results\n\nRegenerate with `fairbatch bench results`")
    summary = text.split("## Goodput capacity")[1].split("## tiny")[0]
    assert "| policy | tiny |" in summary and "| fcfs | " in summary and "| vtc | " in summary
    assert "(x" in summary  # a capacity was found
    rows = list(csv.DictReader((tmp_path / "results" / "results.csv").open()))
    assert len(rows) == 4 and {r["policy"] for r in rows} == {"fcfs", "vtc"}
    assert (tmp_path / "results" / "tiny-cdf.png").is_file() and "](results/tiny-cdf.png)" in text
    assert (tmp_path / "work" / "runs").is_dir()


def test_capacity_summary_is_a_policy_by_workload_matrix():
    results = [{"labels": {"scenario": w, "policy": p}, "capacity": c,
                "at_capacity": {"offered_request_rate": 10 * c} if c else None}
               for w, p, c in (("a", "fcfs", 2.0), ("b", "fcfs", None), ("a", "vtc", 3.0), ("b", "vtc", 1.5))]
    table = capacity_summary(results)
    assert "| policy | a | b |" in table
    assert "| fcfs | 20.0 (x2.00) | - |" in table and "| vtc | 30.0 (x3.00) | 15.0 (x1.50) |" in table


def test_traces_are_read_from_the_data_folder(tmp_path):
    table = _with_data({"tenants": [{"name": "a", "trace": "../x/azure.csv.gz"}, {"name": "b", "rate": 1}]},
                       tmp_path)
    assert table["tenants"] == [{"name": "a", "trace": str(tmp_path / "azure.csv.gz")}, {"name": "b", "rate": 1}]
    with pytest.raises(ConfigError, match="--data: .* is not a directory"):
        suite_workloads(tmp_path / "none")


@pytest.mark.slow
def test_the_real_suite_has_three_valid_workloads_at_three_loads(shared_data):
    workloads = suite_workloads(shared_data)
    assert list(workloads) == list(SUITE) == ["azure-conv", "azure-code", "servegen"]
    for table, loads in workloads.values():
        assert len(loads) == 3 and config_from_dict(table).duration_s > 0
