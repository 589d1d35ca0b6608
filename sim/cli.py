"""The `fairbatch` command line: `simulate` a configuration, print the `costmodel` sanity report,
`bench` (the benchmark suite in benchmarks/cli.py), `serve` (the HTTP server, sim/serve.py) and
`tokenizer` (write the serving tokenizer as a Hugging Face tokenizer folder)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
# dotted config key -> the flag as the user types it, to name in errors about a value it set
FLAGS = {dotted: "--" + dest.replace("_", "-") for dest, dotted in OVERRIDES.items()}


class Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the flag, like every other error; exit code 2 (SystemExit,
    as argparse does, without the usage lines)."""

    def error(self, message: str):
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:  # argparse reports them at the top level, all together
            message = f"{unknown.split()[0]}: unknown argument; allowed: the flags `fairbatch COMMAND --help` lists"
        print(f"fairbatch: error: {message.removeprefix('argument ')}", file=sys.stderr)
        sys.exit(2)


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def port(text: str) -> int:
    value = integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in [0, 65535] (0 picks a free one), got {value}")
    return value


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fairbatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sim = commands.add_parser("simulate", help="run one simulation and print its summary")
    sim.add_argument("--config", type=Path, help="TOML scenario (default: the built-in 4-tenant pool)")
    sim.add_argument("--policy", help="queue policy, e.g. fcfs or vtc")
    sim.add_argument("--placement", help="global, round_robin or least_loaded")
    sim.add_argument("--workers", type=integer, help="number of workers in the pool")
    sim.add_argument("--gpu", help="h100, a100-80gb, h200 or l40s")
    sim.add_argument("--model", help="llama-3-8b, llama-3-70b, mistral-7b or qwen2.5-14b")
    sim.add_argument("--tensor-parallel", dest="tensor_parallel", type=integer, help="GPUs per worker")
    sim.add_argument("--duration", type=number, help="seconds of arrivals (replaces requests)")
    sim.add_argument("--requests", type=integer, help="number of requests (replaces duration)")
    sim.add_argument("--seed", type=integer, help="seed of every random draw")
    sim.add_argument("--load", type=number, help="multiply every tenant's arrival rate by this")
    sim.add_argument("--json", type=Path, help="also write config, summary, tenants, fairness, workers here")
    sim.add_argument("--print-config", action="store_true", help="print the built-in default config and exit")
    # Listed for --help only: main() hands `bench ...` to benchmarks.cli before parsing.
    commands.add_parser("bench", help="benchmark suite: compare, capacity, sweep, report, results", add_help=False)
    serve = commands.add_parser("serve", help="serve an OpenAI-compatible API on simulated workers")
    serve.add_argument("--config", type=Path, help="TOML pool, tenants and [serve] keys (default: demo tenants "
                                                   "alice and bob, keys key-alice and key-bob)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; beyond "
                                                          "loopback the demo keys need --allow-demo-keys)")
    serve.add_argument("--port", type=port, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--speed", type=number, default=1.0,
                       help="multiplies the cost model's step times: 1 real time, 0 no waiting")
    serve.add_argument("--allow-demo-keys", dest="allow_demo_keys", action="store_true",
                       help="serve the public demo keys (key-alice, key-bob) on a non-loopback address")
    tok = commands.add_parser("tokenizer", help="write the serving tokenizer (one token per UTF-8 byte) as a "
                                                "Hugging Face tokenizer folder, for load generators")
    tok.add_argument("dir", type=Path, metavar="DIR", help="the folder to write (created if need be)")
    cal = commands.add_parser("calibrate", help="fit the cost model's mfu, mbu and step overhead to a real "
                                                "vLLM run (config.json, vllm/meta.json, vllm/requests.jsonl.gz) "
                                                "or to Vidur operator profiles (mlp.csv, attention.csv, "
                                                "cpu_overheads.csv)")
    cal.add_argument("run", type=Path, metavar="DIR", help="the real run's folder, or the profiles' folder")
    cal.add_argument("--gpu", help="the GPU (a run's default: the one meta.json's hardware.device_name names; "
                                   "profiles need it)")
    cal.add_argument("--model", help="a model name or config.json (a run's default: DIR/config.json; "
                                     "profiles need it)")
    cal.add_argument("--out", type=Path, default=Path("calibration.toml"),
                     help="the calibration file to write (default calibration.toml), for [cluster] calibration")
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
    if args.duration is not None and args.requests is not None:  # each replaces the other: one would be lost
        raise ConfigError("--duration, --requests: give one of them, not both")
    if args.json is not None:
        check_output(args.json, "--json")
    with flags_named(overrides):
        config = load_config(args.config, overrides)
        data = simulate(config)
    result = summarize(data)
    title = f"{config.policy.policy} / {config.policy.placement} on {config.cluster.workers}x " \
            f"{config.cluster.gpu} {config.cluster.model} (seed {config.seed})"
    print(format_report(result, title))
    if args.json is not None:
        # allow_nan=False: a NaN is not JSON; summarize() writes None where a statistic has no value.
        text = json.dumps({"config": config_to_dict(config), **result}, indent=2, allow_nan=False) + "\n"
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text)
        except OSError as err:
            raise ConfigError(f"--json: cannot write {args.json}: {err.strerror or err}") from None
    return 0


@contextlib.contextmanager
def flags_named(overrides: dict):
    """Errors about a value a flag set name the flag (--workers), not the config key it sets; an
    OSError about a file (a trace the checks did not foresee) names the file, in one line."""
    try:
        yield
    except ConfigError as err:
        message = str(err)
        dotted = next((key for key in overrides if message.startswith(key + ":")), None)
        if dotted is None:
            raise
        raise ConfigError(FLAGS[dotted] + message[len(dotted):]) from None
    except OSError as err:
        if err.filename is None:
            raise
        raise ConfigError(f"{err.filename}: {err.strerror or err}") from None


def check_output(path: Path, flag: str) -> None:
    """Refuse, before the run rather than after it, an output path that cannot be written."""
    if path.is_dir():
        raise ConfigError(f"{flag}: {path} is a directory; allowed: a file path (its folder is created if need be)")
    folder = next(p for p in path.parents if p.exists() or p == p.parent)
    if not folder.is_dir():
        raise ConfigError(f"{flag}: {folder} is a file, so {path} cannot be created under it; "
                          "allowed: a file path whose parents are folders or do not exist yet")
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise ConfigError(f"{flag}: {target} is not writable; allowed: a path this user may write")


def run_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import fit, report, to_toml

    check_output(args.out, "--out")
    result = fit(args.run, args.gpu, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_toml(result))
    print(report(result))
    print(f"wrote {args.out}: set [cluster] calibration = \"{args.out}\" to use it")
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
        if args.command == "calibrate":
            return run_calibrate(args)
        if args.command == "costmodel":
            print(sanity_table(args.gpu, args.model, args.tensor_parallel))
            return 0
        return run_simulate(args)
    except ConfigError as err:
        print(f"fairbatch: error: {' '.join(str(err).splitlines())}", file=sys.stderr)  # always one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
