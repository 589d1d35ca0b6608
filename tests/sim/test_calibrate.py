"""`fairbatch calibrate`: the fit recovers the coefficients a run was made with, its file is what
`[cluster] calibration` loads, and a calibration of another GPU or model is refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from realrun_helpers import write_run

from benchmarks.main import main
from scheduler.errors import ConfigError
from sim.calibrate import FREE, START, Objective, errors, fit, report, to_toml
from sim.config import CALIBRATED, config_from_dict
from sim.realrun import load_run, replay, replay_config

TENANTS = [{"name": "a", "rate": 1.0, "prompt_tokens": 10, "output_tokens": 10}]
TRUE = {"mfu": 0.45, "mbu": 0.55, "step_overhead_ms": 4.0}
META = {"engine_kwargs": {"max_num_seqs": 16, "max_num_batched_tokens": 1024},
        "kv_cache": {"block_size": 16}, "hardware": {"device_name": "NVIDIA H100 80GB HBM3"}}


def made_run(folder: Path, coefficients=TRUE, n: int = 60) -> Path:
    """A run directory whose 'measurements' are the simulator's own, with `coefficients`."""
    rng = np.random.default_rng(5)
    arrival = np.cumsum(rng.exponential(0.05, n))
    rows = [{"input_toks": int(p), "output_toks": int(o), "queued_ts": float(a), "first_token_ts": 0.0,
             "last_token_ts": 0.0} for a, p, o in zip(arrival, rng.integers(50, 1500, n), rng.integers(2, 200, n))]
    run = load_run(write_run(folder, META, rows))
    records = replay(run, replay_config(run, "h100", "llama-3-8b", coefficients))
    for row, first, finish in zip(rows, records["first_token"], records["finish"]):  # rows are by arrival
        row["first_token_ts"], row["last_token_ts"] = float(first + arrival[0]), float(finish + arrival[0])
    return write_run(folder, META, rows)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fit(made_run(tmp_path_factory.mktemp("run")), model="llama-3-8b")


def test_the_fit_reproduces_a_run_made_with_other_coefficients(fitted, tmp_path):
    # The defaults miss this run by far; the fit's replay matches it, on the requests it never scored too.
    # (mbu and the step overhead trade off along a valley: decode steps read about the same bytes, so
    # the predictions are what is checked, not each coefficient.)
    run = load_run(made_run(tmp_path))
    assert set(fitted.coefficients) == set(CALIBRATED) == set(FREE)
    assert max(abs(e) for e in errors_of(run, START).values()) > 0.2
    assert max(abs(e) for e in (*fitted.in_sample.values(), *fitted.held_out.values())) < 0.02
    assert fitted.coefficients["mfu"] == pytest.approx(TRUE["mfu"], rel=0.15)  # prefill pins compute down
    assert "held-out" in report(fitted)


def errors_of(run, coefficients) -> dict:
    objective = Objective(run, "h100", "llama-3-8b")
    predicted, done = objective.predicted(coefficients)
    return errors(objective.measured, predicted, done)


def test_the_calibration_file_is_what_cluster_calibration_loads(fitted, tmp_path):
    (tmp_path / "cal.toml").write_text(to_toml(fitted))
    table = {"cluster": {"gpu": "h100", "model": "llama-3-8b", "calibration": "cal.toml"}, "tenants": TENANTS}
    cluster = config_from_dict(table, tmp_path).cluster
    assert {name: getattr(cluster, name) for name in CALIBRATED} == pytest.approx(
        {name: tomllib.loads(to_toml(fitted))[name] for name in CALIBRATED})


@pytest.mark.parametrize("cluster,message", [
    ({"gpu": "h200", "model": "llama-3-8b"}, "was fitted for gpu 'h100', not 'h200'"),
    ({"gpu": "h100", "model": "mistral-7b"}, "was fitted for model 'llama-3-8b', not 'mistral-7b'"),
    ({"gpu": "h100", "model": "llama-3-8b", "mbu": 0.5}, "cluster.calibration, cluster.mbu: give one of them"),
])
def test_a_calibration_of_another_gpu_or_model_is_refused(fitted, tmp_path, cluster, message):
    (tmp_path / "cal.toml").write_text(to_toml(fitted))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict({"cluster": {**cluster, "calibration": "cal.toml"}, "tenants": TENANTS}, tmp_path)


def test_the_command_writes_the_file_and_bad_runs_are_one_line(tmp_path, capsys):
    run = made_run(tmp_path / "run", n=20)
    assert main(["calibrate", str(run), "--model", "llama-3-8b", "--out", str(tmp_path / "c.toml")]) == 0
    assert tomllib.loads((tmp_path / "c.toml").read_text())["gpu"] == "h100"
    assert main(["calibrate", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d.toml")]) == 2
    err = capsys.readouterr().err
    assert "nowhere/vllm/meta.json: not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.toml").exists()


def test_num_gpu_blocks_overrides_what_memory_holds():
    config = config_from_dict({"scheduler": {"num_gpu_blocks": 100}, "tenants": TENANTS})
    assert config.cluster.kv_blocks(config.scheduler) == 100 < config.cluster.modelled_kv_blocks(config.scheduler)
    with pytest.raises(ConfigError, match="scheduler.num_gpu_blocks: must be an integer in"):
        config_from_dict({"scheduler": {"num_gpu_blocks": 0}, "tenants": TENANTS})
