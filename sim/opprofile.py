"""Operator profiles in Vidur's CSV format, and the cost model's prediction of each timing.

Vidur profiles a model's operators on a GPU into one folder (`data/profiling/compute/<gpu>/<model>/`
in its repository): `mlp.csv` times the linear layers of one transformer layer by token count
(`num_tokens`), `attention.csv` the attention kernel of one layer for prefill chunks
(`prefill_chunk_size` after `kv_cache_size` tokens) and for decode batches (`batch_size` sequences of
`kv_cache_size` tokens), and `cpu_overheads.csv` the engine's per-step CPU work by batch size. Times
are milliseconds, in `time_stats.<operator>.median` columns.

This module reads them and prices each row with the roofline's own terms, per layer, so that
`sim.calibrate` can fit `mfu` and `mbu` to the rows and take the step overhead from the CPU
overheads. It reads only what it prices; other columns are ignored.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scheduler.errors import ConfigError

from .costmodel import causal_pairs
from .hardware import GPUSpec, ModelSpec

LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")  # the four projections
# Vidur's per-step CPU work (vLLM's scheduler, input preparation, sampling, output processing).
CPU_OPS = ("SCHEDULE_MEDIAN", "PREPARE_INPUTS_E2E_MEDIAN", "SAMPLER_E2E_MEDIAN", "PROCESS_MODEL_OUTPUTS_MEDIAN")
FILES = ("mlp.csv", "attention.csv")


@dataclass(frozen=True, slots=True)
class Profile:
    """A folder's timings, one row per measurement: its kind ("mlp", "attn_prefill",
    "attn_decode"), the cost model's work terms and the measured milliseconds per layer."""

    path: Path
    kind: np.ndarray  # str
    tensor_parallel: np.ndarray
    flops: np.ndarray  # FLOPs per layer at full tensor parallelism (divide by tp GPUs)
    bytes: np.ndarray  # bytes per layer, likewise
    measured_ms: np.ndarray
    cpu_overhead_ms: tuple[float, float] | None  # (at the smallest profiled batch, per extra sequence)

    def predicted_ms(self, gpu: GPUSpec, mfu: float, mbu: float) -> np.ndarray:
        """The roofline's milliseconds for every row: max of the compute and memory times."""
        compute = self.flops / (gpu.peak_flops * mfu * self.tensor_parallel)
        memory = self.bytes / (gpu.hbm_bandwidth * mbu * self.tensor_parallel)
        return np.maximum(compute, memory) * 1e3


def is_profile(path: Path) -> bool:
    """True when `path` is a folder of Vidur operator profiles (mlp.csv or attention.csv)."""
    return path.is_dir() and any((path / name).is_file() for name in FILES)


def load_profile(path: str | Path, model: ModelSpec) -> Profile:
    """Every priced row of `path`'s mlp.csv and attention.csv, checked against `model`'s shape."""
    path = Path(path)
    if model.experts:
        raise ConfigError(f"--model: {model.name} is a mixture of experts; Vidur's operator profiles time "
                          f"dense layers only; allowed: a dense model, or calibrate from a real run")
    rows = [*_mlp_rows(path / "mlp.csv", model), *_attention_rows(path / "attention.csv", model)]
    if not rows:
        raise ConfigError(f"{path}: no timings of {model.name}'s shape in {' or '.join(FILES)} (a time_stats "
                          f"median above 0 in rows whose heads and sizes match the model)")
    kind, tp, flops, nbytes, measured = zip(*rows)
    return Profile(path, np.array(kind), np.array(tp, dtype=np.float64), np.array(flops), np.array(nbytes),
                   np.array(measured), _cpu_overhead(path / "cpu_overheads.csv", model))


def _mlp_rows(path: Path, m: ModelSpec) -> list[tuple]:
    rows = _read(path, ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens",
                        "num_tensor_parallel_workers", *(_median(op) for op in LINEAR_OPS)))
    shape = {"n_head": m.heads, "n_kv_head": m.kv_heads, "n_embd": m.hidden, "n_expanded_embd": m.intermediate}
    out = []
    for row in rows:
        if not _matches(row, shape, path):
            continue
        gated = row.get("use_gated_mlp", "True").strip().lower() != "false"
        params = _attention_params(m) + (3 if gated else 2) * m.hidden * m.intermediate
        tokens = _number(row, "num_tokens", path)
        measured = sum(_number(row, _median(op), path) for op in LINEAR_OPS)
        if measured > 0:
            out.append(("mlp", _number(row, "num_tensor_parallel_workers", path), 2 * params * tokens,
                        params * m.dtype_bytes, measured))
    return out


def _attention_rows(path: Path, m: ModelSpec) -> list[tuple]:
    rows = _read(path, ("n_q_head", "n_kv_head", "n_embd", "batch_size", "prefill_chunk_size", "kv_cache_size",
                        "is_prefill", "num_tensor_parallel_workers"))
    shape = {"n_q_head": m.heads, "n_kv_head": m.kv_heads, "n_embd": m.hidden}
    kv_bytes_per_token = 2 * m.kv_heads * m.head_dim * m.dtype_bytes  # one layer's K and V
    out = []
    for row in rows:
        if not _matches(row, shape, path):
            continue
        tp, batch = _number(row, "num_tensor_parallel_workers", path), _number(row, "batch_size", path)
        context = _number(row, "kv_cache_size", path)
        if row["is_prefill"].strip().lower() == "true":
            pairs = batch * causal_pairs(int(_number(row, "prefill_chunk_size", path)), int(context))
            item = ("attn_prefill", tp, 4 * m.heads * m.head_dim * pairs, 0.0, row.get(_median("attn_prefill")))
        else:
            item = ("attn_decode", tp, 0.0, kv_bytes_per_token * batch * context, row.get(_median("attn_decode")))
        measured = _optional_number(item[4], path)
        if measured > 0:
            out.append((*item[:4], measured))
    return out


def _cpu_overhead(path: Path, m: ModelSpec) -> tuple[float, float] | None:
    """Least squares of the per-step CPU milliseconds on batch size over the single-GPU rows (the
    rows of every model when the file has none of this one): (at the smallest batch, per sequence)."""
    if not path.is_file():
        return None
    rows = [r for r in _read(path, ("batch_size", "tensor_parallel_degree", *CPU_OPS))
            if _number(r, "tensor_parallel_degree", path) == 1]
    own = [r for r in rows if r.get("model_name") == m.name]
    rows = own or rows
    if len(rows) < 2:
        return None
    batch = np.array([_number(r, "batch_size", path) for r in rows])
    total = np.array([sum(_number(r, op, path) for op in CPU_OPS) for r in rows])
    slope, intercept = np.polyfit(batch, total, 1)
    return float(intercept + slope * batch.min()), float(slope)


def _attention_params(m: ModelSpec) -> float:
    # q and o projections over every head, k and v over the KV heads
    return 2 * m.hidden * m.heads * m.head_dim + 2 * m.hidden * m.kv_heads * m.head_dim


def _median(op: str) -> str:
    return f"time_stats.{op}.median"


def _read(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [key for key in required if key not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{path}: missing column {missing[0]!r}; allowed: Vidur's profile columns "
                              f"({', '.join(required)})")
        return list(reader)


def _matches(row: dict[str, str], shape: dict[str, int], path: Path) -> bool:
    return all(_number(row, key, path) == value for key, value in shape.items())


def _number(row: dict[str, str], key: str, path: Path) -> float:
    value = _optional_number(row.get(key), path, key)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{path}: {key} must be a number >= 0, got {row.get(key)!r}")
    return value


def _optional_number(text: str | None, path: Path, key: str = "a time_stats median") -> float:
    # Vidur leaves a timing empty where the row does not measure that operator: 0, not an error
    if text is None or not text.strip():
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{path}: {key} must be a number, got {text!r}") from None
