"""What a step costs, from a worker's per-unit coefficients: the roofline's formulas.

`sim.costmodel.RooflineCostModel` checks a worker's configuration and derives the coefficients
(seconds per token, per sequence, per weight byte read, ...); a `StepPrices` holds them and prices
steps and runs of steps with a handful of multiply-adds. The simulator prices every step it runs,
so this module is part of the compiled build; it takes numbers the cost model has already checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from scheduler.actions import StepPlan

__all__ = ["StepPrices", "causal_pairs"]


def causal_pairs(chunk_tokens: int, context_before: int) -> float:
    """Causal query-key pairs of a prefill chunk of q tokens after c tokens: q*c + q*(q+1)/2."""
    q = chunk_tokens
    return q * context_before + q * (q + 1) / 2


class StepPrices:
    """Seconds of a step of one worker: linear layers (the larger of their compute and their weight
    read), all-reduce, prefill attention, decode KV reads and a fixed overhead per step."""

    __slots__ = ("s_per_token", "s_per_seq", "weight_read_s", "s_per_pair", "s_per_kv_token", "allreduce_s_per_token",
                 "fixed_s", "experts_read_s")

    def __init__(self, s_per_token: float, s_per_seq: float, weight_read_s: float, s_per_pair: float,
                 s_per_kv_token: float, allreduce_s_per_token: float, fixed_s: float,
                 experts_read_s: Callable[[int], float] | None = None) -> None:
        self.s_per_token = s_per_token  # linear-layer compute per token
        self.s_per_seq = s_per_seq  # the LM head, once per sequence in the step
        self.weight_read_s = weight_read_s  # reading every weight once (a dense model's step)
        self.s_per_pair = s_per_pair  # prefill attention per causal query-key pair
        self.s_per_kv_token = s_per_kv_token  # a decode's KV read per context token
        self.allreduce_s_per_token = allreduce_s_per_token
        self.fixed_s = fixed_s  # overhead and all-reduce latency, per step
        # a mixture of experts reads the experts a step's tokens touch: seconds for n tokens
        self.experts_read_s = experts_read_s

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
            self.constant_step_s(num_tokens, num_seqs)
            + self.s_per_pair * prefill_attn_pairs
            + self.s_per_kv_token * decode_context
        )

    def decode_run_time(self, num_seqs: int, context_sum: float, steps: int) -> float:
        """Total seconds of `steps` pure-decode steps of `num_seqs` sequences.

        context_sum is the summed context at the first step; it grows by num_seqs each step.
        Only the KV read term changes between steps, so the total is a constant times `steps`
        plus an arithmetic series.
        """
        if not _has_work(num_seqs, context_sum, steps):
            return 0.0
        contexts = steps * context_sum + num_seqs * steps * (steps - 1) / 2
        return steps * self.constant_step_s(num_seqs, num_seqs) + self.s_per_kv_token * contexts

    def decode_step_times(self, num_seqs: int, context_sum: float, steps: int) -> list[float]:
        """Per-step seconds of the run `decode_run_time` prices: each the `step_time` of its step,
        to the bit (a list, not an array: a run is short, where numpy's per-call cost exceeds the work)."""
        if not _has_work(num_seqs, context_sum, steps):
            return [0.0] * max(steps, 0)
        constant, per_token = self.constant_step_s(num_seqs, num_seqs), self.s_per_kv_token
        return [constant + per_token * (context_sum + num_seqs * i) for i in range(steps)]

    def plan_step_time(self, plan: StepPlan) -> float:
        """Seconds of one step of a StepPlan."""
        tokens, pairs, context = plan.decodes, 0.0, plan.decode_context + plan.decodes
        for item in plan.chunks:
            tokens += item.num_tokens
            if item.is_decode:  # a one-token chunk reads its context like a decode
                context += item.context + 1
            else:
                pairs += causal_pairs(item.num_tokens, item.context)
        return self.step_time(tokens, pairs, context, plan.decodes + len(plan.chunks))

    def plan_step_times(self, plan: StepPlan, steps: int) -> list[float]:
        """Per-step seconds of a run of `steps` steps of a StepPlan: its decodes repeated, or its
        prefill step and then decodes of all (each chunk completes a prompt that goes on decoding)."""
        if not plan.chunks:
            return self.decode_step_times(plan.decodes, plan.decode_context + plan.decodes, steps)
        cached = plan.decode_context + plan.decodes
        for item in plan.chunks:
            if not item.samples:
                raise ValueError("plan_step_times: a plan with a chunk that completes no prompt does not repeat")
            cached += item.context + item.num_tokens
        decodes = plan.decodes + len(plan.chunks)
        return [self.plan_step_time(plan)] + self.decode_step_times(decodes, cached + decodes, steps - 1)

    def weight_read(self, num_tokens: int) -> float:
        """Seconds to read the weights a step of `num_tokens` tokens uses."""
        return self.weight_read_s if self.experts_read_s is None else self.experts_read_s(num_tokens)

    def linear_s(self, num_tokens: int, num_seqs: int) -> float:
        """The linear layers' compute at `num_tokens` of `num_seqs` (before the weight-read roof)."""
        return self.s_per_token * num_tokens + self.s_per_seq * num_seqs

    def constant_step_s(self, num_tokens: int, num_seqs: int) -> float:
        """Everything in a step except attention: linear layers, all-reduce, fixed overhead."""
        linear = max(self.linear_s(num_tokens, num_seqs), self.weight_read(num_tokens))
        return linear + self.allreduce_s_per_token * num_tokens + self.fixed_s


def _has_work(num_seqs: int, context_sum: float, steps: int) -> bool:
    # True when the run has work; a run of no steps or no sequences takes no time.
    if num_seqs < 0 or context_sum < 0 or steps < 0:
        raise ValueError(
            f"decode run: num_seqs, context_sum and steps must be >= 0, got {num_seqs}, {context_sum}, {steps}"
        )
    return num_seqs > 0 and steps > 0
