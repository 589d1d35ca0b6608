"""`fairbatch bench results`: regenerate benchmarks/RESULTS.md and its figures.

The policies fcfs, priority, vtc, drr, edf and slo on three workloads, each at three loads, and each
policy's goodput capacity on each workload:

  azure-conv  the Azure LLM conversation trace split across four tenants (scenarios/suite_azure_conv.toml)
  azure-code  the Azure LLM code trace split across three tenants (scenarios/suite_azure_code.toml)
  servegen    the seven heaviest m-large clients of ServeGen and the rest pooled (benchmarks/servegen.py)

Traces are read from --data (default: ../shared/data beside the checkout). Run documents are cached
in results/suite/runs, so a rerun after an interruption resumes where it stopped.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scheduler.errors import ConfigError

from . import capacity as cap
from .compare import compare_points
from .points import load_table, with_overrides
from .report import write_report
from .servegen import mix_table, read_clients
from .session import Session
from .tables import fmt, md_table

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
OUTPUT = BENCH / "RESULTS.md"
PREFIX_HEADING = "## Prefix caching and cache-aware routing"  # its figures and CSV go to benchmarks/results/
WORK = ROOT / "results" / "suite"
POLICIES = ("fcfs", "priority", "vtc", "drr", "edf", "slo")
# label: (scenario file or None for the ServeGen mix, loads: below, near and above the capacity of
# most policies, which is about x2.8 for azure-conv, x0.7 for azure-code and x1.7 for servegen)
SUITE = {
    "azure-conv": ("suite_azure_conv", (2.0, 3.0, 4.0)),
    "azure-code": ("suite_azure_code", (0.4, 0.7, 1.2)),
    "servegen": (None, (1.0, 1.7, 2.5)),
}
# The ServeGen mix: 20 req/s at load 1 on two H100s, 600 s of arrivals like azure-conv.
SERVEGEN = {"tenants": 7, "rate": 20.0, "workers": 2, "duration_s": 600.0}
QUICK_DURATION_S = 30.0


def suite_workloads(data: Path, quick: bool = False) -> dict[str, tuple[dict[str, Any], tuple[float, ...]]]:
    """label: (config table, loads) of the three workloads, traces read from `data`."""
    if not data.is_dir():
        raise ConfigError(f"--data: {data} is not a directory; give the shared data folder (Azure, ServeGen files)")
    workloads = {}
    for label, (scenario, loads) in SUITE.items():
        table = load_table(scenario) if scenario else mix_table(read_clients(data), **SERVEGEN)
        table = _with_data(table, data)
        if quick:
            table = with_overrides(table, {"duration_s": QUICK_DURATION_S, "horizon_s": QUICK_DURATION_S + 30})
        workloads[label] = (table, loads)
    return workloads


def _with_data(table: Mapping[str, Any], data: Path) -> dict[str, Any]:
    """Point every trace at the file of the same name in `data`."""
    table = dict(table)
    table["tenants"] = [dict(t, trace=str(data / Path(t["trace"]).name)) if "trace" in t else t
                        for t in table["tenants"]]
    return table


def regenerate(*, data: str | Path | None = None, jobs: int | None = None, executor: str = "process",
               cache: str | Path | None = None, fresh: bool = False, progress: bool = True, quick: bool = False,
               output: str | Path | None = None, work: str | Path | None = None,
               suite: Mapping[str, tuple[dict, Sequence[float]]] | None = None,
               policies: Sequence[str] = POLICIES) -> Path:
    """Run the suite (`suite`: label -> (table, loads), default the three workloads) and write the report."""
    work = Path(work) if work is not None else WORK / ("quick" if quick else "")
    output = Path(output) if output is not None else (work / "RESULTS.md" if quick else OUTPUT)
    figures = output.parent / "results"
    cache = Path(cache) if cache is not None else work / "runs"
    started = time.perf_counter()
    real_suite = suite is None
    if real_suite:
        suite = suite_workloads(Path(data) if data is not None else DEFAULT_DATA, quick)
    points = [p for label, (table, loads) in suite.items()
              for p in compare_points(label, policies, loads, table=table, label=label)]
    searches = [s for label, (table, loads) in suite.items()
                for s in cap.make_searches(cap.capacity_base(table=table), policies, label,
                                           start=sorted(loads)[len(loads) // 2])]
    options = {"cache": cache, "executor": executor, "jobs": jobs, "fresh": fresh, "progress": progress}
    with Session("compare", work / "compare", total=len(points), description="compare", **options) as compare:
        compare.run(points)
    with Session("capacity", work / "capacity", description="capacity", **options) as capacity:
        results = cap.search(searches, capacity.run, on_round=capacity.bar.grow)
        capacity.extra["capacity"] = results
    counts = {k: compare.counts()[k] + capacity.counts()[k] for k in ("ok", "cached")}
    run = f"{(time.perf_counter() - started) / 60:.1f} min for {counts['ok']} simulations ({counts['cached']} cached)"
    intro = _intro(run, jobs, quick, cache, figures / "results.csv") + "\n\n" + capacity_summary(results)
    write_report([work / "compare", work / "capacity"], output, figures=figures,
                 title="fairbatch benchmark results", intro=intro)
    add_validation(output, Path(data) if data is not None else DEFAULT_DATA, figures)
    if not quick:
        add_prefix(output, Path(data) if data is not None else DEFAULT_DATA, figures,
                   cache=cache, executor=executor, jobs=jobs, fresh=fresh, progress=progress)
        if real_suite:  # the floods are their own family, not a workload of a custom suite
            add_isolation(output, figures, work / "isolation", executor=executor, jobs=jobs, fresh=fresh,
                          progress=progress)
    shutil.copyfile(work / "compare" / "results.csv", figures / "results.csv")
    return output


def add_validation(output: Path, data: Path, figures: Path) -> None:
    """Append (or replace) the section validating the cost model against the real vLLM runs."""
    if not (data / "real_vllm_runs").is_dir():
        return
    from .validate import validation_markdown

    figure = figures / "validation.png"
    replace_section(output, "## Validation against real vLLM runs", validation_markdown(
        data, figure, os.path.relpath(figure, output.parent)))


def add_prefix(output: Path, data: Path, figures: Path, **session: Any) -> None:
    """Append (or replace) the section on prefix caching and cache-aware routing (`benchmarks.prefix`)."""
    if not (data / "mooncake_fast25_conversation.jsonl.gz").is_file():
        return
    from .prefix import prefix_section

    replace_section(output, PREFIX_HEADING, prefix_section(data, figures, output.parent, WORK / "prefix", **session))


def add_isolation(output: Path, figures: Path, work: Path = WORK / "isolation", **session: Any) -> None:
    """Append (or replace) the section on isolation under floods (`benchmarks.isolation`), its
    runs under `work`."""
    from .isolation import HEADING, isolation_section

    replace_section(output, HEADING, isolation_section(figures, output.parent, work, **session))


def replace_section(output: Path, heading: str, section: str) -> None:
    """Put `section` (starting with `heading`) in place of the report's section of that heading,
    or at its end; the other sections stay as they are."""
    text = output.read_text()
    if heading in text:
        head, rest = text.split("\n" + heading, 1)
        tail = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
        text = head.rstrip("\n") + "\n\n" + section.rstrip("\n") + ("\n\n## " + tail if tail else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    output.write_text(text)


def capacity_summary(results: list[dict[str, Any]]) -> str:
    """Capacity in offered req/s: a row per policy, a column per workload."""
    workloads = list(dict.fromkeys(r["labels"]["scenario"] for r in results))
    cells = {(r["labels"]["policy"], r["labels"]["scenario"]): r for r in results}
    rows = []
    for policy in dict.fromkeys(r["labels"]["policy"] for r in results):
        row = [policy]
        for w in workloads:
            r = cells.get((policy, w), {})
            rate = (r.get("at_capacity") or {}).get("offered_request_rate")
            row.append(f"{fmt(rate)} (x{fmt(r.get('capacity'))})" if r.get("capacity") else "-")
        rows.append(row)
    return ("## Goodput capacity\n\nOffered req/s (and load multiplier) at which >= 90% of requests meet "
            "their TTFT SLO and >= 90% their TPOT SLO; details per workload below.\n\n"
            + md_table(["policy", *workloads], rows))


def _intro(run: str, jobs: int | None, quick: bool, cache: Path, csv: Path) -> str:
    return (
        "Regenerate with `fairbatch bench results` (needs the shared data folder beside the checkout, or "
        "`--data DIR`; `pip install -e '.[bench]'` for the figures). "
        f"This run took {run} with {jobs or os.cpu_count()} jobs on {os.cpu_count()} CPUs"
        f"{' (--quick: short runs, not for reading)' if quick else ''}. Every run's JSON and TOML config (seed "
        f"included) are in {_shown(cache)}, by config hash; every compare run is a row of {_shown(csv)}.\n\n"
        "Data: Azure LLM inference traces 2023 (Patel et al., Splitwise, ISCA'24; CC-BY-4.0) and ServeGen "
        "per-client statistics (Xiang et al., arXiv:2505.09999; Apache-2.0). Latencies are in ms, over "
        "finished requests as vLLM counts them; SLO attainment counts every submitted request (those "
        "unfinished when a run stops, 60 s after its arrivals, miss). Worker busy time and KV usage over "
        "time are rebuilt from per-request records (benchmarks/series.py)."
    )


def _shown(path: Path) -> str:
    """A path relative to the project root when it is inside it."""
    try:
        return f"`{path.resolve().relative_to(ROOT)}`"
    except ValueError:
        return f"`{path}`"
