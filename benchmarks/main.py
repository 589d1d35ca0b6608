"""The `fairbatch` command line: `simulate` a configuration, print the `costmodel` sanity report,
`bench` (the benchmark suite in benchmarks/cli.py), `serve` (the HTTP server, sim/serve.py),
`calibrate` the cost model, write the serving `tokenizer` as a Hugging Face tokenizer folder, and
`compile` the hot modules (an opt-in build, sim/compiled.py).

This module owns the argument parser and the dispatch of each command to the function that runs it
(sim/cli.py for the simulator's commands). It sits on the top floor, above the simulator and the
benchmark suite, so that every package imports only downward: benchmarks -> sim -> scheduler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from scheduler.errors import ConfigError
from scheduler.placement import PLACEMENTS
from sim import cli, compiled
from sim.hardware import GPUS, MODELS

# The --gpu and --model choices, from the catalogues so that they never list a stale name.
GPU_HELP = f"a catalogue GPU: {', '.join(GPUS)}"
MODEL_HELP = f"a catalogue model ({', '.join(MODELS)}) or a Hugging Face config.json path"


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
    parser = Parser(prog="fairbatch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_simulate(commands)
    # Listed for --help only: main() hands `bench ...` to benchmarks.cli before parsing.
    commands.add_parser("bench", help="benchmark suite: compare, capacity, sweep, report, results", add_help=False)
    add_serve(commands)
    tok = commands.add_parser("tokenizer", help="write the serving tokenizer (one token per UTF-8 byte) as a "
                                                "Hugging Face tokenizer folder, for load generators")
    tok.add_argument("dir", type=Path, metavar="DIR", help="the folder to write (created if need be)")
    add_calibrate(commands)
    why = commands.add_parser("explain", help="tell one request's story from a run's decision file")
    why.add_argument("run", type=Path, metavar="RUN", help="the file `simulate --decisions` wrote (or its folder)")
    why.add_argument("request_id", metavar="REQUEST_ID", help="the request's id (its index in the workload)")
    build = commands.add_parser("compile", help="compile the core's and the simulator's hot modules with mypyc "
                                                "(pip install -e '.[compile]'), or remove that build")
    build.add_argument("--clean", action="store_true", help="remove the compiled build: back to pure Python")
    cost = commands.add_parser("costmodel", help="print the cost model's sanity figures")
    cost.add_argument("--gpu", default="h100", help=GPU_HELP)
    cost.add_argument("--model", default="llama-3-8b", help=MODEL_HELP)
    cost.add_argument("--tensor-parallel", dest="tensor_parallel", type=int, default=1)
    return parser


def add_simulate(commands) -> None:
    # Each override flag's dest is a key of sim.cli.OVERRIDES, the config key it sets.
    sim = commands.add_parser("simulate", help="run one simulation and print its summary")
    sim.add_argument("--config", type=Path, help="TOML scenario (default: the built-in 4-tenant pool)")
    sim.add_argument("--policy", help="queue policy, e.g. fcfs or vtc")
    sim.add_argument("--placement", help=", ".join(sorted(PLACEMENTS)))
    sim.add_argument("--workers", type=integer, help="number of workers in the pool")
    sim.add_argument("--gpu", help=GPU_HELP)
    sim.add_argument("--model", help=MODEL_HELP)
    sim.add_argument("--tensor-parallel", dest="tensor_parallel", type=integer, help="GPUs per worker")
    sim.add_argument("--duration", type=number, help="seconds of arrivals (replaces requests)")
    sim.add_argument("--requests", type=integer, help="number of requests (replaces duration)")
    sim.add_argument("--seed", type=integer, help="seed of every random draw")
    sim.add_argument("--load", type=number, help="multiply every tenant's arrival rate by this")
    sim.add_argument("--json", type=Path, help="also write config, summary, tenants, fairness, workers, detectors here")
    sim.add_argument("--trace", type=Path, metavar="PATH",
                     help="also write a timeline trace (Chrome trace-event JSON, for Perfetto or chrome://tracing)")
    sim.add_argument("--trace-window", dest="trace_window", metavar="START:END",
                     help="keep only the trace's steps, samples and requests in these seconds of simulated time")
    sim.add_argument("--trace-requests", dest="trace_requests", type=integer, metavar="N",
                     help="keep only a sample of N requests' slices and flows in the trace (seeded by --seed)")
    sim.add_argument("--decisions", type=Path, metavar="PATH",
                     help="also write the core's decision records and the requests as JSON lines, for explain")
    sim.add_argument("--starvation-s", dest="starvation_s", type=number, default=5.0, metavar="S",
                     help="a backlogged tenant with no service for longer than this is starved (default 5)")
    sim.add_argument("--print-config", action="store_true", help="print the built-in default config and exit")


def add_serve(commands) -> None:
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
    serve.add_argument("--trace", type=Path, metavar="PATH",
                       help="record a timeline trace while serving and write it here at shutdown (Chrome "
                            "trace-event JSON, for Perfetto or chrome://tracing)")
    serve.add_argument("--trace-window", dest="trace_window", metavar="START:END",
                       help="keep only the trace's steps, samples and requests in these seconds since the "
                            "server started (default 0:600, after which the trace stops growing)")
    serve.add_argument("--trace-requests", dest="trace_requests", type=integer, metavar="N",
                       help="keep only the first N requests' slices and flows in the trace")


def add_calibrate(commands) -> None:
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


COMMANDS = {"serve": cli.run_serve, "tokenizer": cli.run_tokenizer, "calibrate": cli.run_calibrate,
            "costmodel": cli.run_costmodel, "simulate": cli.run_simulate, "explain": cli.run_explain,
            "compile": cli.run_compile}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .cli import main as bench  # imported on demand: the other commands do not need the suite

        return bench(argv[1:])
    stale = compiled.stale()
    if stale:  # Python imports the build, not the edited source
        print(f"fairbatch: warning: the compiled build of {', '.join(stale)} is older than the source; "
              "run `fairbatch compile` again, or `fairbatch compile --clean`", file=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["simulate", *(argv or [])])
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"fairbatch: error: {' '.join(str(err).splitlines())}", file=sys.stderr)  # always one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
