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


def run_tokenizer(args: argparse.Namespace) -> int:
    from scheduler.runtime.tokenizer_folder import write

    for path in write(args.dir):
        print(path)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from .serve import run as serve  # imported on demand: it needs the `serve` extra

    return serve(args.config, args.host, args.port, args.speed, args.allow_demo_keys)


def run_costmodel(args: argparse.Namespace) -> int:
    print(sanity_table(args.gpu, args.model, args.tensor_parallel))
    return 0
