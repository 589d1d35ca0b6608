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
from .kv import BlockPool
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
    decodes = [seq for seq in running if seq.remaining == 1]
    prefills = [seq for seq in running if seq.remaining > 1]
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


def to_items(chosen: dict[Sequence, int]) -> tuple[ScheduledItem, ...]:
    return tuple(
        ScheduledItem(seq.id, tokens, seq.computed, tokens == seq.remaining) for seq, tokens in chosen.items()
    )
