"""Helpers of the benchmark suite tests: a tiny scenario that simulates in hundredths of a second.
Its fixtures live in bench_fixtures.py, which test modules load with `pytest_plugins`."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def tiny_table(**top) -> dict:
    """Two synthetic tenants on one worker: a run simulates in a few hundredths of a second, and
    the pool saturates between load 8 and 16 (so capacity searches find a bracket quickly)."""
    table = {
        "seed": 3,
        "duration_s": 6.0,
        "cluster": {"workers": 1, "gpu": "h100", "model": "llama-3-8b"},
        "scheduler": {"policy": "vtc", "max_num_batched_tokens": 1024, "max_num_seqs": 32},
        "tenants": [
            {"name": "a", "rate": 4.0, "prompt_tokens": {"dist": "uniform", "min": 100, "max": 600},
             "output_tokens": {"dist": "uniform", "min": 1, "max": 60}, "slo": {"ttft_ms": 300, "tpot_ms": 40}},
            {"name": "b", "weight": 2.0, "priority": 1, "rate": 2.0, "arrival": "gamma", "cv": 2.0,
             "prompt_tokens": 400, "output_tokens": 30, "slo": {"ttft_ms": 1000}},
        ],
    }
    table.update(top)
    return table
