"""`fairbatch bench validate RUN_DIR`: replay a real vLLM run in the simulator and compare latencies.

A run directory has the layout of `real_vllm_runs/<GPU>/<MODEL>` in the shared data: `config.json`
(the model's Hugging Face config), `vllm/meta.json` (engine arguments, KV cache, hardware) and
`vllm/requests.jsonl.gz` (per request: `input_toks`, `output_toks`, and `queued_ts`,
`first_token_ts`, `last_token_ts` on the server's monotonic clock). The simulator replays the
same arrivals (each `queued_ts` after the first), lengths and engine limits (`max_num_seqs`,
`max_num_batched_tokens`, `block_size`, the measured number of KV blocks) with one tenant under
FCFS, vLLM's default, and both sides' TTFT, TPOT and E2E are summarised the same way: TTFT =
first token - arrival, TPOT = (last token - first token) / (output tokens - 1), E2E = last token -
arrival. The runs record no time between the first and last token, so a measured ITL has no
distribution of its own: its mean is TPOT's mean weighted by tokens, and that is what is compared.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.errors import ConfigError
from sim.cli import check_output
from sim.cluster import Simulation
from sim.config import SimConfig, config_from_dict
from sim.results import FINISHED
from sim.workload import Workload

# vLLM's device names as torch reports them (meta.json hardware.device_name) -> fairbatch GPUs.
DEVICES = {"NVIDIA GeForce RTX 4090": "rtx-4090", "NVIDIA RTX PRO 6000 Blackwell Server Edition": "rtx-pro-6000",
           "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "rtx-pro-6000", "NVIDIA H100 80GB HBM3": "h100",
           "NVIDIA A100-SXM4-80GB": "a100-80gb", "NVIDIA H200": "h200", "NVIDIA L40S": "l40s"}
STATS = ("mean", "median", "p90", "p99")
METRICS = ("ttft", "tpot", "itl", "e2e")
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
    return RealRun(vllm.parent if vllm.name == "vllm" else vllm, meta, columns["queued_ts"][order] - start,
                   columns["input_toks"][order].astype(np.int64), columns["output_toks"][order].astype(np.int64),
                   columns["first_token_ts"][order] - start, columns["last_token_ts"][order] - start)


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
    scheduler = {"policy": "fcfs", "max_seqs": int(run.engine("max_num_seqs", 256)),
                 "max_batched_tokens": int(run.engine("max_num_batched_tokens", 2048)),
                 "block_size": int(run.kv_cache("block_size", 16))}
    table = {"seed": 0, "requests": len(run.arrival_s),
             "cluster": {"workers": 1, "gpu": gpu, "model": model,
                         "tensor_parallel": int(run.engine("tensor_parallel_size", 1)), **(cluster or {})},
             "scheduler": scheduler,
             "tenants": [{"name": "run", "rate": 1.0, "prompt_tokens": 1, "output_tokens": 1}]}
    return config_from_dict(table)


def replay(run: RealRun, config: SimConfig) -> np.ndarray:
    """The simulated per-request records of the run's requests, in the run's order."""
    n = len(run.arrival_s)
    workload = Workload(config.tenants, run.arrival_s.copy(), np.zeros(n, dtype=np.int32), run.prompt_tokens.copy(),
                        run.output_tokens.copy(), run.output_tokens.copy())
    records = Simulation(config, workload).run().records
    return records[np.argsort(records["id"], kind="stable")]


# ----- comparing --------------------------------------------------------------------------------


def latencies(arrival, first, last, output) -> dict[str, np.ndarray]:
    """Per-request TTFT, TPOT (requests of 2+ tokens) and E2E in seconds, and ITL weights."""
    multi = output > 1
    tpot = (last - first)[multi] / (output[multi] - 1)
    return {"ttft": first - arrival, "tpot": tpot, "e2e": last - arrival, "tpot_weight": output[multi] - 1}


def stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)), "p99": float(np.percentile(values, 99))}


@dataclass(frozen=True, slots=True)
class Validation:
    """A replayed run: what was measured and what the simulator predicted, per request (seconds),
    over the requests both finished."""

    run: RealRun
    config: SimConfig
    measured: Mapping[str, np.ndarray]
    predicted: Mapping[str, np.ndarray]
    requests: int
    preemptions: int

    def summary(self) -> dict[str, Any]:
        """Each metric's statistics, measured and predicted, their errors and the per-request MAPE."""
        metrics = {}
        for metric in ("ttft", "tpot", "e2e"):
            m, p = stats(self.measured[metric]), stats(self.predicted[metric])
            metrics[metric] = {"measured": m, "predicted": p, "error": {s: p[s] / m[s] - 1 for s in STATS},
                               "mape": float(np.mean(np.abs(self.predicted[metric] / self.measured[metric] - 1)))}
        m, p = _token_mean(self.measured), _token_mean(self.predicted)
        metrics["itl"] = {"measured": {"mean": m}, "predicted": {"mean": p}, "error": {"mean": p / m - 1}}
        cluster = self.config.cluster
        return {"run": str(self.run.path), "gpu": cluster.gpu, "model": cluster.model,
                "kv_blocks": cluster.cost_model().kv_blocks(self.config.scheduler.block_size),
                "measured_kv_blocks": self.run.kv_cache("num_gpu_blocks"), "requests": self.requests,
                "compared": int(len(self.measured["ttft"])), "preemptions": self.preemptions, "metrics": metrics}


def _token_mean(lat: Mapping[str, np.ndarray]) -> float:
    return float(np.average(lat["tpot"], weights=lat["tpot_weight"]))


def validate(path: str | Path, gpu: str | None = None, model: str | None = None,
             cluster: Mapping[str, Any] | None = None) -> Validation:
    """Replay the run in `path`; `cluster` overrides [cluster] keys (mfu, mbu, ...)."""
    run = load_run(path)
    config = replay_config(run, gpu_of(run, gpu), model or str(run.path / "config.json"), cluster)
    records = replay(run, config)
    done = records["outcome"] == FINISHED
    measured = latencies(run.arrival_s[done], run.first_token_s[done], run.last_token_s[done], run.output_tokens[done])
    predicted = latencies(records["arrival"][done], records["first_token"][done], records["finish"][done],
                          records["output_tokens"][done])
    return Validation(run, config, measured, predicted, len(records), int(records["preemptions"].sum()))


# ----- reporting --------------------------------------------------------------------------------


def report(result: Mapping[str, Any]) -> str:
    lines = [f"{result['run']}: {result['compared']} of {result['requests']} requests, {result['model']} on "
             f"{result['gpu']}, KV blocks {result['kv_blocks']:,} (measured {result['measured_kv_blocks'] or '-'})",
             f"{'metric':8} {'stat':7} {'measured ms':>12} {'predicted ms':>13} {'error':>8}"]
    for metric in METRICS:
        row = result["metrics"][metric]
        for stat in row["measured"]:
            lines.append(f"{metric:8} {stat:7} {row['measured'][stat] * 1e3:12.1f} {row['predicted'][stat] * 1e3:13.1f} "
                         f"{row['error'][stat]:+8.1%}")
        if "mape" in row:
            lines.append(f"{metric:8} {'MAPE':7} {'':>12} {'':>13} {row['mape']:8.1%}")
    return "\n".join(lines)


def validate_runs(paths, gpu: str | None = None, model: str | None = None,
                  cluster: Mapping[str, Any] | None = None, plot: Path | None = None,
                  json_path: Path | None = None) -> str:
    """`fairbatch bench validate`: each run's table; the figure and the JSON where asked."""
    for flag, out in (("--plot", plot), ("--json", json_path)):
        if out is not None:
            check_output(out, flag)
    validations = [validate(path, gpu, model, cluster) for path in paths]
    summaries = [v.summary() for v in validations]
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summaries, indent=1, allow_nan=False) + "\n")
    if plot is not None:
        from .plots import validation_figure

        validation_figure([(f"{v.config.cluster.gpu}", {"measured": v.measured, "predicted": v.predicted})
                           for v in validations], plot)
    return "\n\n".join(report(s) for s in summaries)
