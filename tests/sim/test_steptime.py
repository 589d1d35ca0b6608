"""Step prices: a plan's step and a run of steps are priced as their steps one by one, to the bit."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.actions import ScheduledItem, StepPlan
from sim.costmodel import RooflineCostModel
from sim.hardware import get_gpu, get_model
from sim.steptime import StepPrices, causal_pairs

WORKERS = [RooflineCostModel(get_gpu(gpu), get_model(model), tensor_parallel=tp)
           for gpu, model, tp in [("h100", "llama-3-8b", 1), ("h100", "llama-3-70b", 4),
                                  ("h100", "mistralai/Mixtral-8x7B-v0.1", 2)]]
prices = st.sampled_from(WORKERS).map(lambda cm: cm.prices)


@st.composite
def plans(draw, completing: bool = False):
    """A plan of decodes and prefill chunks (each completing its prompt when `completing`)."""
    chunks = tuple(
        ScheduledItem(i, draw(st.integers(1, 4096)), draw(st.integers(0, 8192)),
                      True if completing else draw(st.booleans()))
        for i in range(draw(st.integers(0, 4))))
    decodes = draw(st.integers(0 if chunks else 1, 256))
    return StepPlan(0, chunks, decodes, draw(st.integers(0, 1000)) * decodes)


def by_hand(p: StepPrices, plan: StepPlan) -> float:
    """The plan's step from its counts: a one-token chunk reads its context like a decode."""
    tokens = plan.decodes + sum(item.num_tokens for item in plan.chunks)
    pairs = sum(causal_pairs(item.num_tokens, item.context) for item in plan.chunks if item.num_tokens > 1)
    context = plan.decode_context + plan.decodes + sum(item.context + 1 for item in plan.chunks if item.num_tokens == 1)
    return p.step_time(tokens, pairs, context, plan.decodes + len(plan.chunks))


@settings(max_examples=80, deadline=None)
@given(prices, plans())
def test_a_plans_step_is_priced_from_its_counts(p, plan):
    assert p.plan_step_time(plan) == pytest.approx(by_hand(p, plan), rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(prices, plans(completing=True), st.integers(1, 64))
def test_a_run_is_its_first_step_then_decodes_of_all(p, plan, steps):
    """What single stepping gives: the planned step, then every request decoding, its context
    grown by a token a step (fast-forward's equality with it rests on this)."""
    times = p.plan_step_times(plan, steps)
    seqs = plan.decodes + len(plan.chunks)
    context = plan.decode_context + plan.decodes + sum(item.context + item.num_tokens for item in plan.chunks)
    assert len(times) == steps and times[0] == p.plan_step_time(plan)
    assert times[1:] == [p.step_time(seqs, 0.0, context + seqs * i, seqs) for i in range(1, steps)]


def test_a_run_of_decodes_alone_repeats_the_plan():
    p = WORKERS[0].prices
    plan = StepPlan(0, (), 8, 8 * 500)
    assert p.plan_step_times(plan, 3) == [p.step_time(8, 0.0, 8 * 500 + 8 * (i + 1), 8) for i in range(3)]


def test_a_chunk_that_completes_no_prompt_does_not_repeat():
    plan = StepPlan(0, (ScheduledItem("r", 512, 0, False),), 4, 400)
    with pytest.raises(ValueError, match="completes no prompt"):
        WORKERS[0].prices.plan_step_times(plan, 2)


def test_only_a_mixture_of_experts_reads_by_tokens():
    dense, moe = WORKERS[0].prices, WORKERS[2].prices
    assert dense.experts_read_s is None and dense.weight_read(1) == dense.weight_read(4096)
    assert moe.weight_read(1) < moe.weight_read(4096)  # more tokens touch more experts


def test_the_cost_model_prices_with_its_step_prices():
    cm = WORKERS[1]
    plan = StepPlan(0, (ScheduledItem("r", 300, 100, True),), 16, 16 * 2000)
    assert cm.plan_step_times(plan, 4) == cm.prices.plan_step_times(plan, 4)
    assert cm.step_time(64, 1e5, 1e4, 8) == cm.prices.step_time(64, 1e5, 1e4, 8)
    assert cm.decode_run_time(8, 8000, 10) == cm.prices.decode_run_time(8, 8000, 10)
