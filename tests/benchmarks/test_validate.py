"""`fairbatch bench validate`: a real run's directory is read, replayed and compared; bad runs are
one-line errors naming the file and key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import realrun_helpers

from benchmarks.cli import main
from benchmarks.regenerate import add_validation
from benchmarks.validate import report, validate
from sim.hardware import get_model
from sim.realrun import gpu_of, latencies, load_run

REAL_RUNS = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_vllm_runs"
META = {"model": "meta-llama/Llama-3.1-8B",
        "engine_kwargs": {"max_num_seqs": 8, "max_num_batched_tokens": 512, "tensor_parallel_size": 1},
        "kv_cache": {"num_gpu_blocks": 100, "block_size": 16}, "hardware": {"device_name": "NVIDIA H100 80GB HBM3"}}
# Three requests, out of arrival order; the server's clock starts at 100 s.
REQUESTS = [
    {"input_toks": 64, "output_toks": 8, "queued_ts": 100.5, "first_token_ts": 100.6, "last_token_ts": 100.8},
    {"input_toks": 32, "output_toks": 4, "queued_ts": 100.0, "first_token_ts": 100.1, "last_token_ts": 100.4},
    {"input_toks": 16, "output_toks": 1, "queued_ts": 101.0, "first_token_ts": 101.2, "last_token_ts": 101.2},
]


def write_run(folder: Path, meta=META, requests=REQUESTS) -> Path:
    return realrun_helpers.write_run(folder, meta, requests)


def test_a_run_is_read_by_arrival_on_its_own_clock(tmp_path):
    run = load_run(write_run(tmp_path))
    assert run.arrival_s.tolist() == [0.0, 0.5, 1.0]
    assert run.prompt_tokens.tolist() == [32, 64, 16] and run.output_tokens.tolist() == [4, 8, 1]
    lat = latencies(run.arrival_s, run.first_token_s, run.last_token_s, run.output_tokens)
    assert np.allclose(lat["ttft"], [0.1, 0.1, 0.2]) and np.allclose(lat["e2e"], [0.4, 0.3, 0.2])
    assert np.allclose(lat["tpot"], [0.1, 0.2 / 7])  # the one-token request has no TPOT
    assert load_run(tmp_path / "vllm").path == tmp_path


def test_a_replayed_run_compares_every_metric_without_nan(tmp_path):
    summary = validate(write_run(tmp_path), model="llama-3-8b").summary()
    assert (summary["gpu"], summary["requests"], summary["compared"], summary["measured_kv_blocks"]) == \
        ("h100", 3, 3, 100)
    assert set(summary["metrics"]) == {"ttft", "tpot", "itl", "e2e"}
    e2e = summary["metrics"]["e2e"]
    assert e2e["error"]["mean"] == pytest.approx(e2e["predicted"]["mean"] / e2e["measured"]["mean"] - 1)
    json.dumps(summary, allow_nan=False)
    assert "e2e      MAPE" in report(summary)


@pytest.mark.parametrize("breakage,message", [
    ("no-meta", "vllm/meta.json: not found"),
    ("no-requests", "vllm/requests.jsonl.gz: not found"),
    ("missing-key", "requests.jsonl.gz:2: first_token_ts: missing or not a number"),
    ("bad-json", "vllm/meta.json: cannot read it as JSON"),
])
def test_a_broken_run_is_one_line_naming_the_file_and_key(tmp_path, capsys, breakage, message):
    folder = write_run(tmp_path)
    if breakage == "no-meta":
        (folder / "vllm" / "meta.json").unlink()
    elif breakage == "no-requests":
        (folder / "vllm" / "requests.jsonl.gz").unlink()
    elif breakage == "missing-key":
        write_run(folder, requests=[dict(REQUESTS[0]), {k: v for k, v in REQUESTS[1].items() if k != "first_token_ts"}])
    else:
        (folder / "vllm" / "meta.json").write_text("{")
    assert main(["validate", str(folder), "--model", "llama-3-8b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fairbatch: error: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("item,message", [
    ("scheduler.policy=\"vtc\"", "expected cluster.KEY=VALUE"),
    ("cluster.workers=3", "cluster.workers is the run's, not the cost model's; allowed: cluster.mfu"),
])
def test_set_takes_only_the_cost_models_coefficients(tmp_path, capsys, item, message):
    assert main(["validate", str(write_run(tmp_path)), "--model", "llama-3-8b", "--set", item]) == 2
    assert message in capsys.readouterr().err


def test_set_changes_the_prediction(tmp_path, capsys):
    folder = str(write_run(tmp_path))
    assert main(["validate", folder, "--model", "llama-3-8b", "--gpu", "h100", "--json", str(tmp_path / "a.json")]) == 0
    assert main(["validate", folder, "--model", "llama-3-8b", "--gpu", "h100", "--set", "cluster.mfu=0.05",
                 "--json", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_text() != (tmp_path / "b.json").read_text()


def test_an_unknown_device_asks_for_the_gpu(tmp_path):
    run = load_run(write_run(tmp_path, meta={**META, "hardware": {}}))
    with pytest.raises(Exception, match="hardware.device_name: missing; .* or name the GPU with --gpu"):
        gpu_of(run)
    assert gpu_of(run, "h200") == "h200"


@pytest.mark.skipif(not REAL_RUNS.is_dir(), reason="the real vLLM runs are in ../shared/data/real_vllm_runs")
def test_both_real_runs_replay_every_request_with_their_engine_settings():
    rtx4090 = validate(REAL_RUNS / "RTX4090" / "Llama-3.1-8B").summary()  # the GPU from meta.json
    assert (rtx4090["gpu"], rtx4090["kv_blocks"], rtx4090["measured_kv_blocks"]) == ("rtx-4090", 2588, 2588)
    pro6000 = validate(REAL_RUNS / "RTXPRO6000" / "Llama-3.1-8B", gpu="rtx-pro-6000").summary()
    assert rtx4090["compared"] == pro6000["compared"] == 300
    assert get_model(rtx4090["model"]).name == "meta-llama/Llama-3.1-8B"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_RUNS.is_dir(), reason="the real vLLM runs are in ../shared/data/real_vllm_runs")
def test_the_results_section_replaces_itself(tmp_path):
    report_file = tmp_path / "RESULTS.md"
    report_file.write_text("# results\n\n## Validation against real vLLM runs\n\nold\n")
    add_validation(report_file, REAL_RUNS.parent, tmp_path / "results")
    text = report_file.read_text()
    assert text.startswith("# results\n\n## Validation against real vLLM runs\n\nTwo runs") and "old" not in text
    assert text.count("### rtx-") == 2 and (tmp_path / "results" / "validation.png").stat().st_size > 0
