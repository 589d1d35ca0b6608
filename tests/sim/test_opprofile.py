"""Vidur operator profiles: `fairbatch calibrate PROFILE_DIR` recovers the efficiencies a profile
was timed at, its file loads, and a profile of another shape, a missing column or a missing flag
is a named error."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from benchmarks.main import main
from scheduler.errors import ConfigError
from sim.calibrate import fit, report, to_toml
from sim.config import config_from_dict
from sim.hardware import get_model
from sim.opprofile import is_profile, load_profile

MODEL, GPU = "meta-llama/Llama-2-7b-hf", "h100"
PEAK, BANDWIDTH = 989e12, 3.35e12  # the catalogue's H100 SXM: dense bf16 FLOP/s, HBM bytes/s
TRUE = {"mfu": 0.5, "mbu": 0.7}
# Llama-2-7b: hidden 4,096, 32 heads of 128 (no GQA), intermediate 11,008. One layer's linear
# parameters: q, k, v, o (4 x 4,096^2) and the gated MLP (3 x 4,096 x 11,008).
LAYER_PARAMS = 4 * 4096 * 4096 + 3 * 4096 * 11008
KV_BYTES_PER_TOKEN = 2 * 32 * 128 * 2  # one layer's K and V in bf16
MLP_HEAD = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp", "num_tokens",
            "num_tensor_parallel_workers"]
ATTENTION_HEAD = ["n_embd", "n_q_head", "n_kv_head", "block_size", "num_tensor_parallel_workers", "max_model_len",
                  "batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill", "attention_backend",
                  "time_stats.attn_prefill.median", "time_stats.attn_decode.median"]
# The first rows of Vidur's data/profiling/a100/cpu_overheads.csv for Llama-2-7b on one GPU
# (github.com/microsoft/vidur, MIT): the four per-step medians, in ms, at batch 8, 16, 24 and 32.
CPU_ROWS = [(8, 0.16513349025318164, 0.2931705055545493, 0.8878073216415597, 0.6243771681952621),
            (16, 0.2783152190057239, 0.43911199948509766, 0.9445935791220815, 1.1354164981388284),
            (24, 0.3817456151999994, 0.5363326430678552, 0.9559969894942758, 1.633948803053777),
            (32, 0.5798413880809572, 0.6709902766162451, 1.1263693997825983, 2.2456606850184615)]


def roofline_ms(flops: float, nbytes: float, tp: int, mfu: float, mbu: float) -> float:
    return max(flops / (PEAK * mfu * tp), nbytes / (BANDWIDTH * mbu * tp)) * 1e3


def write_profile(folder: Path, noise: float = 0.03, cpu: bool = True, seed: int = 3) -> Path:
    """mlp.csv and attention.csv timed at TRUE, each timing off by lognormal noise."""
    rng = np.random.default_rng(seed)
    jitter = lambda: float(np.exp(rng.normal(0, noise)))  # noqa: E731
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "mlp.csv").open("w", newline="") as f:
        w = csv.writer(f)
        ops = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
        w.writerow(MLP_HEAD + [f"time_stats.{op}.median" for op in ops] + ["time_stats.add.median"])
        for tp in (1, 2):
            for tokens in (1, 2, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096):
                total = roofline_ms(2 * LAYER_PARAMS * tokens, LAYER_PARAMS * 2, tp, **TRUE) * jitter()
                w.writerow([32, 32, 4096, 11008, 32768, True, tokens, tp,
                            *(total * share for share in (0.3, 0.1, 0.4, 0.2)), 0.01])
    with (folder / "attention.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ATTENTION_HEAD)
        for tp in (1, 2):
            for chunk in (128, 512, 1024, 2048):
                for context in (0, 1024, 4096):
                    pairs = chunk * context + chunk * (chunk + 1) / 2
                    ms = roofline_ms(4 * 32 * 128 * pairs, 0, tp, **TRUE) * jitter()
                    w.writerow([4096, 32, 32, 16, tp, 4096, 1, chunk, context, True, "FLASHINFER", ms, ""])
            for batch in (1, 8, 32, 128):
                for context in (256, 1024, 4096):
                    ms = roofline_ms(0, KV_BYTES_PER_TOKEN * batch * context, tp, **TRUE) * jitter()
                    w.writerow([4096, 32, 32, 16, tp, 4096, batch, 0, context, False, "FLASHINFER", "", ms])
    if cpu:
        with (folder / "cpu_overheads.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["SCHEDULE_MEDIAN", "PREPARE_INPUTS_E2E_MEDIAN", "SAMPLER_E2E_MEDIAN",
                        "PROCESS_MODEL_OUTPUTS_MEDIAN", "model_name", "batch_size", "tensor_parallel_degree"])
            for batch, *medians in CPU_ROWS:
                w.writerow([*medians, MODEL, batch, 1])
            w.writerow([9.0, 9.0, 9.0, 9.0, MODEL, 64, 2])  # another degree: not a single GPU's overhead
    return folder


def test_the_fit_recovers_the_efficiencies_a_profile_was_timed_at(tmp_path):
    result = fit(write_profile(tmp_path / "p"), GPU, MODEL)
    assert result.coefficients["mfu"] == pytest.approx(TRUE["mfu"], rel=0.03)
    assert result.coefficients["mbu"] == pytest.approx(TRUE["mbu"], rel=0.03)
    assert set(result.held_out) == {f"{s}_{k}" for s in ("mean", "mape") for k in ("mlp", "attn_prefill", "attn_decode")}
    assert max(abs(v) for k, v in result.held_out.items() if k.startswith("mean")) < 0.06  # 2 sigma of the noise
    assert max(v for k, v in result.held_out.items() if k.startswith("mape")) < 0.06  # the 3% noise
    assert result.basis == f"{22 + 24 + 24} operator timings"


def test_the_step_overhead_is_the_cpu_overheads_at_the_smallest_batch(tmp_path):
    result = fit(write_profile(tmp_path / "p"), GPU, MODEL)
    batch = np.array([row[0] for row in CPU_ROWS])
    total = np.array([sum(row[1:]) for row in CPU_ROWS])
    slope, intercept = np.polyfit(batch, total, 1)
    assert result.coefficients["step_overhead_ms"] == pytest.approx(intercept + 8 * slope, rel=1e-5)
    assert 1.5 < result.coefficients["step_overhead_ms"] < 2.5  # about 2 ms at batch 8, as measured
    assert any(f"{slope:.3f} ms per sequence" in note for note in result.notes)
    without = fit(write_profile(tmp_path / "q", cpu=False), GPU, MODEL)
    assert without.coefficients["step_overhead_ms"] == 1.0 and "the default" in without.notes[0]


def test_the_file_loads_as_the_clusters_calibration(tmp_path):
    result = fit(write_profile(tmp_path / "p"), GPU, MODEL)
    (tmp_path / "cal.toml").write_text(to_toml(result))
    tenants = [{"name": "a", "rate": 1.0, "prompt_tokens": 10, "output_tokens": 10}]
    cluster = config_from_dict({"cluster": {"gpu": GPU, "model": MODEL, "calibration": "cal.toml"},
                                "tenants": tenants}, base_dir=tmp_path).cluster
    assert cluster.mfu == pytest.approx(result.coefficients["mfu"], rel=1e-5)
    assert "operator timings" in report(result) and "held-out" in report(result)


def test_the_command_line_writes_the_file(tmp_path, capsys):
    out = tmp_path / "cal.toml"
    assert main(["calibrate", str(write_profile(tmp_path / "p")), "--gpu", GPU, "--model", MODEL,
                 "--out", str(out)]) == 0
    assert "mean_attn_decode" in capsys.readouterr().out and 'gpu = "h100"' in out.read_text()


@pytest.mark.parametrize("missing", ["--gpu", "--model"])
def test_profiles_need_the_gpu_and_the_model(tmp_path, missing, capsys):
    args = {"--gpu": GPU, "--model": MODEL}
    del args[missing]
    argv = ["calibrate", str(write_profile(tmp_path / "p"))] + [x for kv in args.items() for x in kv]
    assert main(argv + ["--out", str(tmp_path / "c.toml")]) == 2
    assert f"{missing}: operator profiles do not say" in capsys.readouterr().err


def test_a_profile_of_another_shape_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no timings of mistralai/Mistral-7B-v0.1's shape"):
        fit(write_profile(tmp_path / "p"), GPU, "mistralai/Mistral-7B-v0.1")


def test_a_mixture_of_experts_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="mixture of experts"):
        fit(write_profile(tmp_path / "p"), GPU, "mistralai/Mixtral-8x7B-v0.1")


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    folder = write_profile(tmp_path / "p")
    text = (folder / "mlp.csv").read_text().replace("num_tokens", "tokens", 1)
    (folder / "mlp.csv").write_text(text)
    with pytest.raises(ConfigError, match=r"mlp\.csv: missing column 'num_tokens'"):
        load_profile(folder, get_model(MODEL))


def test_a_bad_number_names_the_column(tmp_path):
    folder = write_profile(tmp_path / "p")
    lines = (folder / "attention.csv").read_text().splitlines()
    lines[1] = lines[1].replace(",1,128,", ",one,128,", 1)
    (folder / "attention.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="batch_size must be a number, got 'one'"):
        fit(folder, GPU, MODEL)


def test_a_run_folder_is_not_a_profile(tmp_path):
    assert not is_profile(tmp_path) and is_profile(write_profile(tmp_path / "p"))
