"""Fast-forward (the core's `repeat`, run as one event) gives the results of stepping one at a time."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scheduler.core import SchedulerConfig
from sim.cluster import Simulation
from sim.config import SimConfig
from sim.testing import tenant_specs, workloads

TIMES = ("admit", "first_token", "finish")
COUNTS = ("outcome", "reason", "output_tokens", "preemptions", "worker")


def run_both(workload, policy, workers, placement, kv_blocks, max_num_seqs):
    base = SimConfig(tenants=workload.tenants, sample_interval_s=0.05)
    base = dataclasses.replace(
        base,
        cluster=dataclasses.replace(base.cluster, workers=workers, num_gpu_blocks=kv_blocks),
        policy=dataclasses.replace(base.policy, policy=policy, placement=placement),
        scheduler=SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=max_num_seqs, block_size=16),
    )
    out = []
    for fast_forward in (True, False):
        sim = Simulation(dataclasses.replace(base, fast_forward=fast_forward), workload)
        out.append((sim, sim.run()))
    return out


def assert_same(fast, slow):
    (fast_sim, a), (slow_sim, b) = fast, slow
    for key in TIMES:
        np.testing.assert_allclose(a.records[key], b.records[key], rtol=1e-9, atol=0, equal_nan=True, err_msg=key)
    for key in COUNTS:
        np.testing.assert_array_equal(a.records[key], b.records[key], err_msg=key)
    for x, y in zip(a.workers, b.workers):
        assert (x.steps, x.seq_steps, x.token_steps, x.preemptions) == (y.steps, y.seq_steps, y.token_steps,
                                                                       y.preemptions)
        assert (x.busy_s, x.kv_block_seconds) == (y.busy_s, y.kv_block_seconds)  # added step by step alike
    np.testing.assert_array_equal(a.itl_values, b.itl_values)
    np.testing.assert_array_equal(a.itl_weights, b.itl_weights)
    np.testing.assert_allclose(a.timeline.service, b.timeline.service, rtol=1e-9)
    assert fast_sim.scheduler.counts == slow_sim.scheduler.counts
    assert fast_sim.scheduler.tenant_service() == slow_sim.scheduler.tenant_service()


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workload=workloads(tenants=tenant_specs(priorities=True), max_requests=40, max_prompt=1500, max_output=300,
                       horizon_s=4.0),
    policy=st.sampled_from(["fcfs", "priority", "vtc", "lcf", "drr", "edf", "slo"]),
    workers=st.integers(1, 3),
    placement=st.sampled_from(["global", "round_robin", "least_loaded"]),
    memory=st.sampled_from([36, 85, None]),  # KV blocks: a few thousand tokens (preemption), or plenty
    max_num_seqs=st.sampled_from([4, 16, 64]),
)
def test_fast_forward_equals_single_stepping(workload, policy, workers, placement, memory, max_num_seqs):
    fast, slow = run_both(workload, policy, workers, placement, memory, max_num_seqs)
    assert_same(fast, slow)


def test_a_run_of_repeats_ages_recent_prefill_as_its_steps_would():
    # Two tenants' prefills, then runs of repeated decodes on four slots: the standing (who is
    # over share) reads each tenant's recent prefill, which halves each step. Aged once per run
    # instead, the latency budget held a prompt back and it was admitted a step earlier than
    # stepping one at a time admits it.
    from sim.testing import make_workload
    from sim.workload import LengthDist, TenantSpec

    tenants = tuple(TenantSpec(name, weight=weight, priority=1, rate=1.0, prompt=LengthDist("fixed", (1,)),
                               output=LengthDist("fixed", (1,))) for name, weight in (("t0", 2.0), ("t1", 1.0)))
    workload = make_workload(tenants, [0.294, 1.582, 0.872, 1.13], [0, 0, 1, 1], [104, 1036, 958, 45],
                             [259, 151, 183, 266], 300)
    assert_same(*run_both(workload, "vtc", 1, "global", 85, 4))


@pytest.mark.parametrize("policy", ["fcfs", "vtc", "drr"])
@pytest.mark.parametrize("load", [1.0, 1.5])
def test_fast_forward_takes_fewer_events_and_gives_the_same_run(policy, load):
    # the default pool: two workers, the pool's queue, prefix caching; at 1.5x a worker's run
    # starts while another's is cut for the queue, and steps sooner
    from sim.config import load_config

    config = load_config(None, {"requests": 300, "scheduler.policy": policy, "load": load})
    fast = Simulation(config)
    slow = Simulation(dataclasses.replace(config, fast_forward=False))
    assert_same((fast, fast.run()), (slow, slow.run()))
    assert fast.loop._seq < slow.loop._seq / 2  # events scheduled


def pool_config(workers: int, tenants: int, pool_rate: float, duration_s: float, **scheduler):
    """A pool under vtc with the pool's queue (late binding): `tenants` tenants of weights 1, 2 or
    4 whose lognormal rate shares sum to pool_rate."""
    from sim.config import config_from_dict

    rng = np.random.default_rng(3)
    weights = rng.choice([1.0, 2.0, 4.0], size=tenants)
    shares = rng.lognormal(0.0, 1.0, size=tenants)
    return config_from_dict({
        "seed": 0, "duration_s": duration_s,
        "cluster": {"workers": workers, "gpu": "h100", "model": "llama-3-8b"},
        "scheduler": {"policy": "vtc", "placement": "global", **scheduler},
        "tenants": [{"name": f"t{i}", "weight": float(w), "rate": float(r), "prompt_tokens": 512,
                     "output_tokens": {"dist": "uniform", "min": 16, "max": 256}, "max_new_tokens": 256}
                    for i, (w, r) in enumerate(zip(weights, pool_rate * shares / shares.sum()))],
    })


@pytest.mark.slow
@pytest.mark.parametrize("load, blocks", [(0.9, None), (1.5, None), (1.2, 800)],
                         ids=["90% load", "overloaded", "KV-bound, preempting"])
def test_fast_forward_equals_single_stepping_on_64_workers_under_vtc(load, blocks):
    # one H100 serves about 20 of these requests per second
    config = pool_config(64, 300, load * 20.0 * 64, 1.5)
    if blocks is not None:
        config = dataclasses.replace(config, cluster=dataclasses.replace(config.cluster, num_gpu_blocks=blocks))
    fast = Simulation(config)
    slow = Simulation(dataclasses.replace(config, fast_forward=False))
    assert_same((fast, fast.run()), (slow, slow.run()))
    assert fast.loop._seq < slow.loop._seq / 2


def test_fast_forward_equals_single_stepping_under_cache_aware_routing():
    # A run's first step completes prompts whose blocks the prefix cache then holds, and the
    # router reads every worker's cache at each arrival: the driver reports those steps before
    # each arrival (without that, at this load the routing differs from single stepping).
    from sim.config import load_config

    scenario = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios" / "prefix_shared.toml"
    config = load_config(scenario, {"requests": 800, "load": 3.0})
    assert config.policy.placement == "prefix_affinity" and config.scheduler.enable_prefix_caching
    fast = Simulation(config)
    slow = Simulation(dataclasses.replace(config, fast_forward=False))
    assert_same((fast, fast.run()), (slow, slow.run()))
