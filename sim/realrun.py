"""Real vLLM runs: reading a run's directory and replaying it in the simulator.

A run directory has the layout of `real_vllm_runs/<GPU>/<MODEL>` in the shared data: `config.json`
(the model's Hugging Face config), `vllm/meta.json` (engine arguments, KV cache, hardware) and
`vllm/requests.jsonl.gz` (per request: `input_toks`, `output_toks`, and `queued_ts`,
`first_token_ts`, `last_token_ts` on the server's monotonic clock). A replay runs the same
arrivals (each `queued_ts` after the first), lengths and engine limits (`max_num_seqs`,
`max_num_batched_tokens`, `block_size`, `max_model_len`, `gpu_memory_utilization`, and the KV
blocks vLLM allocated where meta.json records them) with one tenant under FCFS, vLLM's default.
`latencies` gives both sides' per-request TTFT, TPOT and E2E the same way. `benchmarks.validate`
compares them; `sim.calibrate` fits the cost model to them.

Where the workload the run replayed lies beside it (meta.json's `dataset_path`, plain or gzipped,
in the run's folder or one above it, as the shared data keeps the ShareGPT workload with its
`input_tok_ids`), the requests carry their prompts' token ids, `Prefix(ids, 1)`, so the replay
shares KV blocks where vLLM's prefix cache could.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.errors import ConfigError
from scheduler.prefix import Prefix

from .cluster import Simulation
from .config import SimConfig, config_from_dict
from .workload import Workload

# vLLM's device names as torch reports them (meta.json hardware.device_name) -> fairbatch GPUs.
DEVICES = {"NVIDIA GeForce RTX 4090": "rtx-4090", "NVIDIA RTX PRO 6000 Blackwell Server Edition": "rtx-pro-6000",
           "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "rtx-pro-6000", "NVIDIA H100 80GB HBM3": "h100",
           "NVIDIA A100-SXM4-80GB": "a100-80gb", "NVIDIA H200": "h200", "NVIDIA L40S": "l40s"}
REQUEST_KEYS = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")


@dataclass(frozen=True, slots=True)
class RealRun:
    """A real run's settings and its per-request measurements (seconds, by arrival)."""

    path: Path
    meta: Mapping[str, Any]
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    first_token_s: np.ndarray
    last_token_s: np.ndarray
    prefixes: tuple[Prefix, ...] | None = None  # by arrival; None where the run's workload is not found

    def engine(self, key: str, default: Any = None) -> Any:
        return (self.meta.get("engine_kwargs") or {}).get(key, default)

    def kv_cache(self, key: str, default: Any = None) -> Any:
        return (self.meta.get("kv_cache") or {}).get(key, default)


# ----- reading a run ----------------------------------------------------------------------------


def load_run(path: str | Path) -> RealRun:
    """The run in `path` (the folder holding config.json and vllm/, or vllm/ itself)."""
    path = Path(path)
    vllm = path if (path / "meta.json").exists() else path / "vllm"
    meta = _read_json(vllm / "meta.json")
    rows = _read_requests(vllm / "requests.jsonl.gz")
    columns = {key: np.array([row[key] for row in rows], dtype=float) for key in REQUEST_KEYS}
    order = np.argsort(columns["queued_ts"], kind="stable")
    start = columns["queued_ts"][order[0]]
    prefixes = _prompt_prefixes(vllm, meta, rows)
    return RealRun(vllm.parent if vllm.name == "vllm" else vllm, meta, columns["queued_ts"][order] - start,
                   columns["input_toks"][order].astype(np.int64), columns["output_toks"][order].astype(np.int64),
                   columns["first_token_ts"][order] - start, columns["last_token_ts"][order] - start,
                   None if prefixes is None else tuple(prefixes[i] for i in order))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; allowed: a run directory with vllm/meta.json and "
                          "vllm/requests.jsonl.gz") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it as JSON: {err}") from None


def _read_requests(path: Path) -> list[dict]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; allowed: a run directory with vllm/meta.json and "
                          "vllm/requests.jsonl.gz") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it as gzipped JSON lines: {err}") from None
    if not rows:
        raise ConfigError(f"{path}: holds no requests")
    for i, row in enumerate(rows, 1):
        missing = [key for key in REQUEST_KEYS if not isinstance(row.get(key), (int, float))]
        if missing:
            raise ConfigError(f"{path}:{i}: {', '.join(missing)}: missing or not a number; allowed: a number")
    return rows


def _prompt_prefixes(vllm: Path, meta: Mapping, rows: list[dict]) -> list[Prefix] | None:
    """Each request's prompt token ids from the workload the run replayed, matched by request id
    ("<prefix>-<row>", the row of the workload file); None without a workload file beside the run."""
    path = _dataset(vllm, meta)
    if path is None:
        return None
    data = _read_dataset(path, meta)
    prefixes = []
    for i, row in enumerate(rows, 1):
        where = f"{vllm / 'requests.jsonl.gz'}:{i}"
        k = _dataset_row(row.get("request_id"), len(data), where, path)
        ids = data[k].get("input_tok_ids")
        if not isinstance(ids, list) or not all(type(t) is int for t in ids):
            raise ConfigError(f"{path}:{k + 1}: input_tok_ids: missing or not a list of integers; allowed: the "
                              "prompt's token ids")
        prefix = Prefix(tuple(ids), 1)
        try:
            prefix.check(int(row["input_toks"]), f"{path}:{k + 1}: input_tok_ids")
        except ConfigError as err:
            raise ConfigError(f"{err.args[0]} (input_toks of {where})") from None
        prefixes.append(prefix)
    return prefixes


def _dataset(vllm: Path, meta: Mapping) -> Path | None:
    """The workload file meta.json names, looked up by name beside the run (the folders from vllm/
    up to three levels above it), plain or gzipped."""
    name = meta.get("dataset_path")
    if not isinstance(name, str) or not name:
        return None
    base = Path(name).name
    for folder in [vllm, *vllm.parents[:3]]:
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_dataset(path: Path, meta: Mapping) -> list[dict]:
    """The workload's rows; a file whose content differs from meta.json's dataset_hash is refused."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        text = data.decode("utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it as JSON lines: {err}") from None
    expected = meta.get("dataset_hash")
    if isinstance(expected, str) and hashlib.sha256(data).hexdigest() != expected:
        raise ConfigError(f"{path}: its sha256 differs from meta.json's dataset_hash {expected[:16]}...; allowed: "
                          "the workload file the run replayed")
    return rows


def _dataset_row(request_id, n: int, where: str, path: Path) -> int:
    """The workload row of a request id "<prefix>-<row>"."""
    tail = request_id.rpartition("-")[2] if isinstance(request_id, str) else ""
    if not tail.isdigit() or int(tail) >= n:
        raise ConfigError(f"{where}: request_id: {request_id!r} names no row of {path} ({n:,} rows); allowed: "
                          f"\"<name>-<row>\" with row in [0, {n - 1:,}]")
    return int(tail)


# ----- replaying it -----------------------------------------------------------------------------


def gpu_of(run: RealRun, gpu: str | None = None) -> str:
    """The fairbatch GPU: `gpu` if given, else the one meta.json's hardware.device_name names."""
    if gpu is not None:
        return gpu
    device = (run.meta.get("hardware") or {}).get("device_name")
    if device in DEVICES:
        return DEVICES[device]
    raise ConfigError(f"{run.path / 'vllm' / 'meta.json'}: hardware.device_name: "
                      f"{'missing' if device is None else repr(device) + ' is not a known device'}; "
                      f"allowed: {', '.join(sorted(DEVICES))}, or name the GPU with --gpu")


def replay_config(run: RealRun, gpu: str, model: str, cluster: Mapping[str, Any] | None = None) -> SimConfig:
    """The simulator's config for a run: its engine limits on one worker of `gpu` serving `model`."""
    table = {"seed": 0, "requests": len(run.arrival_s),
             "cluster": {"workers": 1, "gpu": gpu, "model": model,
                         "tensor_parallel": int(run.engine("tensor_parallel_size", 1)), **(cluster or {})},
             "scheduler": _engine_limits(run),
             "tenants": [{"name": "run", "rate": 1.0, "prompt_tokens": 1, "output_tokens": 1}]}
    return config_from_dict(table)


def _engine_limits(run: RealRun) -> dict[str, Any]:
    """The run's engine limits as [scheduler] keys (vLLM's names), and the KV blocks it allocated."""
    limits = {"policy": "fcfs", "max_num_seqs": int(run.engine("max_num_seqs", 256)),
              "max_num_batched_tokens": int(run.engine("max_num_batched_tokens", 2048)),
              "block_size": int(run.kv_cache("block_size", 16))}
    optional = {"max_model_len": run.engine("max_model_len"), "num_gpu_blocks": run.kv_cache("num_gpu_blocks")}
    limits |= {key: int(value) for key, value in optional.items() if value}
    if run.kv_cache("gpu_memory_utilization"):
        limits["gpu_memory_utilization"] = float(run.kv_cache("gpu_memory_utilization"))
    return limits


def replay(run: RealRun, config: SimConfig) -> np.ndarray:
    """The simulated per-request records of the run's requests, in the run's order."""
    n = len(run.arrival_s)
    workload = Workload(config.tenants, run.arrival_s.copy(), np.zeros(n, dtype=np.int32), run.prompt_tokens.copy(),
                        run.output_tokens.copy(), run.output_tokens.copy(), run.prefixes)
    records = Simulation(config, workload).run().records
    return records[np.argsort(records["id"], kind="stable")]


def latencies(arrival, first, last, output, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Per-request TTFT, TPOT and E2E in seconds, and each TPOT's weight in tokens (for the ITL
    mean). A single-token request has no TPOT: it is left out, or NaN with `keep_all`, which
    keeps every array aligned with the requests."""
    multi = output > 1
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(multi, (last - first) / (output - 1), np.nan)
    if not keep_all:
        tpot = tpot[multi]
    return {"ttft": first - arrival, "tpot": tpot, "e2e": last - arrival, "tpot_weight": output[multi] - 1}
