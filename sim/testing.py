"""A kit for property-testing schedulers and policies, yours included.

Hypothesis strategies generate tenants and workloads; `run_policy` simulates a workload under any
policy (a name, or an instance of your own `scheduler.policies.Policy` subclass) on a small
simulated pool; the checkers assert the bounds fairbatch promises and raise AssertionError with
what broke:

- `check_conservation`: every request ends exactly once (finished, or rejected with a reason);
- `check_work_conserving`: no worker idles while a request waits in the queue it serves;
- `check_service_gap`: two tenants backlogged together receive service within a bound
  (`vtc_bound` states VTC's on one worker, `vtc_pool_bound` on a pool, late or early binding);
- `check_service_gap_per_worker`: the same for tenants pinned to one worker's queue, the only
  pairs early binding bounds;
- `check_no_overtaking`: no request is admitted after one that arrived a stated time later than it
  (the starvation bound of priority with aging).

`wrong_values(kind)` draws TOML values that are not of a config key's kind (`sim.validation`'s
NUMBER, INTEGER, ...), for testing that a loader names the key instead of computing garbage.

Needs hypothesis (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from scheduler.core import SchedulerConfig
from scheduler.outcomes import Outcome
from scheduler.policies import Policy

from .cluster import Simulation
from .config import SimConfig
from .results import RunData, Timeline, max_service_gap
from .validation import BOOLEAN, INTEGER, LENGTH, LIST, NUMBER, STRING, TABLE
from .workload import LengthDist, TenantSpec, Workload

# ----- strategies -------------------------------------------------------------------------------

# What each kind's type is (values of it may still be out of range).
ACCEPTS: dict[str, Callable[[Any], bool]] = {
    NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
    STRING: lambda v: isinstance(v, str),
    BOOLEAN: lambda v: isinstance(v, bool),
    TABLE: lambda v: isinstance(v, dict),
    LIST: lambda v: isinstance(v, list),
    LENGTH: lambda v: isinstance(v, dict) or (isinstance(v, int) and not isinstance(v, bool)),
}
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)
_SCALARS = st.one_of(_TEXT, st.integers(), st.floats(), st.booleans(), st.dates(), st.times(), st.datetimes())
TOML_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.from_regex(r"[a-z]{1,5}", fullmatch=True), inner, max_size=3), max_leaves=5)


def wrong_values(kind: str) -> st.SearchStrategy:
    """Any TOML value (scalars, dates, arrays, tables) whose type a key of `kind` does not take."""
    return TOML_VALUES.filter(lambda v: not ACCEPTS[kind](v))



@st.composite
def tenant_specs(draw, min_size: int = 2, max_size: int = 4, weighted: bool = True, priorities: bool = False):
    """Tenants named t0, t1, ... with weights in [0.5, 4] (or 1) and priorities in [0, 3] (or 0)."""
    n = draw(st.integers(min_size, max_size))
    weight = st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0]) if weighted else st.just(1.0)
    priority = st.integers(0, 3) if priorities else st.just(0)
    return tuple(
        TenantSpec(f"t{i}", weight=draw(weight), priority=draw(priority), rate=1.0,
                   prompt=LengthDist("fixed", (1,)), output=LengthDist("fixed", (1,)))
        for i in range(n)
    )


@st.composite
def workloads(draw, tenants=None, max_requests: int = 60, max_prompt: int = 1024, max_output: int = 128,
              horizon_s: float = 5.0, max_new_tokens: int | None = None):
    """Requests at arbitrary times in [0, horizon_s) from the tenants, with arbitrary lengths."""
    specs = draw(tenant_specs() if tenants is None else tenants)
    n = draw(st.integers(1, max_requests))
    times = draw(st.lists(st.floats(0, horizon_s, exclude_max=True), min_size=n, max_size=n))
    who = draw(st.lists(st.integers(0, len(specs) - 1), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, max_prompt), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, max_output), min_size=n, max_size=n))
    return make_workload(specs, times, who, prompts, outputs, max_new_tokens or max_output)


@st.composite
def backlogged_workloads(draw, tenants=None, per_tenant: int = 40, max_prompt: int = 512, max_output: int = 64):
    """Every tenant submits `per_tenant` requests at t=0: all stay backlogged for a long time."""
    specs = draw(tenant_specs() if tenants is None else tenants)
    n = per_tenant * len(specs)
    prompts = draw(st.lists(st.integers(1, max_prompt), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, max_output), min_size=n, max_size=n))
    who = [i % len(specs) for i in range(n)]
    return make_workload(specs, [0.0] * n, who, prompts, outputs, max_output)


def make_workload(specs, times, tenants, prompts, outputs, max_new_tokens: int) -> Workload:
    order = np.argsort(np.asarray(times, dtype=float), kind="stable")
    return Workload(
        tenants=tuple(specs),
        arrival_s=np.asarray(times, dtype=float)[order],
        tenant=np.asarray(tenants, dtype=np.int32)[order],
        prompt_tokens=np.asarray(prompts, dtype=np.int64)[order],
        output_tokens=np.asarray(outputs, dtype=np.int64)[order],
        max_new_tokens=np.full(len(order), max_new_tokens, dtype=np.int64),
    )


# ----- running ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    simulation: Simulation
    data: RunData


def run_policy(policy: str | Policy, workload: Workload, *, workers: int = 1, kv_tokens: int | None = None,
               scheduler: SchedulerConfig | None = None, placement: str = "global",
               sample_interval_s: float = 0.01, gpu: str = "h100", model: str = "llama-3-8b") -> Run:
    """Simulate `workload` under `policy` on `workers` simulated GPUs until every request ends.

    `kv_tokens` shrinks each worker's KV cache to that many tokens, in whole blocks (small caches make
    preemption and the service-gap bound bite).
    """
    config = SimConfig(sample_interval_s=sample_interval_s, tenants=workload.tenants)
    config = replace(config, cluster=replace(config.cluster, workers=workers, gpu=gpu, model=model),
                     scheduler=scheduler or SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=16))
    config = replace(config, policy=replace(config.policy, placement=placement))
    if kv_tokens is not None:
        blocks = kv_tokens // config.scheduler.block_size
        config = replace(config, cluster=replace(config.cluster, num_gpu_blocks=blocks))
    if isinstance(policy, str):
        config = replace(config, policy=replace(config.policy, policy=policy))
        policy = None
    simulation = Simulation(config, workload, policy)
    return Run(simulation, simulation.run())


# ----- checkers ---------------------------------------------------------------------------------


def check_conservation(run: Run) -> None:
    """Every request finished or was rejected with a reason; outputs never exceed max_new_tokens."""
    rec = run.data.records
    outcome = rec["outcome"]
    ended = (outcome == Outcome.FINISHED.code) | ((outcome == Outcome.REJECTED.code) & (rec["reason"] >= 0))
    assert ended.all(), f"requests {rec['id'][~ended][:10].tolist()} did not end (outcomes {rec['outcome'][~ended][:10]})"
    finished = rec[rec["outcome"] == Outcome.FINISHED.code]
    limit = run.simulation.workload.max_new_tokens[finished["id"]]
    assert (finished["output_tokens"] <= limit).all(), "a request generated more than max_new_tokens"
    assert (finished["output_tokens"] >= 1).all(), "a finished request emitted no token"
    assert run.simulation.scheduler.num_live == 0, f"{run.simulation.scheduler.num_live} requests still live"


def check_work_conserving(run: Run) -> None:
    """No worker went idle while a request waited in a queue it serves."""
    idle = run.simulation.idle_while_waiting
    assert not idle, f"worker idled while requests waited, at (time, worker) {idle[:5]}"


def vtc_bound(workload: Workload, kv_tokens: int, w_p: float = 1.0, w_q: float = 2.0) -> float:
    """VTC's bound on the service gap of two tenants backlogged together on one worker.

    Sheng et al. prove |W_f - W_g| <= 2U for U = max(w_p * L_input, w_q * M), L_input the longest
    prompt and M the most tokens a running batch holds (here the KV capacity). With weights the
    counters are service / weight; a counter moves by at most U / w in one admission or while the
    batch is full, so the weight-normalised gap is bounded by 2U / min(w) over the tenants.
    """
    longest = int(workload.prompt_tokens.max())
    u = max(w_p * longest, w_q * kv_tokens)
    return 2 * u / min(spec.weight for spec in workload.tenants)


LATE, EARLY = "late", "early"  # the pool's one queue (placement "global"), or a queue per worker


def binding_of(placement: str) -> str:
    """LATE for the placement "global" (one queue for the pool), EARLY for the routers."""
    return LATE if placement == "global" else EARLY


def vtc_pool_bound(workload: Workload, kv_tokens: int, workers: int, binding: str,
                   w_p: float = 1.0, w_q: float = 2.0) -> float:
    """VTC's bound on the service gap of two tenants backlogged together on a pool of `workers`.

    Late binding (one queue for the pool): the one-worker proof holds with M the pool's batch,
    `workers` x kv_tokens. Every admission, on whichever worker, takes the head of the tenant with
    the smallest counter and charges its prompt at once, so a worker admitting a moment after
    another already sees that charge: when f is admitted, C_f <= C_g, and right after it
    C_f - C_g <= w_p * L_input / w_f. Between two of g's admissions f may be admitted on several
    workers, but each time only while C_f <= C_g still, so its prompts add no more. What f's
    counter gains without an admission is the output of its requests in flight, and those are on
    any worker: at most the tokens the whole pool's KV holds, w_q * workers * M. So
    U = max(w_p * L_input, w_q * workers * M) and |W_f - W_g| <= 2U / min(w).

    Early binding (a queue per worker, counters shared): no bound holds between tenants that wait
    in different workers' queues. A request is bound at arrival and each worker admits by counter
    among its own queue only, so two workers serving two tenants each give a tenant of weight 1
    on one four times the normalised rate of a tenant of weight 4 on the other, however low its
    counter: the gap grows with the length of the backlog, not with M. What holds is the
    one-worker bound, `vtc_bound`, between two tenants pinned to the same worker (all their
    requests wait in its queue and run on it): their counters move only by that worker's service
    and it admits the smaller, so Sheng et al.'s argument applies with that worker's M. That
    bound is returned; `check_service_gap_per_worker` checks it. It needs the lift to read the
    queue the tenant joins: a tenant lifted only to the smallest counter among tenants waiting
    on any worker is owed the difference on its own, and takes it from the tenant beside it.
    """
    if binding == EARLY:
        return vtc_bound(workload, kv_tokens, w_p, w_q)
    if binding != LATE:
        raise ValueError(f"binding: {LATE!r} or {EARLY!r}, got {binding!r}")
    return vtc_bound(workload, workers * kv_tokens, w_p, w_q)


def tenants_pinned_to(run: Run) -> dict[int, list[int]]:
    """Per worker, the tenants every one of whose admitted requests ran on that worker alone."""
    rec = run.data.records
    admitted = rec[~np.isnan(rec["admit"])]
    pinned: dict[int, list[int]] = {}
    for tenant in np.unique(admitted["tenant"]):
        workers = np.unique(admitted["worker"][admitted["tenant"] == tenant])
        if workers.size == 1:
            pinned.setdefault(int(workers[0]), []).append(int(tenant))
    return pinned


def check_service_gap_per_worker(run: Run, bound: float) -> float:
    """The largest service gap between two tenants backlogged together and pinned to the same
    worker (`tenants_pinned_to`): the pairs early binding bounds (`vtc_pool_bound`)."""
    timeline, worst = run.data.timeline, 0.0
    for worker, tenants in tenants_pinned_to(run).items():
        if len(tenants) < 2:
            continue
        gap = max_service_gap(Timeline(timeline.time, timeline.service[:, tenants],
                                       timeline.backlogged[:, tenants]))
        value = 0.0 if gap.gap is None else gap.gap
        pair = None if gap.pair is None else tuple(tenants[i] for i in gap.pair)
        assert value <= bound, (f"service gap {value:.1f} between tenants {pair} on worker {worker} exceeds "
                                f"the bound {bound:.1f}")
        worst = max(worst, value)
    return worst


def check_service_gap(run: Run, bound: float) -> float:
    """The largest gap in weight-normalised service between two tenants backlogged together."""
    gap = max_service_gap(run.data.timeline)
    value = 0.0 if gap.gap is None else gap.gap
    assert value <= bound, f"service gap {value:.1f} between tenants {gap.pair} exceeds the bound {bound:.1f}"
    return value


def check_no_overtaking(run: Run, slack_s: Callable[[int], float]) -> None:
    """No request is admitted after another that arrived more than slack_s(its index) later.

    For priority with aging a, slack_s(i) = (p_i - p_min) / a is the starvation bound: request i
    waits only for requests that arrived before arrival_i + slack_s(i).
    """
    rec = run.data.records
    admitted = rec[~np.isnan(rec["admit"])]
    for row in admitted:
        later = admitted["arrival"] > row["arrival"] + slack_s(int(row["id"])) + 1e-9
        overtakers = admitted[later & (admitted["admit"] < row["admit"])]
        assert not len(overtakers), (
            f"request {row['id']} (arrived {row['arrival']:.3f}, admitted {row['admit']:.3f}) was overtaken by "
            f"{overtakers['id'][:5].tolist()} that arrived after {row['arrival'] + slack_s(int(row['id'])):.3f}"
        )
