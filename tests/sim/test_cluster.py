import json
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from sim.cluster import Simulation, simulate
from sim.config import config_to_dict
from scheduler.outcomes import Outcome, RejectReason
from sim.results import summarize

from sim_configs import small_config

FINISHED = Outcome.FINISHED.code


def test_every_request_ends_once_and_timestamps_are_causal():
    data = simulate(small_config())
    rec = data.records
    assert len(rec) > 100
    assert np.all(rec["outcome"] == FINISHED)
    assert np.all(rec["arrival"] <= rec["admit"])
    assert np.all(rec["admit"] <= rec["first_token"])
    assert np.all(rec["first_token"] <= rec["finish"])
    assert np.all(rec["output_tokens"] >= 1)


def test_outputs_stop_at_true_length_or_max_new_tokens():
    sim = Simulation(small_config())
    data = sim.run()
    expected = np.minimum(sim.workload.output_tokens, sim.workload.max_new_tokens)
    assert np.array_equal(data.records["output_tokens"], expected)
    assert data.records["output_tokens"][data.records["tenant"] == 1].max() == 40


def test_same_seed_gives_byte_identical_results_and_another_seed_differs():
    def run(seed):
        config = small_config(seed=seed)
        return json.dumps({"config": config_to_dict(config), **summarize(simulate(config))}, allow_nan=False)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_worker_accounting_is_consistent():
    data = simulate(small_config())
    total_tokens = sum(w.token_steps for w in data.workers)
    rec = data.records
    # every prompt token and every output token but the last of each request is computed at least once
    assert total_tokens >= int(rec["prompt_tokens"].sum() + rec["output_tokens"].sum() - len(rec))
    for worker in data.workers:
        assert 0 < worker.busy_s <= data.duration_s
        assert worker.seq_steps >= worker.steps


def test_prompt_too_long_is_rejected_and_counted_not_a_hang():
    config = small_config(tenants=[
        {"name": "ok", "rate": 2.0, "prompt_tokens": 100, "output_tokens": 10},
        {"name": "huge", "rate": 1.0, "prompt_tokens": 5_000_000, "output_tokens": 10},
    ])
    data = simulate(config)
    rec = data.records
    huge = rec["tenant"] == 1
    assert huge.sum() > 5
    assert np.all(rec["outcome"][huge] == Outcome.REJECTED.code)
    assert np.all(rec["reason"][huge] == RejectReason.PROMPT_TOO_LONG.code)
    assert np.all(rec["outcome"][~huge] == FINISHED)
    assert summarize(data)["summary"]["rejected_by_reason"] == {"prompt_too_long": int(huge.sum())}


def test_kv_pressure_preempts_and_still_finishes_everything():
    config = small_config(
        cluster={"workers": 1}, scheduler={"num_gpu_blocks": 772},
        tenants=[{"name": "a", "rate": 20.0, "prompt_tokens": 2000, "output_tokens": 600}],
    )
    sim = Simulation(config)
    data = sim.run()
    assert sum(w.preemptions for w in data.workers) > 0
    assert data.records["preemptions"].sum() == sum(w.preemptions for w in data.workers)
    assert np.all(data.records["outcome"] == FINISHED)
    assert np.all(data.records["output_tokens"] == 600)


def test_horizon_stops_the_run_and_leaves_requests_unfinished():
    data = simulate(small_config(horizon_s=5.0))
    rec = data.records
    assert data.duration_s <= 5.0
    assert np.any(rec["outcome"] == Outcome.UNFINISHED.code)
    assert np.all(np.isnan(rec["finish"][rec["outcome"] == Outcome.UNFINISHED.code]))


def test_timeline_samples_service_per_tenant():
    data = simulate(small_config())
    tl = data.timeline
    assert tl.service.shape == (len(tl.time), 2)
    assert np.all(np.diff(tl.time) > 0)
    assert np.all(np.diff(tl.service, axis=0) >= 0)
    assert tl.service[-1].sum() > 0


@settings(max_examples=15, deadline=None)
@given(
    policy=st.sampled_from(["fcfs", "vtc"]),
    placement=st.sampled_from(["global", "round_robin", "least_loaded"]),
    workers=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_any_policy_and_placement_conserve_requests(policy, placement, workers, seed):
    config = small_config(seed=seed, duration_s=5, cluster={"workers": workers},
                          scheduler={"policy": policy, "placement": placement})
    data = simulate(config)
    rec = data.records
    assert np.all(rec["outcome"] == FINISHED)
    done = rec[~np.isnan(rec["first_token"])]
    assert np.all(done["arrival"] <= done["admit"]) and np.all(done["admit"] <= done["first_token"])
    assert not math.isnan(data.duration_s)
