"""A bounded load test over real HTTP on loopback: hundreds of concurrent streams from four tenants,
one of them flooding at about 2.5 times what the pool can serve (benchmarks/serving.py's flood,
which also reports the wall-clock figures: TTFT against the simulator's prediction).

Only what cannot depend on the machine's speed is checked here, so a saturated machine passes:
every request ends exactly once (finished, cancelled as some clients hang up mid-stream, or
rejected with a reason), the server's counts and its /metrics agree with what the clients saw,
and VTC serves a quiet tenant's waiting request before the flooder's queue (order, not time).
"""

from __future__ import annotations

import tomllib

import pytest

from benchmarks.serving import FLOOD, FLOODER, QUIET, counter_samples, overtaken, run_flood

OUTCOMES = ("finished", "cancelled", "rejected")
# Flood requests admitted while one quiet request waited, at most: the simulator's run of the same
# arrivals has 0 to 3 under VTC and 110 to 120 (the flooder's whole queue) under FCFS
# (tests/benchmarks/test_serving.py checks both).
FLOOD_AHEAD_AT_MOST = 12


@pytest.fixture
def anyio_backend():
    return "asyncio"


def metric_counts(text: str) -> dict[tuple[str, str], float]:
    """fairbatch_requests_total by (tenant, outcome), from the /metrics text."""
    samples = counter_samples(text, "fairbatch_requests")
    return {(labels["tenant"], labels["outcome"]): value for labels, value in samples}


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_flood_over_http_loses_nothing_and_the_quiet_tenants_go_first():
    run = await run_flood()
    results, counts, workload = run["results"], run["counts"], run["workload"]
    # Every request ended exactly once, as the client saw it and as the server counted it.
    assert sorted(r["id"] for r in results) == list(range(len(workload))) and len(workload) >= 300
    outcomes = [r["outcome"] for r in results]
    assert set(outcomes) == set(OUTCOMES)
    assert counts["submitted"] == sum(counts[k] for k in OUTCOMES) == len(workload)
    assert [counts[k] for k in OUTCOMES] == [outcomes.count(k) for k in OUTCOMES]
    assert {r["reason"] for r in results if r["outcome"] == "rejected"} == {"queue_full"}
    assert all(r["tokens"] == workload.output_tokens[r["id"]] for r in results if r["outcome"] == "finished")
    scraped = metric_counts(run["metrics"])
    for tenant in run["tenants"]:
        for outcome in OUTCOMES:
            seen = sum(1 for r in results if r["tenant"] == tenant and r["outcome"] == outcome)
            assert scraped.get((tenant, outcome), 0) == seen, (tenant, outcome)
    # A queue_full rejection came when the flooder's queue held its cap, each of those requests
    # with its stream open: that many streams were open at once, however fast the machine.
    cap = next(t["max_queued"] for t in tomllib.loads(FLOOD)["tenants"] if t["name"] == FLOODER)
    assert run["kv_used"] == [0] and run["peak_streams"] > cap
    # The flooder's queue never goes ahead of a quiet tenant's waiting request.
    assert len(run["admissions"]) == counts["submitted"] - counts["rejected"]
    assert max(overtaken(run["admissions"], QUIET, FLOODER).values()) <= FLOOD_AHEAD_AT_MOST
