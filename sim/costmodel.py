"""Roofline step time of a batch on one simulated worker.

This module owns a worker's shape (GPU, model, tensor parallelism, utilisations), its checks, how
many KV tokens the worker holds, and the per-unit coefficients of its step time; a step is linear
layers + attention + all-reduce + a fixed overhead (see DESIGN.md, "Cost model"), priced from those
coefficients by `sim.steptime.StepPrices`. A mixture-of-experts model computes with its active
parameters and reads the weights of the experts a step's tokens touch. It knows nothing about
requests: callers pass token counts, or a StepPlan, which carries only counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from collections.abc import Sequence
from typing import TYPE_CHECKING


from scheduler.errors import ConfigError
from sim.hardware import GPUSpec, ModelSpec, get_gpu, get_model
from sim.steptime import StepPrices, causal_pairs

if TYPE_CHECKING:
    from scheduler.actions import StepPlan

__all__ = ["RooflineCostModel", "activation_peak_bytes", "causal_pairs", "sanity_table"]

TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
# vLLM leaves outside its profiled peak: the CUDA context's and libraries' own allocations (cuBLAS
# and NCCL workspaces) and the CUDA graph pool. A fixed reserve per GPU stands for them; vLLM
# measures them on the device, which a simulator cannot.
RESERVE_BYTES = 128 * 2**20
LOGIT_BYTES = 4  # vLLM's sampler works on float32 logits
SMALL_CONTEXT = 128  # context of the "decode@1" figure: small enough that KV reads are negligible


@dataclass(frozen=True, slots=True)
class RooflineCostModel:
    """Step time of one batch on a worker of `tensor_parallel` identical GPUs."""

    gpu: GPUSpec
    model: ModelSpec
    tensor_parallel: int = 1
    mfu: float = 0.6  # model FLOP utilisation for linear layers and prefill attention
    mbu: float = 0.8  # memory bandwidth utilisation
    step_overhead_s: float = 0.001  # fixed per-step cost (scheduling, launch, sampling)
    allreduce_latency_s: float = 10e-6  # per all-reduce op, only when tensor_parallel > 1
    gpu_memory_utilization: float = 0.9
    # Per-unit coefficients, fixed at construction so a step's price is a handful of multiply-adds:
    # the simulator prices every step it runs.
    prices: StepPrices = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._validate()
        gpu, m, tp = self.gpu, self.model, self.tensor_parallel
        flops = gpu.peak_flops * self.mfu * tp
        bandwidth = gpu.hbm_bandwidth * self.mbu * tp
        # Ring all-reduce moves 2*(tp-1)/tp of the buffer through each GPU's link; two per layer
        # (after attention and after the MLP), each of num_tokens * hidden activations.
        ring = 2 * (tp - 1) / tp * m.hidden * m.dtype_bytes / gpu.link_bandwidth
        allreduces = 2 * m.layers if tp > 1 else 0
        s_per_weight_byte = 1 / bandwidth

        def experts_read_s(num_tokens: int) -> float:  # a step of a MoE reads the experts it touches
            return m.weight_bytes_read(num_tokens) * s_per_weight_byte

        prices = StepPrices(
            s_per_token=2 * m.per_token_params / flops,
            s_per_seq=2 * m.lm_head_params / flops,
            weight_read_s=m.weight_bytes_read(1) / bandwidth,
            s_per_pair=4 * m.layers * m.heads * m.head_dim / flops,
            s_per_kv_token=m.kv_bytes_per_token / bandwidth,
            allreduce_s_per_token=allreduces * ring,
            fixed_s=self.step_overhead_s + allreduces * self.allreduce_latency_s,
            experts_read_s=experts_read_s if m.experts else None,
        )
        object.__setattr__(self, "prices", prices)

    def __reduce__(self):
        # A copy is built from the fields, which derives its prices again (they hold a closure for
        # a MoE and, compiled, are not picklable themselves).
        return type(self), tuple(getattr(self, f.name) for f in fields(self) if f.init)

    @classmethod
    def from_names(cls, gpu: str, model: str, **kwargs) -> RooflineCostModel:
        """Build from catalogue names (`sim.hardware.GPUS` / `MODELS`); kwargs as the fields."""
        return cls(get_gpu(gpu), get_model(model), **kwargs)

    # Pricing steps is StepPrices' (sim.steptime); these read it for callers holding the model.
    def step_time(self, num_tokens: int, prefill_attn_pairs: float, decode_context: float, num_seqs: int) -> float:
        """Seconds of one step: `StepPrices.step_time`."""
        return self.prices.step_time(num_tokens, prefill_attn_pairs, decode_context, num_seqs)

    def decode_run_time(self, num_seqs: int, context_sum: float, steps: int) -> float:
        """Total seconds of a run of pure-decode steps: `StepPrices.decode_run_time`."""
        return self.prices.decode_run_time(num_seqs, context_sum, steps)

    def decode_step_times(self, num_seqs: int, context_sum: float, steps: int) -> list[float]:
        """Per-step seconds of that run: `StepPrices.decode_step_times`."""
        return self.prices.decode_step_times(num_seqs, context_sum, steps)

    def plan_step_time(self, plan: StepPlan) -> float:
        """Seconds of one step of a StepPlan: `StepPrices.plan_step_time`."""
        return self.prices.plan_step_time(plan)

    def plan_step_times(self, plan: StepPlan, steps: int) -> list[float]:
        """Per-step seconds of a run of a StepPlan: `StepPrices.plan_step_times`."""
        return self.prices.plan_step_times(plan, steps)

    @property
    def kv_capacity_tokens(self) -> int:
        """KV tokens a worker holds with no activation budget (memory x utilisation - weights - reserve)."""
        return self.kv_tokens(0, 0)

    def kv_tokens(self, max_num_batched_tokens: int, max_num_seqs: int) -> int:
        """KV tokens a worker holds after the activation peak of a step of these limits (vLLM's sizing)."""
        activation = activation_peak_bytes(self.model, self.tensor_parallel, max_num_batched_tokens, max_num_seqs)
        return _kv_capacity(self.gpu, self.model, self.tensor_parallel, self.gpu_memory_utilization, activation)

    def kv_blocks(self, block_size: int, max_num_batched_tokens: int = 0, max_num_seqs: int = 0) -> int:
        """Whole KV blocks of `block_size` tokens the worker holds after that activation peak."""
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"block_size: must be an integer >= 1, got {block_size!r}")
        return max(self.kv_tokens(max_num_batched_tokens, max_num_seqs), 0) // block_size

    def describe(self) -> str:
        """One line: model, worker shape, KV capacity and the batch-1 decode step."""
        decode_ms = self.step_time(1, 0.0, SMALL_CONTEXT, 1) * 1e3
        return (
            f"{self.model.name} on {self.tensor_parallel}x {self.gpu.name}: "
            f"{self.kv_capacity_tokens:,} KV tokens, decode@1 {decode_ms:.1f} ms"
        )

    def linear_bound(self, num_tokens: int, num_seqs: int) -> str:
        """Which roof governs the linear layers at `num_tokens` of `num_seqs`: "compute" or "memory"."""
        prices = self.prices
        return "compute" if prices.linear_s(num_tokens, num_seqs) > prices.weight_read(num_tokens) else "memory"

    def _validate(self) -> None:
        if not isinstance(self.gpu, GPUSpec):
            raise ConfigError(f"cluster.gpu: expected a GPUSpec, got {self.gpu!r}")
        if not isinstance(self.model, ModelSpec):
            raise ConfigError(f"cluster.model: expected a ModelSpec, got {self.model!r}")
        tp = self.tensor_parallel
        if isinstance(tp, bool) or not isinstance(tp, int) or tp not in TENSOR_PARALLEL_SIZES:
            allowed = _join(TENSOR_PARALLEL_SIZES)
            raise ConfigError(f"cluster.tensor_parallel: got {tp!r}; allowed: {allowed}")
        latency = self.allreduce_latency_s
        for key, value, allowed, ok in (
            ("mfu", self.mfu, "(0, 1]", 0 < self.mfu <= 1),
            ("mbu", self.mbu, "(0, 1]", 0 < self.mbu <= 1),
            ("gpu_memory_utilization", self.gpu_memory_utilization, "(0, 1]", 0 < self.gpu_memory_utilization <= 1),
            ("step_overhead_s", self.step_overhead_s, ">= 0", self.step_overhead_s >= 0),
            ("allreduce_latency_s", latency, ">= 0", latency >= 0),
        ):
            if not ok:  # written as "in range" so NaN, for which every comparison is false, fails
                raise ConfigError(f"cluster.{key}: got {value!r}; allowed: {allowed}")
        if self.kv_capacity_tokens <= 0:
            raise ConfigError(self._does_not_fit_message())

    def _does_not_fit_message(self) -> str:
        gpu, m, tp, frac = self.gpu, self.model, self.tensor_parallel, self.gpu_memory_utilization
        fits = [n for n in TENSOR_PARALLEL_SIZES if _kv_capacity(gpu, m, n, frac) > 0]
        allowed = f"allowed: {_join(fits)}" if fits else "no tensor_parallel fits; use a larger GPU"
        return (
            f"cluster.tensor_parallel: {m.name} weights do not fit on {gpu.name} at "
            f"tensor_parallel={tp} ({m.weight_bytes / tp / 1e9:.1f} GB per GPU, "
            f"{gpu.memory_bytes * frac / 1e9:.1f} GB usable at gpu_memory_utilization={frac}, "
            f"no room left for KV cache); {allowed}"
        )


def _kv_capacity(gpu: GPUSpec, model: ModelSpec, tensor_parallel: int, fraction: float,
                 activation: float = 0.0) -> int:
    # Each GPU holds 1/tp of the weights and 1/tp of every token's KV (heads are sharded).
    free = gpu.memory_bytes * fraction - model.weight_bytes / tensor_parallel - activation - RESERVE_BYTES
    return math.floor(free / (model.kv_bytes_per_token / tensor_parallel))


def activation_peak_bytes(model: ModelSpec, tensor_parallel: int, max_num_batched_tokens: int,
                          max_num_seqs: int) -> float:
    """Per GPU, the activation peak of vLLM's profiling pass: a forward pass of max_num_batched_tokens
    tokens, then sampling max_num_seqs sequences.

    An estimate from the model's shape, since the simulator cannot profile: the largest tensors
    alive in one layer's feed-forward (the residual stream and its normed copy, 2 x hidden; the
    fused gate-up output and the activated half, 3 x the feed-forward width, sharded over the
    group) for every batched token, plus float32 logits over the whole vocabulary (gathered on
    each GPU) for every sequence. Layers run one after another, so one layer's peak is the pass's.
    """
    width = 2 * model.hidden + 3 * _ffn_width(model) / tensor_parallel
    forward = max_num_batched_tokens * width * model.dtype_bytes
    return forward + max_num_seqs * model.vocab * LOGIT_BYTES


def _ffn_width(model: ModelSpec) -> int:
    # A token's feed-forward intermediate width: dense, or its routed experts plus the shared one.
    routed = model.experts_per_token * model.expert_intermediate + model.shared_intermediate
    return max(model.intermediate, routed)


def _join(values) -> str:
    return ", ".join(map(str, values))


def sanity_table(gpu: str = "h100", model: str = "llama-3-8b", tensor_parallel: int = 1) -> str:
    """A plain-text report of the roofline's figures, to check them against known measurements."""
    cm = RooflineCostModel.from_names(gpu, model, tensor_parallel=tensor_parallel)
    sections = [
        _header(cm),
        _floors(cm),
        _decode_by_batch(cm),
        _decode_by_context(cm),
        _prefill_by_chunk(cm),
        _capacity(cm),
    ]
    return "\n\n".join(sections) + "\n"


def _header(cm: RooflineCostModel) -> str:
    g, m = cm.gpu, cm.model
    return "\n".join(
        [
            f"Roofline cost model: {cm.describe()}",
            f"  gpu   {g.name}: {g.peak_flops / 1e12:,.0f} TFLOP/s bf16 dense, "
            f"{g.hbm_bandwidth / 1e12:.2f} TB/s HBM, {g.memory_bytes / 1e9:.0f} GB, "
            f"link {g.link_bandwidth / 1e9:.0f} GB/s",
            f"  model {m.name}: {m.params / 1e9:.2f}e9 params{_active(m)}, "
            f"{m.weight_bytes / 1e9:.2f} GB weights, "
            f"{m.kv_bytes_per_token / 1024:.0f} KiB KV per token",
            f"  tensor_parallel {cm.tensor_parallel}, mfu {cm.mfu:.2f}, mbu {cm.mbu:.2f}, "
            f"step overhead {cm.step_overhead_s * 1e3:.2f} ms, "
            f"all-reduce latency {cm.allreduce_latency_s * 1e6:.0f} us",
        ]
    )


def _floors(cm: RooflineCostModel) -> str:
    tp, m, g, chunk = cm.tensor_parallel, cm.model, cm.gpu, 512
    per_gpu = " / tp" if tp > 1 else ""
    ideal_decode = m.weight_bytes_read(1) / tp / g.hbm_bandwidth
    decode = cm.step_time(1, 0.0, SMALL_CONTEXT, 1)
    ideal_prefill = 2 * (m.per_token_params * chunk + m.lm_head_params) / (g.peak_flops * cm.mfu * tp)
    prefill = cm.step_time(chunk, causal_pairs(chunk, 0), 0.0, 1)
    rows = [
        (f"weight bytes / HBM bandwidth{per_gpu} (ideal decode step)", _ms(ideal_decode)),
        (f"decode step, batch 1, context {SMALL_CONTEXT}", _ms(decode)),
        ("  ratio decode / ideal", f"{decode / ideal_decode:.2f}x"),
        (f"prefill step, {chunk} tokens, no prior context", _ms(prefill)),
        (f"2*(params*{chunk} + lm_head) / (peak*mfu){per_gpu}", _ms(ideal_prefill)),
        ("  ratio prefill / ideal", f"{prefill / ideal_prefill:.2f}x"),
    ]
    return "Floors\n" + "\n".join(f"  {label:<56}{value:>10}" for label, value in rows)


def _active(m: ModelSpec) -> str:
    if not m.experts:
        return ""
    return f" ({m.active_params / 1e9:.2f}e9 active, top-{m.experts_per_token} of {m.experts} experts)"


def _decode_by_batch(cm: RooflineCostModel, context: int = 1024) -> str:
    rows = []
    for batch in (1, 8, 32, 64, 128, 256):
        t = cm.step_time(batch, 0.0, batch * context, batch)
        rows.append((f"{batch:,}", f"{t * 1e3:.2f}", f"{batch / t:,.0f}", cm.linear_bound(batch, batch)))
    title = f"Decode step vs batch size (context {context:,} per sequence)"
    return _table(title, ("batch", "step ms", "tokens/s", "linear"), rows)


def _decode_by_context(cm: RooflineCostModel, batch: int = 32) -> str:
    rows = []
    for context in (128, 1024, 4096, 16384, 32768):
        t = cm.step_time(batch, 0.0, batch * context, batch)
        rows.append((f"{context:,}", f"{t * 1e3:.2f}", f"{batch / t:,.0f}"))
    title = f"Decode step vs context (batch {batch})"
    return _table(title, ("context", "step ms", "tokens/s"), rows)


def _prefill_by_chunk(cm: RooflineCostModel) -> str:
    rows = []
    for chunk in (128, 512, 2048, 8192):
        t = cm.step_time(chunk, causal_pairs(chunk, 0), 0.0, 1)
        rows.append((f"{chunk:,}", f"{t * 1e3:.2f}", f"{chunk / t:,.0f}", cm.linear_bound(chunk, 1)))
    title = "Prefill step vs chunk size (no prior context)"
    return _table(title, ("chunk", "step ms", "tokens/s", "linear"), rows)


def _capacity(cm: RooflineCostModel) -> str:
    rows = [("tokens", f"{cm.kv_capacity_tokens:,}"), ("16-token blocks", f"{cm.kv_blocks(16):,}"),
            ("after a 4,096-token step, 256 sequences", f"{cm.kv_blocks(16, 4096, 256):,}")]
    return "KV capacity (after the weights and a reserve)\n" + "\n".join(
        f"  {label:<42}{value:>12}" for label, value in rows)


def _table(title: str, head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = [title] + ["  " + "".join(f"{cell:>10}" for cell in row) for row in (head, *rows)]
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


# The decode context a latency budget assumes per running request: a typical chat turn's.
BUDGET_DECODE_CONTEXT = 1024


def slo_step_budget(cost: RooflineCostModel, ttft_ms: float | None, tpot_ms: float | None, max_num_seqs: int,
                    max_num_batched_tokens: int, fallback: int) -> int:
    """The step's token budget a tenant's SLO allows while its first token waits (the core's
    `latency_budgets`): the most tokens a step of max_num_seqs decodes plus one prefill chunk may
    hold and still take at most the TPOT SLO, and at most half the TTFT SLO (the request waits for
    the step already running, then runs in its own). `fallback` for a tenant without an SLO; the
    decodes alone where even they take longer."""
    limits = [ms / 1e3 for ms in (tpot_ms, None if ttft_ms is None else ttft_ms / 2) if ms is not None]
    if not limits:
        return fallback
    target, decodes = min(limits), max_num_seqs
    context = decodes * BUDGET_DECODE_CONTEXT

    def step_s(tokens: int) -> float:
        return cost.step_time(tokens, causal_pairs(tokens - decodes, 0), context, decodes + 1)

    low, high = decodes, max_num_batched_tokens  # the largest tokens in [low, high] within target
    if step_s(high) <= target:
        return high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if step_s(mid) <= target else (low, mid)
    return low
