"""The simulator's commands of the `fairbatch` command line: `simulate` a configuration, print the
`costmodel` sanity report, `calibrate` the cost model, `serve` the HTTP API (sim/serve.py) and write
the serving `tokenizer` folder.

Each `run_*` takes the parsed arguments and returns the exit code; the parser and the dispatch live
in benchmarks/main.py, above this package. Errors about a value a flag set name the flag.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

from scheduler.errors import ConfigError

from .cluster import Simulation
from .config import DEFAULT_CONFIG, SimConfig, config_to_dict, load_config
from .costmodel import sanity_table
from .detectors import detect, format_detectors
from .explain import decision_lines, explain
from .results import RunData, format_report, summarize
from .trace import TraceSpec, check_requests, check_window_in_run, parse_window, write_text

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


def run_simulate(args: argparse.Namespace) -> int:
    if args.print_config:
        print(DEFAULT_CONFIG, end="")
        return 0
    overrides = {OVERRIDES[k]: v for k, v in vars(args).items() if k in OVERRIDES and v is not None}
    if args.duration is not None and args.requests is not None:  # each replaces the other: one would be lost
        raise ConfigError("--duration, --requests: give one of them, not both")
    trace = trace_spec(args)
    for path, flag in ((args.json, "--json"), (args.trace, "--trace"), (args.decisions, "--decisions")):
        if path is not None:
            check_output(path, flag)
    with flags_named(overrides):
        config = load_config(args.config, overrides)
        sim = Simulation(config, trace=trace, record_decisions=args.decisions is not None)
        data = sim.run()
    if trace is not None:
        check_window_in_run(trace.window, data.duration_s)
    result = summarize(data)
    found = detect(data, [t.priority for t in config.tenants], config.policy.placement != "global", sim.decisions,
                   args.starvation_s)
    title = f"{config.policy.policy} / {config.policy.placement} on {config.cluster.workers}x " \
            f"{config.cluster.gpu} {config.cluster.model} (seed {config.seed})"
    print(format_report(result, title) + format_detectors(found))
    if args.json is not None:
        # allow_nan=False: a NaN is not JSON; summarize() writes None where a statistic has no value.
        text = json.dumps({"config": config_to_dict(config), **result, "detectors": found}, indent=2,
                          allow_nan=False) + "\n"
        write_text(args.json, text, "--json")
    if trace is not None:
        write_text(args.trace, sim.trace.to_json(data.duration_s), "--trace")
        print(f"wrote {args.trace}: open it in https://ui.perfetto.dev or chrome://tracing")
    if args.decisions is not None:
        write_text(args.decisions, "\n".join(decision_lines(run_header(config, data), sim.decisions, data)) + "\n",
                   "--decisions")
        print(f"wrote {args.decisions}: `fairbatch explain {args.decisions} REQUEST_ID` tells a request's story")
    return 0


def trace_spec(args: argparse.Namespace) -> TraceSpec | None:
    """What --trace keeps (checked before the run); None without --trace."""
    bounds = [flag for flag, value in (("--trace-window", args.trace_window), ("--trace-requests", args.trace_requests))
              if value is not None]
    if args.trace is None:
        if bounds:
            raise ConfigError(f"{bounds[0]}: bounds the trace, so it needs --trace PATH")
        return None
    check_requests(args.trace_requests)
    window = None if args.trace_window is None else parse_window(args.trace_window)
    return TraceSpec(window, args.trace_requests)


def run_header(config: SimConfig, data: RunData) -> dict:
    """The decision file's first line: what `fairbatch explain` needs of the run."""
    return {"policy": config.policy.policy, "placement": config.policy.placement, "workers": config.cluster.workers,
            "seed": config.seed, "service_weights": [float(w) for w in data.service_weights],
            "priorities": [t.priority for t in config.tenants], "duration_s": data.duration_s}


def run_explain(args: argparse.Namespace) -> int:
    print(explain(args.run, args.request_id))
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


def run_tokenizer(args: argparse.Namespace) -> int:
    from scheduler.runtime.tokenizer_folder import write

    for path in write(args.dir):
        print(path)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from .serve import run as serve, trace_file  # imported on demand: it needs the `serve` extra

    trace = trace_file(args.trace, trace_spec(args))
    return serve(args.config, args.host, args.port, args.speed, args.allow_demo_keys, trace)


def run_compile(args) -> int:
    from . import compiled  # the build tool, needed only here

    return compiled.main(args.clean)


def run_costmodel(args: argparse.Namespace) -> int:
    print(sanity_table(args.gpu, args.model, args.tensor_parallel))
    return 0
