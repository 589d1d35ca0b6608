"""Detectors over a finished run: the ways scheduling goes wrong, counted.

`detect()` reads a run's records and fairness timeline (sim.results.RunData) and, when they were
kept, the core's decision records (scheduler.decisions), and returns a JSON-ready dict:

- priority_inversions: admissions of a request while a request of a strictly better class (a
  lower tenant priority) was waiting in a queue the admitting worker serves (the pool's queue under
  late binding: every worker serves it; under early binding the worker's own). Counted over first
  admissions: a request waits from its arrival to its first admission (or the end of the run),
  strictly after arriving and until the instant it is admitted (or cancelled; a rejected request
  never waits). `count` is the admissions, and
  `better_waiting_max` the most better-class requests waiting at one of them. A strict priority
  policy has none; fcfs and the fair policies have them whenever a worse class is served first.
  Under early binding a request never admitted has no known worker and is left out.
- head_of_line_blocking: from the decision records' "blocked" entries: a step had tokens and
  sequence slots left, the policy's next request did not fit the worker's KV, and another tenant's
  first request in the queue would have fitted. `episodes` counts them (a worker's blocked head,
  recorded once while it stays the same), `requests` the distinct requests that would have fitted.
  None when the run kept no decision records (`fairbatch simulate --decisions`).
- starvation: episodes in which a tenant was backlogged at every sample and its service did not
  grow, lasting longer than `threshold_s`, measured on the fairness timeline (one sample every
  sample_interval_s, so to that resolution). `episodes`, `longest_s`, and `by_tenant`.
- placement_regret (routers, that is early binding only; None under late binding): for each
  admitted request placed on worker c, its queue wait w_c (first admission - arrival) against the
  best worker in hindsight, estimated per worker w != c as the queue wait of the first request of
  the same tenant placed on w that arrived at or after it (BLIS's counterfactual regret, with each
  worker's next observed wait as the counterfactual; the same tenant's, since a fair policy's wait
  depends on the tenant as much as on the worker). regret = w_c - min(w_c, min over w of that estimate) >= 0.
  Reported: placements, positive (how many have regret > 0), mean_ms, p99_ms, max_ms, total_s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scheduler.decisions import BLOCKED, Decision
from scheduler.errors import ConfigError
from scheduler.outcomes import Outcome

from .results import RunData, finite_or_none

DEFAULT_STARVATION_S = 5.0


def detect(data: RunData, priorities: Sequence[int], early_binding: bool,
           decisions: Sequence[Decision] | None = None, starvation_s: float = DEFAULT_STARVATION_S) -> dict:
    """Every detector's figures for one run (see the module docstring); None where not measured."""
    if not (isinstance(starvation_s, (int, float)) and starvation_s > 0 and math.isfinite(starvation_s)):
        raise ConfigError(f"--starvation-s: must be a number of seconds > 0, got {starvation_s!r}")
    return finite_or_none({
        "priority_inversions": priority_inversions(data.records, priorities, early_binding),
        "head_of_line_blocking": None if decisions is None else head_of_line_blocking(decisions),
        "starvation": starvation(data, starvation_s),
        "placement_regret": placement_regret(data.records) if early_binding else None,
    })


def priority_inversions(records: np.ndarray, priorities: Sequence[int], early_binding: bool) -> dict:
    records = records[records["outcome"] != Outcome.REJECTED.code]  # a rejected request never waited
    classes = np.asarray(priorities, dtype=np.int64)[records["tenant"]] if len(records) else np.zeros(0, np.int64)
    # the end of its wait: its first admission, or its end if it was cancelled before one
    admit = np.where(np.isfinite(records["admit"]), records["admit"], records["finish"])
    arrival = records["arrival"]
    admitted = np.isfinite(records["admit"])
    groups = np.unique(records["worker"][admitted]) if early_binding else [None]
    count, most = 0, 0
    for worker in groups:
        mine = records["worker"] == worker if early_binding else np.ones(len(records), bool)
        events = mine & admitted
        waiting = np.zeros(int(events.sum()), dtype=np.int64)
        times, event_class = records["admit"][events], classes[events]
        for better in np.unique(classes[mine]):
            waits = _waiting_at(times, arrival[mine & (classes == better)], admit[mine & (classes == better)])
            waiting += np.where(event_class > better, waits, 0)
        count += int(np.count_nonzero(waiting))
        most = max(most, int(waiting.max(initial=0)))
    return {"count": count, "better_waiting_max": most}


def _waiting_at(times: np.ndarray, arrival: np.ndarray, admit: np.ndarray) -> np.ndarray:
    """How many of the requests (arrival, first admit; NaN: never) wait at each of `times`:
    arrived strictly before it and not admitted at or before it."""
    arrived = np.searchsorted(np.sort(arrival), times, side="left")
    done = np.sort(admit[np.isfinite(admit)])
    admitted = np.searchsorted(done, times, side="right")
    instant = np.sort(admit[np.isfinite(admit) & (admit == arrival)])  # admitted the instant they arrived
    admitted -= np.searchsorted(instant, times, side="right") - np.searchsorted(instant, times, side="left")
    return arrived - admitted


def head_of_line_blocking(decisions: Sequence[Decision]) -> dict:
    episodes, behind = 0, set()
    for decision in decisions:
        if decision.kind != BLOCKED:
            continue
        fitting = [c.request_id for c in decision.candidates if c.fits]
        if fitting:
            episodes += 1
            behind.update(fitting)
    return {"episodes": episodes, "requests": len(behind)}


def starvation(data: RunData, threshold_s: float) -> dict:
    time, service, backlogged = data.timeline.time, data.timeline.service, data.timeline.backlogged
    names = [t.name for t in data.tenants]
    by_tenant: dict[str, int] = {}
    longest = 0.0
    if time.size > 1:
        # an interval between two samples is starved when the tenant is backlogged at both and
        # its service did not grow across it
        flat = backlogged[1:] & backlogged[:-1] & (service[1:] <= service[:-1])
        dt = np.diff(time)
        for tenant in range(flat.shape[1]):
            for start, end in _runs(flat[:, tenant]):
                span = float(dt[start:end].sum())
                if span > threshold_s:
                    by_tenant[names[tenant]] = by_tenant.get(names[tenant], 0) + 1
                    longest = max(longest, span)
    return {"threshold_s": float(threshold_s), "episodes": sum(by_tenant.values()), "longest_s": longest,
            "by_tenant": by_tenant}


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def placement_regret(records: np.ndarray) -> dict:
    admitted = records[np.isfinite(records["admit"]) & (records["worker"] >= 0)]
    wait = admitted["admit"] - admitted["arrival"]
    best = wait.copy()
    for tenant in np.unique(admitted["tenant"]):
        mine = admitted["tenant"] == tenant  # a fair policy's wait depends on the tenant: compare like with like
        for worker in np.unique(admitted["worker"]):
            on = mine & (admitted["worker"] == worker)
            order = np.argsort(admitted["arrival"][on], kind="stable")
            arrivals, waits = admitted["arrival"][on][order], wait[on][order]
            nxt = np.searchsorted(arrivals, admitted["arrival"], side="left")
            has = mine & (admitted["worker"] != worker) & (nxt < arrivals.size)  # another worker's next wait
            estimate = np.where(has, waits[np.minimum(nxt, max(arrivals.size - 1, 0))], np.inf)
            best = np.minimum(best, estimate)
    regret = wait - best
    if regret.size == 0:
        return {"placements": 0, "positive": 0, "mean_ms": None, "p99_ms": None, "max_ms": None, "total_s": 0.0}
    return {"placements": int(regret.size), "positive": int(np.count_nonzero(regret > 0)),
            "mean_ms": float(regret.mean() * 1e3), "p99_ms": float(np.percentile(regret, 99) * 1e3),
            "max_ms": float(regret.max() * 1e3), "total_s": float(regret.sum())}


def format_detectors(found: dict) -> str:
    """One line (or two) for the terminal report."""
    inv, hol, starve, regret = (found[k] for k in ("priority_inversions", "head_of_line_blocking", "starvation",
                                                   "placement_regret"))
    parts = [f"priority inversions {inv['count']:,}",
             "head-of-line blocking - (needs --decisions)" if hol is None else
             f"head-of-line blocking {hol['episodes']:,} ({hol['requests']:,} requests behind)",
             f"starvation {starve['episodes']:,} (> {starve['threshold_s']:g} s"
             + (f", longest {starve['longest_s']:.1f} s)" if starve["episodes"] else ")")]
    line = f"{'Detectors':<12}" + ", ".join(parts)
    if regret is not None:
        mean = "-" if regret["mean_ms"] is None else f"{regret['mean_ms']:,.1f}"
        p99 = "-" if regret["p99_ms"] is None else f"{regret['p99_ms']:,.1f}"
        line += (f"\n{'':<12}placement regret: {regret['positive']:,} of {regret['placements']:,} placements, "
                 f"mean {mean} ms, p99 {p99} ms")
    return line
