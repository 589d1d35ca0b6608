"""The serving benchmark's order-of-service figure tells a fair policy from FCFS, on the
simulator's run of the flood's arrivals (the HTTP runs are in tests/scheduler/runtime/test_load.py)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from benchmarks.serving import FLOOD, FLOODER, QUIET, overtaken, prompt

pytest.importorskip("starlette", reason="the serving benchmark needs the serve extra: pip install -e '.[serve]'")


def simulated_admissions(policy: str) -> list[tuple[str, float, float]]:
    from sim.cluster import Simulation
    from sim.serve import serve_config_from_dict

    table = tomllib.loads(FLOOD)
    table["scheduler"]["policy"] = policy
    config = serve_config_from_dict(table)
    records = Simulation(config.sim).run().records
    admitted = records[~np.isnan(records["admit"])]
    return [(config.tenants[r["tenant"]], float(r["arrival"]), float(r["admit"])) for r in admitted]


def test_vtc_admits_almost_no_flood_request_ahead_of_a_waiting_quiet_one_and_fcfs_admits_its_queue():
    vtc, fcfs = (overtaken(simulated_admissions(policy), QUIET, FLOODER) for policy in ("vtc", "fcfs"))
    assert set(vtc) == set(QUIET) and max(vtc.values()) <= 3
    assert min(fcfs.values()) >= 100  # mallory's queue holds 120


def test_overtaken_counts_only_admissions_strictly_inside_the_wait():
    rows = [("q", 1.0, 3.0), ("f", 0.0, 1.0), ("f", 0.5, 2.0), ("f", 0.6, 2.5), ("f", 0.7, 3.0), ("f", 4.0, 4.0)]
    assert overtaken(rows, ["q"], "f") == {"q": 2}
    assert overtaken([("f", 0.0, 0.0)], ["q"], "f") == {"q": 0}


def test_prompt_has_the_asked_number_of_tokens():
    from scheduler.runtime.api import count_tokens

    assert [count_tokens(prompt(n)) for n in (1, 64, 512)] == [1, 64, 512]


@pytest.mark.slow
def test_the_health_benchmark_holds_its_streams_open_while_it_probes():
    import anyio

    from benchmarks.serving import report_health, run_health

    r = anyio.run(run_health, 8, 0.5)
    assert (r["streams"], r["peak_streams"], r["open_after_probe"]) == (8, 8, 8)
    assert r["idle"]["probes"] >= 1 and r["busy"]["probes"] >= 1 and r["tokens_per_s"] > 0
    assert "8 streams open" in report_health([r])
