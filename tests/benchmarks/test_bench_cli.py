"""`fairbatch bench` (benchmarks/cli.py; named apart from tests/sim/test_cli.py): the commands end to end
on a tiny scenario, and bad input as one clear line."""

import csv
import json
import socket

import pytest

from benchmarks.cli import main

pytest_plugins = ["bench_fixtures"]  # the tiny_scenario and shared_data fixtures


def run(capsys, *argv):
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_prints_tables_writes_results_and_reuses_them(tmp_path, tiny_scenario, capsys):
    argv = ["compare", "--scenario", str(tiny_scenario), "--policies", "fcfs,vtc", "--loads", "1,12",
            "--set", "tenants.a.slo.ttft_ms=200", "--duration", "5", "--jobs", "1", "--out", str(tmp_path),
            "--no-progress"]
    code, out, err = run(capsys, *argv)
    assert code == 0 and err == ""
    assert out.count("| series | completed |") == 2 and "### tiny, load x12" in out
    assert "ran 4, cached 0, failed 0" in out
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["policy"], r["load"]) for r in rows] == [("fcfs", "1.0"), ("vtc", "1.0"), ("fcfs", "12.0"),
                                                        ("vtc", "12.0")]
    doc = json.loads((tmp_path / "runs" / f"{rows[0]['key']}.json").read_text())
    assert doc["config"]["duration_s"] == 5 and doc["config"]["tenants"][0]["slo"]["ttft_ms"] == 200
    assert "ran 0, cached 4, failed 0" in run(capsys, *argv)[1]


def test_capacity_prints_a_capacity_per_policy(tmp_path, tiny_scenario, capsys):
    code, out, _ = run(capsys, "capacity", "--scenario", str(tiny_scenario), "--policies", "fcfs",
                       "--start", "8", "--tolerance", "0.2", "--jobs", "1", "--out", str(tmp_path), "--no-progress")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| fcfs |"))
    assert 4 <= float(row.split("|")[2]) <= 16
    assert json.loads((tmp_path / "points.json").read_text())["capacity"][0]["capacity"] is not None


def test_sweep_records_a_failing_point_and_goes_on(tmp_path, tiny_scenario, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'scenario = "{tiny_scenario}"\n[base]\nrequests = 10\n'
                    '[axes]\n"tenants.*.rate" = [0.0, 4.0]\n"scheduler.policy" = ["fcfs", "vtc"]\n')
    code, out, _ = run(capsys, "sweep", str(grid), "--jobs", "1", "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 1
    assert "failed: scenario=tiny, tenants.*.rate=0.0, policy=fcfs: ConfigError: requests: asked for 10" in out
    assert "ran 2, cached 0, failed 2" in out
    statuses = [r["status"] for r in csv.DictReader((tmp_path / "o" / "results.csv").open())]
    assert statuses == ["failed", "failed", "ok", "ok"]


def test_report_renders_saved_results(tmp_path, tiny_scenario, capsys):
    pytest.importorskip("matplotlib", reason="figures need the optional `plot` extra: pip install -e '.[plot]'")
    run(capsys, "compare", "--scenario", str(tiny_scenario), "--policies", "fcfs", "--loads", "2",
        "--jobs", "1", "--out", str(tmp_path), "--no-progress")
    code, out, _ = run(capsys, "report", str(tmp_path), "--title", "Tiny")
    assert code == 0 and out.strip() == str(tmp_path / "report.md")
    assert (tmp_path / "report.md").read_text().startswith("# Tiny\n") and (tmp_path / "figures").is_dir()


@pytest.mark.parametrize("argv, message", [
    (["compare", "--policies", "fifo"], "scheduler.policy: unknown policy 'fifo'"),
    (["compare", "--loads", "1,x"], "--loads: must be comma-separated numbers > 0, got '1,x'"),
    (["compare", "--loads", "0"], "--loads: must be comma-separated numbers > 0"),
    (["compare", "--set", "cluster.workers"], "--set: expected KEY=VALUE, got 'cluster.workers'"),
    (["compare", "--set", "cluster.gpus=2"], "cluster.gpus: unknown config key; allowed:"),
    (["compare", "--scenario", "nowhere"], "scenario: unknown scenario 'nowhere'; allowed:"),
    (["compare", "--jobs", "0"], "--jobs: must be an integer >= 1, got 0"),
    (["compare", "--executor", "dask"], "--executor: unknown executor 'dask'"),
    (["capacity", "--tolerance", "2"], "--tolerance: must be in (0, 1), got 2.0"),
    (["report", "/nonexistent"], "no points.json here"),
])
def test_bad_input_is_one_line_naming_the_field(tmp_path, tiny_scenario, capsys, argv, message):
    if argv[0] in ("compare", "capacity") and "--scenario" not in argv:
        argv = [*argv, "--scenario", str(tiny_scenario)]
    code, out, err = run(capsys, *argv, *(["--out", str(tmp_path)] if argv[0] != "report" else []))
    assert code == 2 and out == ""
    assert err.startswith("fairbatch: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_sweep_errors_come_before_any_work(tmp_path, tiny_scenario, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'scenario = "{tiny_scenario}"\n[axes]\n"cluster.gpuz" = ["h100"]\n')
    code, _, err = run(capsys, "sweep", str(grid), "--out", str(tmp_path / "o"))
    assert code == 2 and "axes.cluster.gpuz: unknown config key" in err
    grid.write_text(f'scenario = "{tiny_scenario}"\n[axes]\n')
    assert "axes: the grid is empty" in run(capsys, "sweep", str(grid))[2]
    assert not (tmp_path / "o").exists()


def test_an_unreachable_ray_cluster_is_named_before_any_work(tmp_path, tiny_scenario, capsys, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    code, _, err = run(capsys, "compare", "--scenario", str(tiny_scenario), "--executor", "ray",
                       "--out", str(tmp_path))
    assert code == 2 and "--executor ray: " in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
