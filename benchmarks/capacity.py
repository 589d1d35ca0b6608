"""`fairbatch bench capacity`: goodput capacity as DistServe defines it, per policy.

Capacity is the largest request rate at which at least 90% of requests meet their TTFT SLO and at
least 90% meet their TPOT SLO (each counted over every submitted request: rejected or unfinished
ones miss). The rate is varied through the `load` multiplier: from a start load it doubles until a
probe fails (or halves until one passes), then bisects until the bracket is within a tolerance.
Every policy's search advances one probe per round, and each round's probes run in parallel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from scheduler.errors import ConfigError
from sim.traces import read_trace

from .points import Point, load_table, make_point, with_overrides
from .store import Outcome

TARGET = 0.9
DRAIN_S = 60.0  # with no horizon_s in the scenario, requests get this long after arrivals stop


@dataclasses.dataclass(slots=True)
class Bisection:
    """The bracket of one search: the largest load that passed, the smallest that failed."""

    start: float = 1.0
    low: float = 1 / 64
    high: float = 64.0
    tolerance: float = 0.05  # stop when (failed - passed) <= tolerance x failed
    passed: float | None = None
    failed: float | None = None
    probes: list[tuple[float, bool]] = dataclasses.field(default_factory=list)

    def next_load(self) -> float | None:
        """The next load to probe, or None when the search is over."""
        if not self.probes:
            return _round(min(max(self.start, self.low), self.high))
        if self.failed is None:
            grown = self.passed * 2
            return _round(min(grown, self.high)) if self.passed < self.high else None
        if self.passed is None:
            shrunk = self.failed / 2
            return _round(max(shrunk, self.low)) if self.failed > self.low else None
        if self.failed - self.passed <= self.tolerance * self.failed:
            return None
        return _round((self.passed + self.failed) / 2)

    def record(self, load: float, ok: bool) -> None:
        self.probes.append((load, ok))
        if ok:
            self.passed = load if self.passed is None else max(self.passed, load)
        else:
            self.failed = load if self.failed is None else min(self.failed, load)

    def note(self) -> str | None:
        if self.passed is None:
            return f"fails even at load x{self.low:g}"
        if self.failed is None:
            return f"passes up to the highest load probed, x{self.high:g}"
        if self.passed > self.failed:
            return "not monotonic: a higher load passed after a lower one failed"
        return None


def _round(load: float) -> float:
    """Four significant digits: readable labels, and repeated searches hit the same cache keys."""
    return float(f"{load:.4g}")


def passes(doc: Mapping[str, Any], target: float = TARGET) -> bool:
    g = doc["goodput"]
    return (g["ttft_attainment"] or 0.0) >= target and (g["tpot_attainment"] or 0.0) >= target


def capacity_base(scenario: str | Path | None = None, *, table: Mapping[str, Any] | None = None,
                  overrides: Mapping[str, Any] | None = None, drain_s: float = DRAIN_S) -> dict[str, Any]:
    """The scenario table probes start from: a horizon after the arrivals, so an overloaded probe
    stops instead of draining a long queue (whatever is still waiting then has missed its SLO)."""
    base = with_overrides(table if table is not None else load_table(scenario), overrides or {})
    if "horizon_s" not in base and "duration_s" in base:
        base = with_overrides(base, {"horizon_s": float(base["duration_s"]) + drain_s})
    return base


def highest_load(table: Mapping[str, Any]) -> float:
    """Above this load a trace runs out before duration_s ends, so the offered rate stops growing."""
    duration = table.get("duration_s")
    spans = []
    for tenant in table.get("tenants", []):
        trace = read_trace(tenant["trace"]) if "trace" in tenant else None
        if trace is not None and trace.arrival_s is not None and duration:
            spans.append(float(trace.arrival_s.max()) / float(duration))
    return min(spans, default=math.inf)


@dataclasses.dataclass(slots=True)
class Search:
    labels: dict[str, Any]
    base: dict[str, Any]
    bisection: Bisection
    docs: dict[float, dict] = dataclasses.field(default_factory=dict)
    error: str | None = None

    def point(self, load: float) -> Point:
        return make_point({**self.labels, "load": load}, with_overrides(self.base, {"load": load}))

    def result(self) -> dict[str, Any]:
        b = self.bisection
        best = self.docs.get(b.passed) if b.passed is not None else None
        return {
            "labels": self.labels,
            "capacity": b.passed,
            "failed_at": b.failed,
            "at_capacity": best["goodput"] if best else None,
            "probes": [{"load": load, "passed": ok, **self.docs[load]["goodput"]} for load, ok in b.probes],
            "note": self.error or b.note(),
        }


def search(searches: Sequence[Search], run: Callable[[list[Point]], list[Outcome]],
           target: float = TARGET, on_round: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Advance every search one probe per round; `run` executes a round's points (in parallel).
    `on_round(n)` is told how many probes the next round holds (to grow a progress bar)."""
    while True:
        live = [(s, s.bisection.next_load()) for s in searches if s.error is None]
        live = [(s, load) for s, load in live if load is not None]
        if not live:
            return [s.result() for s in searches]
        if on_round is not None:
            on_round(len(live))
        outcomes = run([s.point(load) for s, load in live])
        for (s, load), outcome in zip(live, outcomes):
            if outcome.doc is None:
                s.error = f"probe at load x{load:g} failed: {outcome.error}"
                continue
            s.docs[load] = outcome.doc
            s.bisection.record(load, passes(outcome.doc, target))


def make_searches(base: Mapping[str, Any], policies: Sequence[str], label: str, *, start: float = 1.0,
                  low: float = 1 / 64, high: float = 64.0, tolerance: float = 0.05) -> list[Search]:
    """One search per policy, all validated before any probe runs."""
    if not policies:
        raise ConfigError("--policies: give at least one policy")
    if not 0 < tolerance < 1:
        raise ConfigError(f"--tolerance: must be in (0, 1), got {tolerance}")
    if not 0 < low <= start <= high:
        raise ConfigError(f"--start: must be in [low, high] = [{low:g}, {high:g}] and > 0, got {start:g}")
    high = min(high, highest_load(base))
    searches = []
    for policy in policies:
        table = with_overrides(base, {"scheduler.policy": policy})
        s = Search({"scenario": label, "policy": policy}, table, Bisection(min(start, high), low, high, tolerance))
        s.point(s.bisection.start)  # validates the policy and the table, naming the point
        searches.append(s)
    return searches
