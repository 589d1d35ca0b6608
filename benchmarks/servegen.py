"""A multi-tenant scenario from the ServeGen per-client statistics (Xiang et al., ServeGen,
arXiv:2505.09999; Apache-2.0), read by path from the data folder.

    python -m benchmarks.servegen DATA_DIR [--model m-large] [--tenants 7] [--rate 20] > mix.toml

Per client of one model, from servegen_client_windows.csv.gz: its mean request rate over every
10-minute window (relative rates) and the median coefficient of variation of its inter-arrival gaps
over the windows it was active in (burstiness). From servegen_client_length_summary.csv.gz, where it
has the client: the mean over windows of its mean prompt and output lengths, and the 90th percentile
over windows of their p99s; clients without length data get the rate-weighted lengths of those
with. The heaviest clients become tenants with Gamma arrivals at their share of `rate` (req/s at
load 1); the rest pool into one Poisson tenant, `others`. The `bulk` heaviest clients get priority 1
and looser SLOs, the rest are interactive.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scheduler.errors import ConfigError

from . import tomlwrite

WINDOWS = "servegen_client_windows.csv.gz"
LENGTHS = "servegen_client_length_summary.csv.gz"
CV_RANGE = (0.25, 8.0)  # Gamma gaps beyond these are degenerate (a few windows fit wild CVs)
P99_RANGE = (1.05, 14.0)  # p99 / mean a lognormal can take (sim.workload fits mean and p99)
INTERACTIVE_SLO = {"ttft_ms": 1000.0, "tpot_ms": 50.0}
BULK_SLO = {"ttft_ms": 5000.0, "tpot_ms": 100.0}


@dataclasses.dataclass(frozen=True, slots=True)
class Client:
    id: str
    rate: float  # mean req/s over every window of the model's span
    cv: float  # median CV of inter-arrival gaps over active windows
    prompt: tuple[float, float] | None  # (mean, p99) tokens, None without length data
    output: tuple[float, float] | None


def read_clients(data_dir: str | Path, model: str = "m-large") -> list[Client]:
    """Every client of `model` with any traffic, heaviest first."""
    data_dir = Path(data_dir)
    rates, cvs = _windows(data_dir / WINDOWS, model)
    lengths = _lengths(data_dir / LENGTHS, model)
    clients = [Client(c, float(np.mean(r)), _cv(cvs[c]), lengths.get((c, "input_tokens")),
                      lengths.get((c, "output_tokens"))) for c, r in rates.items() if sum(r) > 0]
    return sorted(clients, key=lambda c: (-c.rate, c.id))


def _open(path: Path):
    if not path.is_file():
        raise ConfigError(f"{path}: ServeGen file not found; give the shared data folder")
    return gzip.open(path, "rt", newline="")


def _windows(path: Path, model: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    rates: dict[str, list[float]] = defaultdict(list)
    cvs: dict[str, list[float]] = defaultdict(list)
    with _open(path) as f:
        reader = csv.reader(f)
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        for row in reader:
            if row[col["model"]] != model:
                continue
            client, rate = row[col["client_id"]], float(row[col["rate"]])
            rates[client].append(rate)
            if rate > 0 and float(row[col["cv"]]) > 0:
                cvs[client].append(float(row[col["cv"]]))
    if not rates:
        raise ConfigError(f"--model: no client of model {model!r} in {path}")
    return rates, cvs


def _cv(values: list[float]) -> float:
    return float(np.clip(np.median(values), *CV_RANGE)) if values else 1.0


def _lengths(path: Path, model: str) -> dict[tuple[str, str], tuple[float, float]]:
    means: dict[tuple[str, str], list[float]] = defaultdict(list)
    p99s: dict[tuple[str, str], list[float]] = defaultdict(list)
    with _open(path) as f:
        reader = csv.DictReader(f)
        for row in reader:
            if row["model"] == model and row["field"] in ("input_tokens", "output_tokens") and row["mean"]:
                key = (row["client_id"], row["field"])
                means[key].append(float(row["mean"]))
                p99s[key].append(float(row["p99"]))
    return {key: (float(np.mean(means[key])), float(np.percentile(p99s[key], 90))) for key in means}


def pooled(clients: Sequence[Client], field: str) -> tuple[float, float]:
    """Rate-weighted (mean, p99) over the clients that have lengths for `field`."""
    have = [(c.rate, getattr(c, field)) for c in clients if getattr(c, field) is not None]
    if not have:
        raise ConfigError(f"servegen: no client has {field} lengths")
    weights = np.array([w for w, _ in have])
    values = np.array([v for _, v in have])
    return tuple(float(x) for x in weights @ values / weights.sum())


def mix_table(clients: Sequence[Client], *, tenants: int = 7, rate: float = 20.0, bulk: int = 2,
              workers: int = 2, duration_s: float = 180.0, drain_s: float = 60.0, seed: int = 0) -> dict[str, Any]:
    """A config table: the `tenants` heaviest clients, then `others`, on `workers` H100s."""
    if tenants < 1 or len(clients) < 1:
        raise ConfigError(f"--tenants: must be >= 1 (and the model must have clients), got {tenants}")
    total = sum(c.rate for c in clients)
    fallback = {f: pooled(clients, f) for f in ("prompt", "output")}
    rows = []
    for rank, c in enumerate(clients[:tenants]):
        rows.append(_tenant(f"client-{c.id}", rate * c.rate / total, "gamma", c.cv,
                            c.prompt or fallback["prompt"], c.output or fallback["output"], rank < bulk))
    rest = clients[tenants:]
    if rest:
        prompt = pooled(rest, "prompt") if any(c.prompt for c in rest) else fallback["prompt"]
        output = pooled(rest, "output") if any(c.output for c in rest) else fallback["output"]
        rows.append(_tenant("others", rate * sum(c.rate for c in rest) / total, "poisson", 1.0, prompt, output,
                            False))
    return {
        "seed": seed, "duration_s": duration_s, "horizon_s": duration_s + drain_s,
        "cluster": {"workers": workers, "gpu": "h100", "model": "llama-3-8b"},
        "scheduler": {"policy": "vtc", "max_num_batched_tokens": 4096, "max_num_seqs": 256},
        "tenants": rows,
    }


def _tenant(name: str, rate: float, arrival: str, cv: float, prompt: tuple, output: tuple, bulk: bool) -> dict:
    row: dict[str, Any] = {"name": name, "priority": 1 if bulk else 0, "rate": round(rate, 4), "arrival": arrival}
    if arrival == "gamma":
        row["cv"] = round(cv, 3)
    row["prompt_tokens"] = _lognormal(*prompt)
    row["output_tokens"] = _lognormal(*output)
    row["slo"] = dict(BULK_SLO if bulk else INTERACTIVE_SLO)
    return row


def _lognormal(mean: float, p99: float) -> dict[str, Any]:
    mean = max(mean, 1.0)
    p99 = float(np.clip(p99, P99_RANGE[0] * mean, P99_RANGE[1] * mean))
    return {"dist": "lognormal", "mean": round(mean, 1), "p99": round(p99, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servegen", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the folder holding the ServeGen CSVs")
    parser.add_argument("--model", default="m-large", help="m-large, m-mid, m-small, deepseek-r1 or mm-image")
    parser.add_argument("--tenants", type=int, default=7, help="heaviest clients kept as tenants")
    parser.add_argument("--rate", type=float, default=20.0, help="total req/s at load 1")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        table = mix_table(read_clients(args.data, args.model), tenants=args.tenants, rate=args.rate,
                          workers=args.workers)
    except ConfigError as err:
        print(f"servegen: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(tomlwrite.dumps(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
