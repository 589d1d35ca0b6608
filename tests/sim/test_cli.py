import json

import pytest

from benchmarks.main import main


def test_simulate_prints_a_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "run.json"
    code = main(["simulate", "--requests", "60", "--policy", "fcfs", "--seed", "2", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fcfs / global on 2x h100 llama-3-8b (seed 2)" in printed
    assert "TTFT" in printed and "enterprise" in printed
    document = json.loads(out.read_text())
    assert set(document) == {"config", "summary", "tenants", "fairness", "workers", "detectors"}
    assert document["summary"]["completed"] == 60
    assert document["config"]["policy"]["policy"] == "fcfs"
    assert len(document["workers"]) == 2


def test_bad_flag_values_exit_2_with_the_key_named(capsys):
    assert main(["simulate", "--gpu", "tpu"]) == 2
    err = capsys.readouterr().err
    assert "fairbatch: error: --gpu: unknown GPU 'tpu'" in err
    assert "Traceback" not in err


def test_costmodel_prints_the_sanity_report(capsys):
    assert main(["costmodel"]) == 0
    printed = capsys.readouterr().out
    assert "weight bytes / HBM bandwidth" in printed
    assert "Decode step vs batch size" in printed


def test_print_config_shows_the_built_in_default(capsys):
    assert main(["simulate", "--print-config"]) == 0
    assert 'name = "enterprise"' in capsys.readouterr().out


def test_bench_is_handed_to_the_benchmark_suite(capsys):
    assert main(["bench", "compare", "--loads", "x"]) == 2
    assert "fairbatch: error: --loads: must be comma-separated numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    assert "bench     benchmark suite: compare, capacity, sweep, report, results" in capsys.readouterr().out
