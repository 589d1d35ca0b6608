"""Roofline cost model: figures against known measurements, closed forms against loops, errors."""

import dataclasses
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from sim.costmodel import RESERVE_BYTES, RooflineCostModel, activation_peak_bytes, causal_pairs, sanity_table
from sim.hardware import GPUS, MODELS, get_gpu, get_model

# Combinations whose weights fit, so every one builds.
WORKERS = {
    (gpu, model, tp): RooflineCostModel(get_gpu(gpu), get_model(model), tensor_parallel=tp)
    for gpu, model, tp in [
        ("h100", "llama-3-8b", 1),
        ("h100", "llama-3-8b", 2),
        ("h100", "llama-3-70b", 4),
        ("a100-80gb", "llama-3-70b", 8),
        ("h200", "qwen2.5-14b", 2),
        ("l40s", "mistral-7b", 1),
        ("l40s", "mistral-7b", 4),
    ]
}
workers = st.sampled_from(sorted(WORKERS)).map(WORKERS.__getitem__)


def cost(gpu="h100", model="llama-3-8b", **kwargs):
    return RooflineCostModel(get_gpu(gpu), get_model(model), **kwargs)


def reference_step_time(cm, num_tokens, pairs, context, num_seqs):
    """The DESIGN.md / issue formula, written out term by term, independent of the module: every
    token runs the layers (not the embedding lookup, no FLOPs), each sequence the LM head once;
    a step reads every weight but an untied input embedding table."""
    g, m, tp = cm.gpu, cm.model, cm.tensor_parallel
    flops, bandwidth = g.peak_flops * cm.mfu, g.hbm_bandwidth * cm.mbu
    table = m.vocab * m.hidden
    layers = m.params - table * (1 if m.tied_embeddings else 2)
    read = m.params - (0 if m.tied_embeddings else table)
    compute = 2 * (layers * num_tokens + table * num_seqs) / flops
    linear = max(compute, read * m.dtype_bytes / bandwidth) / tp
    attention = 4 * m.layers * m.heads * m.head_dim * pairs / flops
    attention += 2 * m.layers * m.kv_heads * m.head_dim * m.dtype_bytes * context / bandwidth
    allreduce = 0.0
    if tp > 1:
        buffer = num_tokens * m.hidden * m.dtype_bytes
        per_op = 2 * (tp - 1) / tp * buffer / g.link_bandwidth + cm.allreduce_latency_s
        allreduce = 2 * m.layers * per_op
    return linear + attention / tp + allreduce + cm.step_overhead_s


# --- known figures: Llama-3-8B on one H100 -------------------------------------------------------


def test_decode_batch_one_is_a_weight_read_plus_overhead():
    cm, m, g = cost(), get_model("llama-3-8b"), get_gpu("h100")
    # the input embedding table (128,256 x 4,096 bf16) is looked up, not read whole
    expected = (m.weight_bytes - 128_256 * 4096 * 2) / (g.hbm_bandwidth * 0.8) + 0.001
    t = cm.step_time(1, 0.0, 100, 1)
    assert 6.0e-3 < t < 7.0e-3
    assert t == pytest.approx(expected, rel=1e-2)
    assert t > expected  # the KV read of 100 tokens is small but not free


def test_prefill_512_is_compute_bound():
    cm, m, g = cost(), get_model("llama-3-8b"), get_gpu("h100")
    # 512 tokens through the layers, the LM head once (the logits of the last token)
    compute = 2 * (m.per_token_params * 512 + m.lm_head_params) / (g.peak_flops * 0.6)
    assert compute > m.weight_bytes / (g.hbm_bandwidth * 0.8)
    assert cm.linear_bound(512, 1) == "compute"
    t = cm.step_time(512, causal_pairs(512, 0), 0.0, 1)
    assert t == pytest.approx(compute + 0.001, rel=0.02)
    assert t > compute + 0.001  # plus causal attention


def test_decode_is_flat_while_memory_bound_then_linear():
    cm = cost()
    assert cm.linear_bound(8, 8) == "memory"
    assert cm.step_time(8, 0.0, 0.0, 8) == pytest.approx(cm.step_time(1, 0.0, 0.0, 1), rel=1e-9)
    # Far past the ridge point the step is proportional to tokens (overhead aside).
    ratio = (cm.step_time(8192, 0, 0, 8192) - 0.001) / (cm.step_time(4096, 0, 0, 4096) - 0.001)
    assert ratio == pytest.approx(2.0, rel=1e-9)


def test_kv_capacity_llama_8b_h100():
    cm = cost()
    assert cm.kv_capacity_tokens == math.floor((80e9 * 0.9 - 8.03e9 * 2 - RESERVE_BYTES) / 131072) == 425_764
    assert cm.kv_blocks(16) == 26_610


def test_kv_blocks_leave_the_activation_peak_of_a_step():
    cm, m = cost(), cost().model
    # 4,096 tokens x (2 x 4,096 + 3 x 14,336) bf16 values, and 256 x 128,256 float32 logits
    peak = 4096 * (2 * 4096 + 3 * 14336) * 2 + 256 * 128_256 * 4
    assert activation_peak_bytes(m, 1, 4096, 256) == peak
    free = 80e9 * 0.9 - m.weight_bytes - peak - RESERVE_BYTES
    assert cm.kv_blocks(16, 4096, 256) == math.floor(free / 131072) // 16 == 26_347
    assert cost(tensor_parallel=2).kv_blocks(16, 4096, 256) > 2 * cm.kv_blocks(16, 4096, 256)


def test_describe():
    assert cost().describe() == "llama-3-8b on 1x h100: 425,764 KV tokens, decode@1 6.6 ms"
    assert cost("h100", "llama-3-70b", tensor_parallel=4).describe().startswith(
        "llama-3-70b on 4x h100: "
    )


# --- the formula --------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    workers,
    st.integers(1, 16384),
    st.floats(0, 1e8, allow_nan=False),
    st.floats(0, 1e7, allow_nan=False),
    st.floats(0, 1),
)
def test_step_time_matches_the_written_formula(cm, tokens, pairs, context, share):
    seqs = max(1, round(tokens * share))
    assert cm.step_time(tokens, pairs, context, seqs) == pytest.approx(
        reference_step_time(cm, tokens, pairs, context, seqs), rel=1e-12
    )


def test_causal_pairs():
    assert causal_pairs(1, 0) == 1
    assert causal_pairs(3, 0) == 6  # 1 + 2 + 3
    assert causal_pairs(2, 10) == 11 + 12
    # Two chunks cost the same attention as the whole prompt at once.
    assert causal_pairs(300, 0) + causal_pairs(212, 300) == causal_pairs(512, 0)


def test_empty_step_takes_no_time():
    assert cost().step_time(0, 0.0, 0.0, 0) == 0.0
    assert cost(tensor_parallel=2).step_time(0, 0.0, 0.0, 0) == 0.0


@pytest.mark.parametrize("args", [(-1, 0, 0, 0), (1, -1.0, 0, 1), (1, 0, -5, 1), (1, 0, 0, -1), (1, 0, 0, 2)])
def test_negative_step_inputs_raise(args):
    with pytest.raises(ValueError):
        cost().step_time(*args)


@settings(max_examples=60, deadline=None)
@given(
    workers,
    st.integers(1, 8192),
    st.integers(1, 512),
    st.floats(0, 1e7, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(1, 1e6, allow_nan=False),
)
def test_step_time_grows_with_every_input(cm, tokens, more, pairs, context, extra):
    base = cm.step_time(tokens, pairs, context, 1)
    assert cm.step_time(tokens + more, pairs, context, 1) >= base
    assert cm.step_time(tokens + more, pairs, context, 1 + more) >= cm.step_time(tokens + more, pairs, context, 1)
    assert cm.step_time(tokens, pairs + extra, context, 1) > base
    assert cm.step_time(tokens, pairs, context + extra, 1) > base


def test_step_time_grows_with_context_in_the_table_range():
    cm = cost()
    times = [cm.step_time(32, 0.0, 32 * c, 32) for c in (128, 1024, 4096, 16384, 32768)]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_tensor_parallel_is_faster_for_a_big_batch():
    batch = 256
    times = {
        tp: cost(tensor_parallel=tp).step_time(batch, 0.0, batch * 1024, batch) for tp in (1, 2, 4, 8)
    }
    assert times[1] > times[2] > times[4] > times[8]
    # All-reduce and the fixed overhead keep the speed-up below linear.
    assert times[2] > times[1] / 2


def test_tensor_parallel_pays_for_allreduce():
    one, two = cost(tensor_parallel=1), cost(tensor_parallel=2)
    slow_link = dataclasses.replace(get_gpu("h100"), link_bandwidth=1e9)
    slow = RooflineCostModel(slow_link, get_model("llama-3-8b"), tensor_parallel=2)
    assert slow.step_time(512, 0.0, 0.0, 1) > two.step_time(512, 0.0, 0.0, 1)
    # tp=1 runs no all-reduce, so the link does not matter.
    one_slow = RooflineCostModel(slow_link, get_model("llama-3-8b"), tensor_parallel=1)
    assert one_slow.step_time(512, 0.0, 0.0, 1) == one.step_time(512, 0.0, 0.0, 1)
    no_latency = cost(tensor_parallel=2, allreduce_latency_s=0.0)
    assert two.step_time(1, 0.0, 0.0, 1) - no_latency.step_time(1, 0.0, 0.0, 1) == pytest.approx(
        2 * 32 * 10e-6
    )


# --- multi-step decode runs ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(workers, st.integers(0, 512), st.integers(0, 4_000_000), st.integers(0, 300))
def test_decode_run_time_equals_the_loop(cm, num_seqs, context_sum, steps):
    loop = sum(cm.step_time(num_seqs, 0.0, context_sum + i * num_seqs, num_seqs) for i in range(steps))
    assert math.isclose(cm.decode_run_time(num_seqs, context_sum, steps), loop, rel_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(workers, st.integers(1, 512), st.floats(0, 4e6, allow_nan=False), st.integers(1, 300))
def test_decode_step_times_are_the_steps_of_the_run(cm, num_seqs, context_sum, steps):
    times = cm.decode_step_times(num_seqs, context_sum, steps)
    assert math.isclose(sum(times), cm.decode_run_time(num_seqs, context_sum, steps), rel_tol=1e-9)
    # each the step's own time to the bit, as stepping one at a time prices it (fast-forward relies on it)
    assert times == [cm.step_time(num_seqs, 0.0, context_sum + i * num_seqs, num_seqs) for i in range(steps)]
    assert all(b > a for a, b in zip(times, times[1:]))  # each step reads num_seqs more KV tokens


def test_empty_decode_runs():
    cm = cost()
    assert cm.decode_run_time(0, 0, 10) == 0.0
    assert cm.decode_run_time(8, 1000, 0) == 0.0
    assert cm.decode_step_times(0, 0, 5) == [0.0] * 5
    assert cm.decode_step_times(8, 1000, 0) == []


@pytest.mark.parametrize("args", [(-1, 0, 1), (1, -1, 1), (1, 0, -1)])
def test_negative_run_inputs_raise(args):
    with pytest.raises(ValueError):
        cost().decode_run_time(*args)
    with pytest.raises(ValueError):
        cost().decode_step_times(*args)


# --- capacity and validation --------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(WORKERS), ids=lambda k: "-".join(map(str, k)))
def test_capacity_formula(key):
    gpu, model, tp = key
    g, m, cm = GPUS[gpu], MODELS[model], WORKERS[key]
    free = g.memory_bytes * 0.9 - m.weight_bytes / tp - RESERVE_BYTES
    expected = math.floor(free / (m.kv_bytes_per_token / tp))
    assert cm.kv_capacity_tokens == expected > 0
    assert cm.kv_blocks(16) == expected // 16
    assert cm.kv_blocks(1) == expected


def test_capacity_follows_gpu_memory_utilization():
    assert cost(gpu_memory_utilization=0.5).kv_capacity_tokens < cost().kv_capacity_tokens


@pytest.mark.parametrize("bad", [0, -16, 2.0, True])
def test_bad_block_size(bad):
    with pytest.raises(ConfigError, match="block_size"):
        cost().kv_blocks(bad)


def test_70b_does_not_fit_on_one_h100():
    with pytest.raises(ConfigError) as info:
        cost("h100", "llama-3-70b")
    message = str(info.value)
    assert message.startswith("cluster.tensor_parallel:")
    assert "llama-3-70b" in message and "h100" in message and "do not fit" in message
    assert "allowed: 2, 4, 8" in message


def test_70b_fits_on_four_h100():
    cm = cost("h100", "llama-3-70b", tensor_parallel=4)
    assert cm.kv_capacity_tokens > 100_000


def test_nothing_fits_message():
    tiny = dataclasses.replace(get_gpu("l40s"), memory_bytes=1e9)
    with pytest.raises(ConfigError, match="no tensor_parallel fits"):
        RooflineCostModel(tiny, get_model("llama-3-70b"), tensor_parallel=8)


@pytest.mark.parametrize("bad", [0, 3, 16, -1, 2.0, True, "2"])
def test_bad_tensor_parallel(bad):
    with pytest.raises(ConfigError) as info:
        cost(tensor_parallel=bad)
    assert str(info.value).startswith("cluster.tensor_parallel:")
    assert "allowed: 1, 2, 4, 8" in str(info.value)


@pytest.mark.parametrize(
    "field, bad",
    [
        ("mfu", 0.0),
        ("mfu", 1.5),
        ("mfu", float("nan")),
        ("mbu", -0.1),
        ("mbu", 1.01),
        ("gpu_memory_utilization", 0.0),
        ("gpu_memory_utilization", 2.0),
        ("step_overhead_s", -1e-3),
        ("allreduce_latency_s", -1e-6),
    ],
)
def test_bad_ranges_name_the_key(field, bad):
    with pytest.raises(ConfigError, match=rf"^cluster\.{field}: .*allowed: "):
        cost(**{field: bad})


def test_edges_of_ranges_are_allowed():
    cm = cost(mfu=1.0, mbu=1.0, gpu_memory_utilization=1.0, step_overhead_s=0.0, allreduce_latency_s=0.0)
    assert cm.step_time(1, 0.0, 0.0, 1) == pytest.approx((8.03e9 - 128_256 * 4096) * 2 / 3.35e12, rel=1e-3)


def test_specs_must_be_specs():
    with pytest.raises(ConfigError, match="cluster.gpu"):
        RooflineCostModel("h100", get_model("llama-3-8b"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cluster.model"):
        RooflineCostModel(get_gpu("h100"), "llama-3-8b")  # type: ignore[arg-type]


def test_from_names():
    assert RooflineCostModel.from_names("h100", "llama-3-8b", mfu=0.5) == cost(mfu=0.5)
    with pytest.raises(ConfigError, match="cluster.gpu"):
        RooflineCostModel.from_names("tpu", "llama-3-8b")


def test_frozen_hashable_and_picklable():
    cm = cost(tensor_parallel=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cm.mfu = 0.5  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(cm))
    assert copy == cm and hash(copy) == hash(cm)
    assert copy.step_time(300, 1e5, 1e5, 3) == cm.step_time(300, 1e5, 1e5, 3)
    assert cost(mbu=0.7) != cost()
    moe = cost("h100", MIXTRAL, tensor_parallel=2)  # its prices read the experts a step touches
    moe_copy = pickle.loads(pickle.dumps(moe))
    assert moe_copy == moe and moe_copy.step_time(4096, 0.0, 0.0, 8) == moe.step_time(4096, 0.0, 0.0, 8)


# --- the printed report -------------------------------------------------------------------------


def _section(report, title):
    block = report.split(title, 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in block.strip().splitlines()[2:]]


def test_sanity_table_key_lines():
    report = sanity_table()
    assert report == sanity_table("h100", "llama-3-8b", 1)
    assert report.startswith("Roofline cost model: llama-3-8b on 1x h100: 425,764 KV tokens")
    for line in [
        "weight bytes / HBM bandwidth (ideal decode step)",
        "decode step, batch 1, context 128",
        "ratio decode / ideal",
        "prefill step, 512 tokens",
        "2*(params*512 + lm_head) / (peak*mfu)",
        "ratio prefill / ideal",
        "Decode step vs batch size (context 1,024 per sequence)",
        "Decode step vs context (batch 32)",
        "Prefill step vs chunk size",
        "KV capacity",
        "16-token blocks",
    ]:
        assert line in report, line
    assert "4.48 ms" in report  # (16.06 GB - the 1.05 GB input embedding table) / 3.35 TB/s
    assert "12.05 ms" in report  # 2 * (6.979e9 * 512 + 0.525e9) / (989e12 * 0.6)
    assert "425,764" in report and "26,610" in report and "26,347" in report


def test_sanity_table_rows():
    report = sanity_table()
    batch = _section(report, "Decode step vs batch size")
    assert [row[0] for row in batch] == ["1", "8", "32", "64", "128", "256"]
    steps = [float(row[1]) for row in batch]
    assert steps == sorted(steps)
    assert float(batch[0][1]) == pytest.approx(cost().step_time(1, 0, 1024, 1) * 1e3, abs=0.005)
    assert batch[-1][3] == "compute" and batch[0][3] == "memory"
    context = _section(report, "Decode step vs context")
    assert [row[0] for row in context] == ["128", "1,024", "4,096", "16,384", "32,768"]
    assert [float(r[1]) for r in context] == sorted(float(r[1]) for r in context)
    chunks = _section(report, "Prefill step vs chunk size")
    assert [row[0] for row in chunks] == ["128", "512", "2,048", "8,192"]


def test_sanity_table_other_workers():
    report = sanity_table("h100", "llama-3-70b", 4)
    assert "llama-3-70b on 4x h100" in report
    assert "weight bytes / HBM bandwidth / tp" in report
    with pytest.raises(ConfigError, match="cluster.tensor_parallel"):
        sanity_table("h100", "llama-3-70b")
    with pytest.raises(ConfigError, match="cluster.model"):
        sanity_table("h100", "gpt-5")


# --- mixture of experts ------------------------------------------------------------------------

MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"


def moe_reference_linear(cm, num_tokens):
    """Linear layers of a MoE step of single-token sequences written out: FLOPs of the active
    parameters (the LM head included, the embedding lookup not), bytes of the non-expert weights
    but the input table plus the E(1 - (1 - k/E)^T) experts the tokens touch, both over tp GPUs."""
    g, m, tp = cm.gpu, cm.model, cm.tensor_parallel
    touched = m.experts * (1 - (1 - m.experts_per_token / m.experts) ** num_tokens)
    table = m.vocab * m.hidden  # Mixtral's embeddings are untied
    dense_part = m.params - table - m.experts * m.expert_params
    read = (dense_part + touched * m.expert_params) * m.dtype_bytes / (g.hbm_bandwidth * cm.mbu)
    compute = 2 * (m.active_params - table) * num_tokens / (g.peak_flops * cm.mfu)
    return max(compute, read) / tp


@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize("num_tokens", [1, 2, 8, 64, 4096])
def test_moe_step_reads_the_touched_experts_and_computes_the_active_ones(tp, num_tokens):
    cm = cost("h100", MIXTRAL, tensor_parallel=tp)
    # only attention, all-reduce, overhead
    without_linear = dataclasses.replace(cm.model, experts=0, params=0.0, vocab=0)
    rest = reference_step_time(dataclasses.replace(cm, model=without_linear), num_tokens, 0.0, 0.0, num_tokens)
    assert cm.step_time(num_tokens, 0.0, 0.0, num_tokens) == pytest.approx(moe_reference_linear(cm, num_tokens) + rest, rel=1e-12)


def test_moe_batch_one_decode_reads_two_of_eight_experts():
    cm = cost("h100", MIXTRAL, tensor_parallel=2)
    m = cm.model
    one = cm.step_time(1, 0.0, 0.0, 1)
    dense_equivalent = dataclasses.replace(cm, model=dataclasses.replace(m, experts=0))  # every expert read
    assert one < 0.35 * dense_equivalent.step_time(1, 0.0, 0.0, 1)
    table = m.vocab * m.hidden * m.dtype_bytes  # the input embeddings: looked up, not read whole
    assert m.weight_bytes_read(1) == pytest.approx(m.active_params * m.dtype_bytes - table)
    # at a large batch every expert is touched: the read is the whole model but the input table
    assert cm.prices.weight_read(4096) == pytest.approx((m.weight_bytes - table) / (cm.gpu.hbm_bandwidth * cm.mbu * 2))


def test_moe_prefill_is_priced_by_active_parameters():
    cm = cost("h100", MIXTRAL, tensor_parallel=2)
    assert cm.prices.s_per_token == pytest.approx(2 * cm.model.per_token_params / (989e12 * 0.6 * 2))
    assert cm.model.per_token_params == cm.model.active_params - 2 * 32000 * 4096
    assert cm.linear_bound(8192, 1) == "compute" and cm.linear_bound(1, 1) == "memory"


def test_moe_kv_capacity_holds_every_expert():
    cm = cost("h100", "Qwen/Qwen3-30B-A3B")
    m = cm.model
    assert cm.kv_capacity_tokens == math.floor((80e9 * 0.9 - m.weight_bytes - RESERVE_BYTES) / m.kv_bytes_per_token)


def test_moe_sanity_table_names_the_active_parameters():
    report = sanity_table("h100", MIXTRAL, 2)
    assert "12.88e9 active, top-2 of 8 experts" in report


def test_moe_decode_runs_match_step_by_step():
    cm = cost("h200", "Qwen/Qwen3-30B-A3B")
    steps = cm.decode_step_times(16, 16 * 500, 5)
    expected = [cm.step_time(16, 0.0, 16 * 500 + 16 * i, 16) for i in range(5)]
    np.testing.assert_allclose(steps, expected, rtol=1e-12)
    assert cm.decode_run_time(16, 16 * 500, 5) == pytest.approx(sum(expected), rel=1e-12)


@pytest.mark.parametrize("gpu", ["b200", "rtx-4090", "rtx-pro-6000", "a100-40gb"])
def test_new_gpus_build_a_worker(gpu):
    cm = cost(gpu, "meta-llama/Llama-3.1-8B-Instruct")
    assert cm.kv_capacity_tokens > 0 and cm.step_time(1, 0.0, 128, 1) > 0
