"""What seeing inside a run costs: the simulator's wall time with the timeline trace off, on, and
with decision records, as medians of repeats and ratios to "off" measured in the same process.

    python -m benchmarks.trace_overhead [--scenario noisy_neighbour] [--policy vtc] [--repeats 5]

Each repeat runs every mode once, in turn, so drift in the machine's speed falls on all of them.
"on" times include building the output (the trace's JSON text, the decision file's lines), not
writing it to disk.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

from sim.cluster import Simulation
from sim.config import SimConfig, load_config
from sim.explain import decision_lines
from sim.trace import TraceSpec

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
MODES = ("off", "trace", "decisions", "trace+decisions")


def run_once(config: SimConfig, mode: str) -> float:
    """Seconds of one run in `mode`, its outputs built."""
    start = time.perf_counter()
    sim = Simulation(config, trace=TraceSpec() if "trace" in mode else None, record_decisions="decisions" in mode)
    data = sim.run()
    if sim.trace is not None:
        sim.trace.to_json(data.duration_s)
    if sim.decisions is not None:
        for _ in decision_lines({}, sim.decisions, data):
            pass
    return time.perf_counter() - start


def measure(config: SimConfig, repeats: int) -> dict[str, float]:
    """Median seconds per mode."""
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            times[mode].append(run_once(config, mode))
    return {mode: statistics.median(values) for mode, values in times.items()}


def table(medians: dict[str, float]) -> str:
    base = medians["off"]
    rows = [f"{'mode':<18}{'median s':>10}{'x off':>8}", "-" * 36]
    rows += [f"{mode:<18}{seconds:>10.3f}{seconds / base:>8.2f}" for mode, seconds in medians.items()]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trace_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="noisy_neighbour", help="a scenario in benchmarks/scenarios")
    parser.add_argument("--policy", default="vtc")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    config = load_config(SCENARIOS / f"{args.scenario}.toml", {"scheduler.policy": args.policy})
    medians = measure(config, max(1, args.repeats))
    print(f"{args.scenario} under {args.policy}, median of {args.repeats} repeats")
    print(table(medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
