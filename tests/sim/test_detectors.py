"""The detectors: each finds what it is built to find on a run made by hand, and none where the
policy cannot have one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sim_configs import tight_config

from scheduler.decisions import BLOCKED, Candidate, Decision
from scheduler.errors import ConfigError
from scheduler.outcomes import Outcome
from sim.cluster import Simulation
from sim.detectors import detect, format_detectors, head_of_line_blocking, placement_regret, \
    priority_inversions, starvation
from sim.results import RECORD_DTYPE, RunData, TenantInfo, Timeline

NAN = math.nan


def records(*rows) -> np.ndarray:
    """rows of (tenant, worker, arrival, admit)."""
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for i, (tenant, worker, arrival, admit) in enumerate(rows):
        out[i] = (i, tenant, worker, arrival, admit, NAN, NAN, 10, 0, Outcome.UNFINISHED.code, -1, 0)
    return out


def test_a_worse_class_admitted_while_a_better_one_waits_is_an_inversion():
    # tenant 0 is the better class (priority 0); its request 1 waits from 1.0 to 3.0 while tenant 1's
    # request 2 is admitted at 2.0
    recs = records((1, 0, 0.0, 0.5), (0, 0, 1.0, 3.0), (1, 0, 1.5, 2.0))
    assert priority_inversions(recs, [0, 1], early_binding=False) == {"count": 1, "better_waiting_max": 1}
    assert priority_inversions(recs, [0, 0], early_binding=False)["count"] == 0  # one class: none
    # admitted the same instant as the worse one: not waiting then
    assert priority_inversions(records((0, 0, 1.0, 2.0), (1, 0, 1.5, 2.0)), [0, 1], False)["count"] == 0


def test_early_binding_counts_only_a_better_request_waiting_on_the_same_worker():
    recs = records((0, 1, 1.0, 3.0), (1, 0, 1.5, 2.0))
    assert priority_inversions(recs, [0, 1], early_binding=True)["count"] == 0
    assert priority_inversions(recs, [0, 1], early_binding=False)["count"] == 1


@pytest.mark.parametrize("placement", ["global", "round_robin"])
def test_strict_priority_has_no_inversions_and_fcfs_has_some(placement):
    def inversions(policy):
        config = tight_config(seed=5, duration_s=6, scheduler={"policy": policy, "placement": placement})
        data = Simulation(config).run()
        return priority_inversions(data.records, [0, 1], early_binding=placement != "global")["count"]

    assert inversions("priority") == 0
    assert inversions("fcfs") > 0


def timeline(time, service, backlogged) -> RunData:
    tl = Timeline(np.array(time, float), np.array(service, float), np.array(backlogged, bool))
    return RunData(records=np.zeros(0, RECORD_DTYPE), itl_values=np.zeros(0), itl_weights=np.zeros(0),
                   duration_s=float(time[-1]), tenants=(TenantInfo("a"), TenantInfo("b")), workers=(), timeline=tl)


def test_a_backlogged_tenant_without_service_past_the_threshold_starves():
    t = list(range(12))
    service = [[i * 10, 5 if 2 <= i <= 9 else i] for i in t]  # b is flat from 2 to 9: 7 s
    backlogged = [[True, True]] * 12
    found = starvation(timeline(t, service, backlogged), 5.0)
    assert found == {"threshold_s": 5.0, "episodes": 1, "longest_s": 7.0, "by_tenant": {"b": 1}}
    assert starvation(timeline(t, service, backlogged), 8.0)["episodes"] == 0
    idle = [[True, i not in (5, 6)] for i in t]  # not backlogged in the middle: two short spells
    assert starvation(timeline(t, service, idle), 5.0)["episodes"] == 0


def test_regret_compares_each_wait_with_the_next_wait_seen_on_another_worker():
    # request 0 on worker 0 waits 2 s; worker 1's next arrival waits 0.5 s: regret 1.5 s
    recs = records((0, 0, 1.0, 3.0), (0, 1, 1.2, 1.7), (0, 1, 5.0, 5.1))
    found = placement_regret(recs)
    assert found["placements"] == 3 and found["positive"] == 1
    assert found["max_ms"] == pytest.approx(1500.0) and found["total_s"] == pytest.approx(1.5)


def blocked(fits: bool) -> Decision:
    head = Candidate(1, 0, 0.0, (("submitted", 1),), False)
    other = Candidate(2, 1, 0.5, (("submitted", 2),), fits)
    return Decision(BLOCKED, 1.0, 0, head, (head, other), (1, 1))


def test_head_of_line_blocking_counts_blocked_heads_with_a_request_that_fits_behind():
    assert head_of_line_blocking([blocked(True), blocked(False), blocked(True)]) == {"episodes": 2, "requests": 1}


def test_the_detectors_of_a_run_are_json_ready_and_print_in_a_line():
    config = tight_config(scheduler={"placement": "round_robin"})
    sim = Simulation(config, record_decisions=True)
    data = sim.run()
    found = detect(data, [0, 1], early_binding=True, decisions=sim.decisions)
    assert found["head_of_line_blocking"]["episodes"] >= 0 and found["placement_regret"]["placements"] > 0
    text = format_detectors(found)
    assert text.startswith("Detectors") and "placement regret" in text
    late = detect(data, [0, 1], early_binding=False)
    assert late["head_of_line_blocking"] is None and late["placement_regret"] is None
    assert "needs --decisions" in format_detectors(late)
    with pytest.raises(ConfigError, match="--starvation-s: must be a number of seconds > 0"):
        detect(data, [0, 1], False, starvation_s=0)
