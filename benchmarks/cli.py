"""`fairbatch bench`: compare policies, search goodput capacity, run sweeps, write reports.

    fairbatch bench compare  --scenario S [--policies P,..] [--placements P,..] [--loads X,..] [--report]
    fairbatch bench capacity --scenario S [--policies P,..] [--start X] [--tolerance F] [--target F]
    fairbatch bench sweep    GRID.toml
    fairbatch bench report   DIR [DIR ...] [--out report.md]
    fairbatch bench results  [--data DIR]          (regenerates benchmarks/RESULTS.md)
    fairbatch bench validate RUN_DIR [RUN_DIR ...] [--gpu G] [--set cluster.KEY=V] [--plot PNG] [--json PATH]
    fairbatch bench prefix   [--data DIR] [--duration S]   (prefix caching x placements; benchmarks/prefix.py)
    fairbatch bench isolation [--quick] [--policies P,..] [--set KEY=V] [--mechanisms] [--results]

compare, capacity, sweep and results take --jobs N, --executor process|ray|serial, --out DIR,
--cache DIR, --fresh and --no-progress. Results go to --out (default results/bench/<command>-<name>):
points.json, results.csv and a JSON and TOML per run in the cache, which later runs reuse.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Sequence

from scheduler.errors import ConfigError
from sim.config import CALIBRATED
from sim.trace import parse_window

from . import capacity as cap
from .compare import POLICIES, compare_markdown, compare_points, scenario_label
from .report import write_report
from .runner import EXECUTORS, Interrupted
from .session import Session
from .sweep import grid_points, load_grid
from .tables import capacity_table, series_names

DEFAULT_OUT = Path("results") / "bench"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairbatch bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--out", type=Path, help="output directory")
    _run_options(run)
    scenario = argparse.ArgumentParser(add_help=False)
    scenario.add_argument("--scenario", default="azure_conv_4tenants",
                          help="a name in benchmarks/scenarios or a path to a TOML config")
    scenario.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies")
    scenario.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a dotted config key (TOML value), e.g. cluster.workers=1")
    scenario.add_argument("--duration", type=float, help="seconds of arrivals (sets duration_s)")
    scenario.add_argument("--seed", type=int)
    compare = commands.add_parser("compare", parents=[run, scenario], help="policies x placements x loads")
    compare.add_argument("--loads", default="1", help="comma-separated load multipliers")
    compare.add_argument("--placements", help="comma-separated placements (default: the scenario's)")
    compare.add_argument("--report", action="store_true", help="also write OUT/report.md with figures")
    capacity = commands.add_parser("capacity", parents=[run, scenario], help="goodput capacity per policy")
    capacity.add_argument("--start", type=float, default=1.0, help="first load probed")
    capacity.add_argument("--low", type=float, default=1 / 64, help="lowest load probed")
    capacity.add_argument("--high", type=float, default=64.0, help="highest load probed")
    capacity.add_argument("--tolerance", type=float, default=0.05, help="relative width of the final bracket")
    capacity.add_argument("--target", type=float, default=cap.TARGET, help="SLO attainment to reach")
    capacity.add_argument("--drain", type=float, default=cap.DRAIN_S,
                          help="seconds after arrivals before a probe stops (when the scenario sets no horizon_s)")
    sweep = commands.add_parser("sweep", parents=[run], help="a grid of dotted config keys")
    sweep.add_argument("grid", type=Path, help="grid TOML: scenario, [base], [axes]")
    report = commands.add_parser("report", help="markdown report with figures from saved results")
    report.add_argument("dirs", type=Path, nargs="+", help="directories written by compare, capacity, sweep")
    report.add_argument("--out", type=Path, help="report file (default: DIR/report.md)")
    report.add_argument("--figures", type=Path, help="figures directory (default: beside the report)")
    report.add_argument("--load", type=float, help="load of the over-time figures (default: the highest)")
    report.add_argument("--title", default="Benchmark report")
    report.add_argument("--timeline", type=Path, metavar="TRACE",
                        help="also draw a window of this trace (`fairbatch simulate --trace`) as a picture")
    report.add_argument("--timeline-window", dest="timeline_window", metavar="START:END",
                        help="the seconds of the trace drawn (default: 2 s in its middle)")
    validate = commands.add_parser("validate", help="replay real vLLM runs; predicted against measured latency")
    validate.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR",
                          help="a run: config.json, vllm/meta.json, vllm/requests.jsonl.gz")
    validate.add_argument("--gpu", help="the GPU (default: the one meta.json's hardware.device_name names)")
    validate.add_argument("--model", help="a model name or config.json (default: RUN_DIR/config.json)")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a [cluster] key (TOML value), e.g. cluster.mbu=0.7")
    validate.add_argument("--plot", type=Path, help="write the measured and predicted CDFs to this PNG")
    validate.add_argument("--json", type=Path, help="write the comparison as JSON")
    prefix = commands.add_parser("prefix", parents=[run], help="prefix caching off and on under every placement")
    prefix.add_argument("--data", type=Path, help="the folder of the Mooncake trace (default: ../shared/data)")
    prefix.add_argument("--duration", type=float, help="seconds of arrivals (default: each scenario's)")
    prefix.add_argument("--results", action="store_true",
                        help="also write the section of benchmarks/RESULTS.md (and its figure)")
    isolation = commands.add_parser("isolation", parents=[run],
                                    help="the noisy-neighbour family, isolation off and on, every policy")
    isolation.add_argument("--quick", action="store_true", help="two flood sizes, one worker, fcfs and vtc, 20 s")
    isolation.add_argument("--policies", help="comma-separated policies (default: every one)")
    isolation.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a dotted config key in every run, e.g. scheduler.latency_budget_tokens=512")
    isolation.add_argument("--mechanisms", action="store_true", help="also each mechanism alone under vtc")
    isolation.add_argument("--results", action="store_true",
                           help="write the section of benchmarks/RESULTS.md (and its figure), with the mechanisms")
    results = commands.add_parser("results", help="regenerate benchmarks/RESULTS.md")
    _run_options(results)
    results.add_argument("--data", type=Path, help="the shared data folder (default: ../shared/data)")
    results.add_argument("--work", type=Path, help="where runs and CSVs go (default: results/suite)")
    results.add_argument("--output", type=Path, help="the report (default: benchmarks/RESULTS.md)")
    results.add_argument("--quick", action="store_true", help="short runs into results/suite/quick (a pipeline check)")
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, help="parallel simulations (default: the CPU count; 1 runs in-process)")
    parser.add_argument("--executor", default="process", help=f"{', '.join(EXECUTORS)} (ray: RAY_ADDRESS or local)")
    parser.add_argument("--cache", type=Path, help="run documents directory (default OUT/runs)")
    parser.add_argument("--fresh", action="store_true", help="rerun points even when cached")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"fairbatch: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        done = sum(o.status in ("ok", "cached") for o in stop.outcomes)
        print(f"fairbatch: interrupted: {done} of {len(stop.outcomes)} points saved; run the same command "
              "again to resume", file=sys.stderr)
        return 130


def run_compare(args: argparse.Namespace) -> int:
    points = compare_points(args.scenario, _names(args.policies, "--policies"), _loads(args.loads),
                            _names(args.placements, "--placements") if args.placements else None,
                            _overrides(args))
    out = args.out or DEFAULT_OUT / f"compare-{scenario_label(args.scenario)}"
    with _session("compare", out, args, len(points)) as session:
        outcomes = session.run(points)
    print(compare_markdown(outcomes), end="")
    if args.report:
        print(f"report: {write_report([out], out / 'report.md')}")
    return _finish(session, out)


def run_capacity(args: argparse.Namespace) -> int:
    base = cap.capacity_base(args.scenario, overrides=_overrides(args), drain_s=args.drain)
    searches = cap.make_searches(base, _names(args.policies, "--policies"), scenario_label(args.scenario),
                                 start=args.start, low=args.low, high=args.high, tolerance=args.tolerance)
    out = args.out or DEFAULT_OUT / f"capacity-{scenario_label(args.scenario)}"
    with _session("capacity", out, args, 0) as session:
        results = cap.search(searches, session.run, args.target, on_round=session.bar.grow)
        session.extra["capacity"] = results
    names = series_names([r["labels"] for r in results])
    print(capacity_table(dict(zip(names, results))))
    return _finish(session, out)


def run_sweep(args: argparse.Namespace) -> int:
    grid = load_grid(args.grid)
    points = grid_points(grid)
    out = args.out or DEFAULT_OUT / f"sweep-{args.grid.stem}"
    started = time.perf_counter()
    with _session("sweep", out, args, len(points)) as session:
        session.extra["grid"] = {"scenarios": list(grid.scenarios), "base": grid.base, "axes": grid.axes}
        outcomes = session.run(points)
    for o in outcomes:
        if o.status == "failed":
            print(f"failed: {', '.join(f'{k}={v}' for k, v in o.point.labels.items())}: {o.error}")
    print(f"{len(points)} points in {time.perf_counter() - started:.1f} s")
    return _finish(session, out)


def run_report(args: argparse.Namespace) -> int:
    output = args.out or args.dirs[0] / "report.md"
    if args.timeline_window is not None and args.timeline is None:
        raise ConfigError("--timeline-window: picks the seconds of --timeline TRACE, so it needs it")
    window = None if args.timeline_window is None else parse_window(args.timeline_window, "--timeline-window")
    print(write_report(args.dirs, output, figures=args.figures, title=args.title, load=args.load,
                       timeline=args.timeline, timeline_window=window))
    return 0


def run_results(args: argparse.Namespace) -> int:
    from .regenerate import regenerate

    print(regenerate(data=args.data, jobs=args.jobs, executor=args.executor, cache=args.cache, fresh=args.fresh,
                     progress=args.progress, quick=args.quick, output=args.output, work=args.work))
    return 0


def run_prefix(args: argparse.Namespace) -> int:
    from .prefix import run_prefix as run
    from .regenerate import DEFAULT_DATA, OUTPUT, add_prefix

    options = {"cache": args.cache, "executor": args.executor, "jobs": args.jobs, "fresh": args.fresh,
               "progress": args.progress}
    if args.results:
        add_prefix(OUTPUT, args.data or DEFAULT_DATA, OUTPUT.parent / "results", **options)
        print(f"wrote the prefix caching section of {OUTPUT}")
        return 0
    out = args.out or DEFAULT_OUT / "prefix"
    markdown, headline = run(out, data=args.data, duration_s=args.duration, **options)
    (out / "prefix.md").write_text(markdown + "\n")
    print(markdown)
    print("\n" + ", ".join(f"{k} {v}" for k, v in headline.items()))
    return 0


def run_isolation(args: argparse.Namespace) -> int:
    from .isolation import run_isolation as run
    from .regenerate import OUTPUT, add_isolation

    options = {"cache": args.cache, "executor": args.executor, "jobs": args.jobs, "fresh": args.fresh,
               "progress": args.progress}
    if args.results:
        add_isolation(OUTPUT, OUTPUT.parent / "results", **options)
        print(f"wrote the isolation section of {OUTPUT}")
        return 0
    out = args.out or DEFAULT_OUT / ("isolation-quick" if args.quick else "isolation")
    policies = _names(args.policies, "--policies") if args.policies else None
    markdown, headline = run(out, quick=args.quick, mechanisms=args.mechanisms, policies=policies,
                             overrides=_settings(args.overrides), **options)
    (out / "isolation.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\nfigure: {headline.pop('figure')}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from .validate import validate_runs

    print(validate_runs(args.runs, gpu=args.gpu, model=args.model, cluster=_cluster_overrides(args.overrides),
                        plot=args.plot, json_path=args.json))
    return 0


def _cluster_overrides(items: list[str]) -> dict[str, Any]:
    """--set cluster.KEY=VALUE of the cost model's coefficients: the rest of a replay is the run's."""
    allowed = (*CALIBRATED, "calibration")
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().startswith("cluster."):
            raise ConfigError(f"--set: expected cluster.KEY=VALUE, got {item!r}")
        key = key.strip().removeprefix("cluster.")
        if key not in allowed:
            raise ConfigError(f"--set: cluster.{key} is the run's, not the cost model's; allowed: "
                              + ", ".join(f"cluster.{k}" for k in allowed) + " (--gpu and --model for those)")
        out[key] = _value(text.strip())
    return out


COMMANDS = {"compare": run_compare, "capacity": run_capacity, "sweep": run_sweep, "report": run_report,
            "results": run_results, "validate": run_validate, "prefix": run_prefix, "isolation": run_isolation}


def _session(command: str, out: Path, args: argparse.Namespace, total: int) -> Session:
    return Session(command, out, cache=args.cache, executor=args.executor, jobs=args.jobs, fresh=args.fresh,
                   progress=args.progress, total=total)


def _finish(session: Session, out: Path) -> int:
    counts = session.counts()
    print(f"ran {counts['ok']}, cached {counts['cached']}, failed {counts['failed']}; "
          f"results in {out / 'results.csv'}")
    return 1 if counts["failed"] else 0


def _names(text: str, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{flag}: give at least one comma-separated name")
    return names


def _loads(text: str) -> list[float]:
    try:
        loads = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--loads: must be comma-separated numbers > 0, got {text!r}") from None
    if not loads or any(not x > 0 for x in loads):
        raise ConfigError(f"--loads: must be comma-separated numbers > 0, got {text!r}")
    return loads


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = _settings(args.overrides)
    if args.duration is not None:
        out["duration_s"] = args.duration
    if args.seed is not None:
        out["seed"] = args.seed
    return out


def _settings(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE items as dotted keys and TOML values."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = _value(text.strip())
    return out


def _value(text: str) -> Any:
    """A TOML value (1, 2.5, true, [1, 2], {a = 1}); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


if __name__ == "__main__":
    sys.exit(main())
