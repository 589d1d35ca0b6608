"""Small simulator configs shared by the sim tests (a module, not conftest: test folders share
the name conftest, so importing it by name is ambiguous)."""

from sim.config import config_from_dict


def small_config(**top):
    """A small two-tenant config that simulates in well under a second."""
    table = {
        "seed": 1,
        "duration_s": 20,
        "cluster": {"workers": 2, "gpu": "h100", "model": "llama-3-8b"},
        "scheduler": {"policy": "vtc", "max_num_batched_tokens": 1024, "max_num_seqs": 64},
        "tenants": [
            {"name": "a", "rate": 6.0, "prompt_tokens": {"dist": "lognormal", "mean": 400, "p99": 2000},
             "output_tokens": {"dist": "uniform", "min": 1, "max": 120}, "slo": {"ttft_ms": 500}},
            {"name": "b", "weight": 2.0, "rate": 3.0, "arrival": "gamma", "cv": 2.0,
             "prompt_tokens": 300, "output_tokens": 50, "max_new_tokens": 40},
        ],
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            table[key] = {**table[key], **value}
        else:
            table[key] = value
    return config_from_dict(table)
