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


def tight_config(**top):
    """Two tenants (b in the worse priority class) on 150 KV blocks a worker: steps run out of KV,
    so requests are preempted and heads are blocked."""
    table = {
        "seed": 3, "duration_s": 4,
        "scheduler": {"policy": "vtc", "num_gpu_blocks": 150, "max_num_batched_tokens": 256},
        "tenants": [
            {"name": "a", "rate": 20.0, "prompt_tokens": {"dist": "uniform", "min": 20, "max": 400},
             "output_tokens": {"dist": "uniform", "min": 50, "max": 400}},
            {"name": "b", "priority": 1, "rate": 10.0, "prompt_tokens": 100, "output_tokens": 300},
        ],
    }
    return small_config(**{**table, **top, "scheduler": {**table["scheduler"], **top.get("scheduler", {})}})
