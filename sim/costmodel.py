"""Roofline step time of a batch on one simulated worker.

This module owns how long a step takes and how many KV tokens a worker holds. A worker is a
tensor-parallel group of GPUs; a step is linear layers + attention + all-reduce + a fixed overhead
(see DESIGN.md, "Cost model"). A mixture-of-experts model computes with its active parameters
and reads the weights of the experts a step's tokens touch. It knows nothing about requests:
callers pass token counts, or a StepPlan, which carries only counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import TYPE_CHECKING


from scheduler.errors import ConfigError
from sim.hardware import GPUSpec, ModelSpec, get_gpu, get_model

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


def causal_pairs(chunk_tokens: int, context_before: int) -> float:
    """Causal query-key pairs of a prefill chunk of q tokens after c tokens: q*c + q*(q+1)/2."""
    q = chunk_tokens
    return q * context_before + q * (q + 1) / 2


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
    # Per-unit coefficients, fixed at construction so step_time is a handful of multiply-adds:
    # the simulator calls it once per event.
    _s_per_token: float = field(init=False, repr=False, compare=False)
    _s_per_seq: float = field(init=False, repr=False, compare=False)
    _weight_read_s: float = field(init=False, repr=False, compare=False)
    _s_per_weight_byte: float = field(init=False, repr=False, compare=False)
    _s_per_pair: float = field(init=False, repr=False, compare=False)
    _s_per_kv_token: float = field(init=False, repr=False, compare=False)
    _allreduce_s_per_token: float = field(init=False, repr=False, compare=False)
    _fixed_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._validate()
        gpu, m, tp = self.gpu, self.model, self.tensor_parallel
        flops = gpu.peak_flops * self.mfu * tp
        bandwidth = gpu.hbm_bandwidth * self.mbu * tp
        # Ring all-reduce moves 2*(tp-1)/tp of the buffer through each GPU's link; two per layer
        # (after attention and after the MLP), each of num_tokens * hidden activations.
        ring = 2 * (tp - 1) / tp * m.hidden * m.dtype_bytes / gpu.link_bandwidth
        allreduces = 2 * m.layers if tp > 1 else 0
        coefficients = {
            "_s_per_token": 2 * m.per_token_params / flops,
            "_s_per_seq": 2 * m.lm_head_params / flops,
            "_weight_read_s": m.weight_bytes_read(1) / bandwidth,
            "_s_per_weight_byte": 1 / bandwidth,
            "_s_per_pair": 4 * m.layers * m.heads * m.head_dim / flops,
            "_s_per_kv_token": m.kv_bytes_per_token / bandwidth,
            "_allreduce_s_per_token": allreduces * ring,
            "_fixed_s": self.step_overhead_s + allreduces * self.allreduce_latency_s,
        }
        for name, value in coefficients.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_names(cls, gpu: str, model: str, **kwargs) -> RooflineCostModel:
        """Build from catalogue names (`sim.hardware.GPUS` / `MODELS`); kwargs as the fields."""
        return cls(get_gpu(gpu), get_model(model), **kwargs)

    def step_time(self, num_tokens: int, prefill_attn_pairs: float, decode_context: float, num_seqs: int) -> float:
        """Seconds for one step computing `num_tokens` tokens of `num_seqs` sequences; 0.0 when
        there is nothing to run.

        prefill_attn_pairs: sum of `causal_pairs` over the step's prefill chunks.
        decode_context: sum over decoding sequences of the KV tokens each one reads.
        num_seqs: the sequences in the step (decodes and prefill chunks), each computing logits once.
        """
        if num_tokens < 0 or prefill_attn_pairs < 0 or decode_context < 0 or not 0 <= num_seqs <= num_tokens:
            raise ValueError(
                "step_time: num_tokens, prefill_attn_pairs and decode_context must be >= 0 and num_seqs "
                f"in [0, num_tokens], got {num_tokens}, {prefill_attn_pairs}, {decode_context}, {num_seqs}"
            )
        if num_tokens == 0:
            return 0.0
        return (
            self._constant_step_s(num_tokens, num_seqs)
            + self._s_per_pair * prefill_attn_pairs
            + self._s_per_kv_token * decode_context
        )

    def decode_run_time(self, num_seqs: int, context_sum: float, steps: int) -> float:
        """Total seconds of `steps` pure-decode steps of `num_seqs` sequences.

        context_sum is the summed context at the first step; it grows by num_seqs each step.
        Only the KV read term changes between steps, so the total is a constant times `steps`
        plus an arithmetic series.
        """
        if not self._check_run(num_seqs, context_sum, steps):
            return 0.0
        contexts = steps * context_sum + num_seqs * steps * (steps - 1) / 2
        return steps * self._constant_step_s(num_seqs, num_seqs) + self._s_per_kv_token * contexts

    def decode_step_times(self, num_seqs: int, context_sum: float, steps: int) -> list[float]:
        """Per-step seconds of the run `decode_run_time` prices: each the `step_time` of its step,
        to the bit (a list, not an array: a run is short, where numpy's per-call cost exceeds the work)."""
        if not self._check_run(num_seqs, context_sum, steps):
            return [0.0] * max(steps, 0)
        constant, per_token = self._constant_step_s(num_seqs, num_seqs), self._s_per_kv_token
        return [constant + per_token * (context_sum + num_seqs * i) for i in range(steps)]

    def plan_step_time(self, plan: "StepPlan") -> float:
        """Seconds of one step of a StepPlan."""
        tokens, pairs, context = plan.decodes, 0.0, plan.decode_context + plan.decodes
        for item in plan.chunks:
            tokens += item.num_tokens
            if item.is_decode:  # a one-token chunk reads its context like a decode
                context += item.context + 1
            else:
                pairs += causal_pairs(item.num_tokens, item.context)
        return self.step_time(tokens, pairs, context, plan.decodes + len(plan.chunks))

    def plan_step_times(self, plan: "StepPlan", steps: int) -> list[float]:
        """Per-step seconds of a run of `steps` steps of a StepPlan: its decodes repeated, or its
        prefill step and then decodes of all (each chunk completes a prompt that goes on decoding)."""
        if not plan.chunks:
            return self.decode_step_times(plan.decodes, plan.decode_context + plan.decodes, steps)
        if not all(item.samples for item in plan.chunks):
            raise ValueError("plan_step_times: a plan with a chunk that completes no prompt does not repeat")
        decodes = plan.decodes + len(plan.chunks)
        cached = plan.decode_context + plan.decodes + sum(item.context + item.num_tokens for item in plan.chunks)
        first = self.plan_step_time(plan)
        return [first] + self.decode_step_times(decodes, cached + decodes, steps - 1)

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
        compute = self._s_per_token * num_tokens + self._s_per_seq * num_seqs
        return "compute" if compute > self._weight_read(num_tokens) else "memory"

    def _weight_read(self, num_tokens: int) -> float:
        # Seconds to read the weights a step uses: all of a dense model's, a MoE's touched experts.
        if not self.model.experts:
            return self._weight_read_s
        return self.model.weight_bytes_read(num_tokens) * self._s_per_weight_byte

    def _constant_step_s(self, num_tokens: int, num_seqs: int) -> float:
        # Everything in a step except attention: linear layers, all-reduce, fixed overhead.
        compute = self._s_per_token * num_tokens + self._s_per_seq * num_seqs
        linear = max(compute, self._weight_read(num_tokens))
        return linear + self._allreduce_s_per_token * num_tokens + self._fixed_s

    @staticmethod
    def _check_run(num_seqs: int, context_sum: float, steps: int) -> bool:
        # True when the run has work; a run of no steps or no sequences takes no time.
        if num_seqs < 0 or context_sum < 0 or steps < 0:
            raise ValueError(
                "decode run: num_seqs, context_sum and steps must be >= 0, got "
                f"{num_seqs}, {context_sum}, {steps}"
            )
        return num_seqs > 0 and steps > 0

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
