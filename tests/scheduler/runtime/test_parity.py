"""One workload through the simulator and through the runtime on a virtual clock (trio's MockClock,
which jumps to the next deadline whenever every task waits): the same schedule.

Tolerance: times agree to 1e-9 s (in practice they are equal: both add the same step times to
the same start times); admission order and tokens per request are identical.
"""

from __future__ import annotations

import math

import anyio
import numpy as np
import pytest
import trio.lowlevel
from trio.testing import MockClock

from scheduler.outcomes import Outcome
from scheduler.request import Request
from scheduler.runtime import RequestRejected, Runtime, SimPrompt, synthetic_token
from sim.cluster import Simulation
from sim.config import load_config
from sim.serve import build_pool

TOLERANCE_S = 1e-9
SCENARIOS = {
    # The default 4-tenant pool (VTC, 2 workers) at 1.5x load.
    "default": {"requests": 250, "load": 1.5},
    # A small KV cache and heavy load: preemptions and recompute, FCFS, a queue cap (rejections).
    "preempting": {"requests": 250, "load": 5.0, "scheduler.num_gpu_blocks": 1878, "scheduler.policy": "fcfs",
                   "scheduler.max_queued": 100},
    # Early binding: each request waits in one worker's queue.
    "round_robin": {"requests": 200, "load": 2.0, "scheduler.placement": "round_robin",
                    "cluster.workers": 3},
}


async def replay(config, workload) -> dict:
    """Submit every request of `workload` at its arrival time; each one's tokens and times."""
    scheduler, workers = build_pool(config, speed=1.0)
    names = [spec.name for spec in config.tenants]
    seen: dict[int, dict] = {}
    # times are compared on the virtual clock, which no load on the machine can stretch
    assert isinstance(trio.lowlevel.current_clock(), MockClock)
    start = anyio.current_time()  # the runtime's time 0
    async with Runtime(scheduler, workers) as runtime:
        async def client(i: int) -> None:
            await anyio.sleep_until(start + float(workload.arrival_s[i]))
            request = Request(i, names[workload.tenant[i]], int(workload.prompt_tokens[i]),
                              int(workload.max_new_tokens[i]))
            try:
                handle = runtime.submit(request, SimPrompt(output_tokens=int(workload.output_tokens[i])))
            except RequestRejected as err:
                seen[i] = {"rejected": err.reason.value}
                return
            async with handle:
                tokens = await handle.collect()
            seen[i] = {"tokens": tokens, "admit": handle.admitted_at, "first_token": handle.first_token_at,
                       "finish": handle.finished_at}

        async with anyio.create_task_group() as task_group:
            for i in range(len(workload)):
                task_group.start_soon(client, i)
    return seen


@pytest.fixture
def anyio_backend():
    """trio with a fresh virtual clock per test."""
    return "trio", {"clock": MockClock(autojump_threshold=0)}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.anyio
async def test_the_runtime_on_a_virtual_clock_replays_the_simulators_schedule(scenario):
    config = load_config(None, SCENARIOS[scenario])
    simulation = Simulation(config)
    records = simulation.run().records
    seen = await replay(config, simulation.workload)
    assert anyio.current_time() > 5  # virtual seconds went by, not real ones
    assert sorted(seen) == list(range(len(records)))
    finished = sorted(i for i in seen if "tokens" in seen[i])
    assert sorted(i for i in seen if "rejected" in seen[i]) == np.flatnonzero(records["outcome"] == Outcome.REJECTED.code).tolist()
    assert finished == np.flatnonzero(records["outcome"] == Outcome.FINISHED.code).tolist()
    for i in finished:
        assert seen[i]["tokens"] == [synthetic_token(k) for k in range(records["output_tokens"][i])]
        for key in ("admit", "first_token", "finish"):
            assert math.isclose(seen[i][key], records[key][i], rel_tol=0, abs_tol=TOLERANCE_S), (i, key)
    admission = sorted(finished, key=lambda i: (records["admit"][i], i))
    assert admission == sorted(finished, key=lambda i: (seen[i]["admit"], i))
    if scenario == "preempting":
        assert records["preemptions"].sum() > 0 and (records["outcome"] == Outcome.REJECTED.code).sum() > 0
