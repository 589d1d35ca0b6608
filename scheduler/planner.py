"""Step formation: what one worker computes in its next step (continuous batching, Sarathi-style).

A `StepBudget` holds the step's token budget and sequence slots; `form_step` fills it in three
passes: running decodes (one token each), then running prefills (chunked), then new admissions in
the policy's order (chunked to what is left). When a running request needs a KV block and none is
free, the policy names a victim to preempt. The planner decides; the core's hooks apply each
decision at once, so later choices see the blocks earlier ones freed or took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .actions import ScheduledItem
from .kv import BlockPool, DecodeGrowth
from .policies.base import Policy, WaitQueue
from .request import RequestState, Sequence


@dataclass(slots=True)
class StepBudget:
    """Tokens left in the step being formed, and free sequence slots on the worker.

    A running request holds its slot whether or not it gets tokens this step.
    """

    tokens: int
    seqs: int


@dataclass(frozen=True, slots=True)
class StepHooks:
    """The core's bookkeeping, called by the planner as it decides."""

    admit: Callable[[Sequence], None]
    preempt: Callable[[Sequence], None]


def form_step(
    running: list[Sequence],
    pool: BlockPool,
    queue: WaitQueue | None,
    policy: Policy,
    budget: StepBudget,
    hooks: StepHooks,
) -> dict[Sequence, int]:
    """Choose the step's requests and their token counts; returns {sequence: tokens}."""
    chosen: dict[Sequence, int] = {}
    slots = budget.seqs
    decodes: list[Sequence] = []
    prefills: list[Sequence] = []
    for seq in running:  # inlined `remaining`: this loop runs for every running request every step
        (decodes if seq.request.prompt_tokens + seq.generated - seq.computed == 1 else prefills).append(seq)
    for seq in decodes:
        if seq.state is RequestState.RUNNING and _grow_kv(seq, running, pool, policy, budget, chosen, hooks):
            budget.tokens -= 1
            chosen[seq] = 1
    preempted_any = budget.seqs > slots  # each preemption gave a slot back
    for seq in prefills:
        if budget.tokens == 0:
            break
        if seq.state is RequestState.RUNNING:
            tokens = min(seq.remaining, budget.tokens)
            budget.tokens -= tokens
            chosen[seq] = tokens
    if queue is not None and not preempted_any:  # admitting right after a preemption would thrash
        _admit(queue, pool, budget, chosen, hooks)
    return chosen


def _grow_kv(seq, running, pool, policy, budget, chosen, hooks) -> bool:
    """Get the block seq's next token needs, preempting victims; False if seq itself was preempted."""
    if seq.computed < seq.blocks * pool.block_size:
        return True
    need = pool.blocks_for(seq.computed + 1) - seq.blocks
    while need > pool.free:
        victim = policy.victim([s for s in running if s.state is RequestState.RUNNING])
        if victim in chosen:
            budget.tokens += chosen.pop(victim)
        budget.seqs += 1
        hooks.preempt(victim)
        if victim is seq:
            return False
    pool.allocate(need)
    seq.blocks += need
    return True


def _admit(queue: WaitQueue, pool: BlockPool, budget: StepBudget, chosen, hooks) -> None:
    """Admit queued requests in policy order while the head fits (no skipping: order is the policy's)."""
    while budget.tokens > 0 and budget.seqs > 0:
        seq = queue.peek()
        if seq is None:
            return
        blocks = pool.blocks_for(seq.target)
        if not pool.can_admit(blocks):
            return
        queue.pop()
        pool.allocate(blocks)
        seq.blocks = blocks
        hooks.admit(seq)
        tokens = min(seq.remaining, budget.tokens)
        budget.tokens -= tokens
        budget.seqs -= 1
        chosen[seq] = tokens


def repeat_limit(running: list[Sequence], chosen: dict[Sequence, int], pool: BlockPool,
                 queue: WaitQueue | None, budget: StepBudget, preempted: bool) -> int:
    """How many identical steps the plan may run before any decision could differ (DESIGN, Multi-step).

    Only a batch of pure decodes repeats, and only while: no request reaches max_new_tokens
    before the last step, the blocks the decodes grow into are free (so no preemption), and no
    queued request could be admitted (the queue is empty, or every sequence slot is taken; a
    request that arrives later is the driver's to cut the run for). EOS is the driver's to cut too.
    """
    if preempted or len(chosen) != len(running):
        return 1
    if queue is not None and len(queue) and budget.seqs > 0:
        return 1  # the head is blocked by KV, and the policy's order may change under it
    steps = 1 << 62
    for seq, tokens in chosen.items():
        if tokens != 1 or seq.remaining != 1:
            return 1  # a prefill chunk: the next step differs
        steps = min(steps, seq.request.max_new_tokens - seq.generated)
    if steps <= 1:
        return 1
    growth = DecodeGrowth((seq.computed for seq in chosen), pool.block_size)
    return min(steps, growth.max_steps(pool.free))


def to_items(chosen: dict[Sequence, int]) -> tuple[ScheduledItem, ...]:
    return tuple(
        ScheduledItem(seq.id, tokens, seq.computed, tokens == seq.remaining) for seq, tokens in chosen.items()
    )
