"""The `fairbatch` command line: `simulate` a configuration, print the `costmodel` sanity report,
`bench` (the benchmark suite in benchmarks/cli.py), `serve` (the HTTP server, sim/serve.py) and
`tokenizer` (write the serving tokenizer as a Hugging Face tokenizer folder)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from scheduler.errors import ConfigError

from .cluster import simulate
from .config import DEFAULT_CONFIG, config_to_dict, load_config
from .costmodel import sanity_table
from .results import format_report, summarize

# CLI flag -> dotted config key it overrides
OVERRIDES = {
    "policy": "scheduler.policy",
    "placement": "scheduler.placement",
    "workers": "cluster.workers",
    "gpu": "cluster.gpu",
    "model": "cluster.model",
    "tensor_parallel": "cluster.tensor_parallel",
    "duration": "duration_s",
    "requests": "requests",
    "seed": "seed",
    "load": "load",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairbatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sim = commands.add_parser("simulate", help="run one simulation and print its summary")
    sim.add_argument("--config", type=Path, help="TOML scenario (default: the built-in 4-tenant pool)")
    sim.add_argument("--policy", help="queue policy, e.g. fcfs or vtc")
    sim.add_argument("--placement", help="global, round_robin or least_loaded")
    sim.add_argument("--workers", type=int, help="number of workers in the pool")
    sim.add_argument("--gpu", help="h100, a100-80gb, h200 or l40s")
    sim.add_argument("--model", help="llama-3-8b, llama-3-70b, mistral-7b or qwen2.5-14b")
    sim.add_argument("--tensor-parallel", dest="tensor_parallel", type=int, help="GPUs per worker")
    sim.add_argument("--duration", type=float, help="seconds of arrivals (replaces requests)")
    sim.add_argument("--requests", type=int, help="number of requests (replaces duration)")
    sim.add_argument("--seed", type=int, help="seed of every random draw")
    sim.add_argument("--load", type=float, help="multiply every tenant's arrival rate by this")
    sim.add_argument("--json", type=Path, help="also write config, summary, tenants, fairness, workers here")
    sim.add_argument("--print-config", action="store_true", help="print the built-in default config and exit")
    # Listed for --help only: main() hands `bench ...` to benchmarks.cli before parsing.
    commands.add_parser("bench", help="benchmark suite: compare, capacity, sweep, report, results", add_help=False)
    serve = commands.add_parser("serve", help="serve an OpenAI-compatible API on simulated workers")
    serve.add_argument("--config", type=Path, help="TOML pool, tenants and [serve] keys (default: demo tenants "
                                                   "alice and bob, keys key-alice and key-bob)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; beyond "
                                                          "loopback the demo keys need --allow-demo-keys)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--speed", type=float, default=1.0,
                       help="multiplies the cost model's step times: 1 real time, 0 no waiting")
    serve.add_argument("--allow-demo-keys", dest="allow_demo_keys", action="store_true",
                       help="serve the public demo keys (key-alice, key-bob) on a non-loopback address")
    tok = commands.add_parser("tokenizer", help="write the serving tokenizer (one token per UTF-8 byte) as a "
                                                "Hugging Face tokenizer folder, for load generators")
    tok.add_argument("dir", type=Path, metavar="DIR", help="the folder to write (created if need be)")
    cost = commands.add_parser("costmodel", help="print the cost model's sanity figures")
    cost.add_argument("--gpu", default="h100")
    cost.add_argument("--model", default="llama-3-8b")
    cost.add_argument("--tensor-parallel", dest="tensor_parallel", type=int, default=1)
    return parser


def run_simulate(args: argparse.Namespace) -> int:
    if args.print_config:
        print(DEFAULT_CONFIG, end="")
        return 0
    overrides = {OVERRIDES[k]: v for k, v in vars(args).items() if k in OVERRIDES and v is not None}
    config = load_config(args.config, overrides)
    result = summarize(simulate(config))
    title = f"{config.policy.policy} / {config.policy.placement} on {config.cluster.workers}x " \
            f"{config.cluster.gpu} {config.cluster.model} (seed {config.seed})"
    print(format_report(result, title))
    if args.json is not None:
        document = {"config": config_to_dict(config), **result}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return 0


def run_tokenizer(folder: Path) -> int:
    from scheduler.runtime.tokenizer_folder import write

    for path in write(folder):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from benchmarks.cli import main as bench  # imported on demand: the simulator does not need it

        return bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["simulate", *(argv or [])])
    try:
        if args.command == "serve":
            from .serve import run as serve  # imported on demand: it needs the `serve` extra

            return serve(args.config, args.host, args.port, args.speed, args.allow_demo_keys)
        if args.command == "tokenizer":
            return run_tokenizer(args.dir)
        if args.command == "costmodel":
            print(sanity_table(args.gpu, args.model, args.tensor_parallel))
            return 0
        return run_simulate(args)
    except ConfigError as err:
        print(f"fairbatch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
