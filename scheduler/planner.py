"""Step formation: what one worker computes in its next step (continuous batching, Sarathi-style).

A `StepBudget` holds the step's token budget and sequence slots; `form_step` fills it in three
passes: the decode set (one token each, in bulk), then running prefills (chunked), then new
admissions in the policy's order (chunked to what is left). When decodes need KV blocks and too few
are free, the policy names victims to preempt. The planner decides; the core's hooks apply each
decision at once, so later choices see the blocks earlier ones freed or took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from .actions import ScheduledItem
from .decodeset import DecodeSet
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
    worker: "WorkerView",
    queue: WaitQueue | None,
    policy: Policy,
    budget: StepBudget,
    hooks: StepHooks,
) -> list[tuple[Sequence, int]]:
    """Fill the step: the decode set decodes, then chunks; returns the chunks as (sequence, tokens)."""
    slots = budget.seqs
    decode, pool = worker.decode, worker.pool
    if decode.size:
        need = decode.blocks_needed()
        if need <= pool.free:  # the common case: one allocation for the whole set
            pool.allocate(need)
        else:
            _grow_one_by_one(worker, policy, budget, hooks)
        decode.reserved = 1
        budget.tokens -= decode.size
    preempted_any = budget.seqs > slots  # each preemption gave a slot back
    chunks: list[tuple[Sequence, int]] = []
    for seq in worker.prefilling:
        if budget.tokens == 0:
            break
        tokens = min(seq.remaining, budget.tokens)
        budget.tokens -= tokens
        chunks.append((seq, tokens))
    if queue is not None and not preempted_any:  # admitting right after a preemption would thrash
        _admit(queue, pool, budget, chunks, hooks)
    return chunks


def _grow_one_by_one(worker: "WorkerView", policy: Policy, budget: StepBudget, hooks: StepHooks) -> None:
    """Too few free blocks for every decode: take them out of the set and grow each in running
    order, preempting the policy's victims; the survivors join again, holding their next block."""
    decode, pool, running = worker.decode, worker.pool, worker.running
    members = [seq for seq in running if seq.decoding_on is decode]
    for seq in members:
        decode.leave(seq)
    for seq in members:
        if seq.state is RequestState.RUNNING:
            _grow_kv(seq, running, pool, policy, budget, hooks)
    for seq in members:
        if seq.state is RequestState.RUNNING:
            decode.join(seq)  # holding the block of its next token: the set's `reserved` one


def _grow_kv(seq, running, pool, policy, budget, hooks) -> None:
    """Get the block seq's next token needs, preempting victims (perhaps seq itself)."""
    need = pool.blocks_for(seq.computed + 1) - seq.blocks
    while need > pool.free:
        victim = policy.victim([s for s in running if s.state is RequestState.RUNNING])
        budget.seqs += 1
        hooks.preempt(victim)
        if victim is seq:
            return
    pool.allocate(need)
    seq.blocks += need


def _admit(queue: WaitQueue, pool: BlockPool, budget: StepBudget, chunks, hooks) -> None:
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
        chunks.append((seq, tokens))


def repeat_limit(worker: "WorkerView", chunks: list, queue: WaitQueue | None, budget: StepBudget,
                 preempted: bool) -> int:
    """How many identical steps the plan may run before any decision could differ (DESIGN, Multi-step).

    Only a step of the decode set alone repeats (no prefill waits, so no chunk is cut short), and
    only while: no member reaches max_new_tokens before the last step, the blocks the members grow
    into are free (so no preemption), and no queued request could be admitted (the queue is
    empty, or every sequence slot is taken; a request that arrives later is the driver's to cut
    the run for). EOS is the driver's to cut too.
    """
    decode = worker.decode
    if preempted or chunks or worker.prefilling or not decode.size:
        return 1
    if queue is not None and len(queue) and budget.seqs > 0:
        return 1  # the head is blocked by KV, and the policy's order may change under it
    steps = decode.steps_to_length()
    if steps <= 1:
        return 1
    return min(steps, decode.growth().max_steps(worker.pool.free))


def to_items(chunks: list[tuple[Sequence, int]]) -> tuple[ScheduledItem, ...]:
    return tuple(ScheduledItem(seq.id, tokens, seq.computed, tokens == seq.remaining) for seq, tokens in chunks)


class WorkerView(Protocol):
    """What the planner reads of a worker (the core's WorkerState)."""

    pool: BlockPool
    decode: DecodeSet
    running: dict[Sequence, None]  # in admission order
    prefilling: dict[Sequence, None]  # running requests not in the decode set, in admission order
