"""Isolation inside the step: which tenants hold more than their fair share of one worker.

Fair order at admission is not enough: a step's token budget, its sequence slots and its KV are
taken by whatever was admitted first, so a flooder admitted while the others were idle keeps them.
A `Standing` is taken when a plan is formed, for a policy that shares by weight
(`Policy.shares_fairly`), over the tenants with work on the worker (running there, or queued):

- sequence slots (max_num_seqs less the slot headroom) and KV (the admissible tokens less the KV
  headroom, against the prompt tokens each tenant holds) are shared max-min by weight. A tenant
  holding at least its share of either is *full*: it may not take the last free slots or the last
  KV blocks, the headroom, which stay for the others' arrivals. Arrivals only: a tenant that is
  not full with more requests queued than the headroom has slots is backlogged, and among
  backlogged tenants the policy's order decides who takes the last slots (else a saturated pool
  would hand its slots out by count, not by the policy, and a tenant of many short requests would
  fall behind the others' counters without bound).
- A tenant that asks for more (it has requests queued) while it computes more per step than its
  equal weighted split of max_num_batched_tokens (a token per decode, and its recent prefill per
  step) is *over share*: its prefill gets what is left of the step (`planner.StepBuilder`), no
  more than the latency budget allows while another's first token waits, and its requests are the
  victims when an under-share request has waited too long for room.

Over share is about the step, not about what a tenant holds: a flood of long prompts holds few
slots and little KV but takes the whole step, and while it makes every step slow, a quiet tenant's
requests pile up slots and KV without being a flood. A tenant alone on a worker is never over
share, so isolation costs it nothing but the headroom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence as Seq


def max_min_shares(capacity: float, demands: Mapping[int, float], weights: Seq[float]) -> dict[int, float]:
    """Weighted max-min fair shares (water filling): each tenant gets min(demand, level x weight),
    with the level at which the shares sum to `capacity` (or every demand is met)."""
    shares: dict[int, float] = {}
    left = float(capacity)
    waiting = sorted(demands, key=lambda t: (demands[t] / weights[t], t))
    weight_left = sum(weights[t] for t in waiting)
    for i, tenant in enumerate(waiting):
        level = left / weight_left
        if demands[tenant] > level * weights[tenant]:
            for other in waiting[i:]:
                shares[other] = level * weights[other]
            return shares
        shares[tenant] = demands[tenant]
        left -= demands[tenant]
        weight_left -= weights[tenant]
    return shares


@dataclass(frozen=True, slots=True)
class Holdings:
    """What each tenant with work on a worker holds and asks for there, by tenant index."""

    seqs: Mapping[int, int]  # requests running
    kv: Mapping[int, int]  # prompt tokens of its running requests
    step: Mapping[int, float]  # tokens it computes per step: one per decode, and its recent prefill
    queued: Mapping[int, int]  # requests queued (the worker may admit them)
    queued_tokens: Mapping[int, int]  # their prompt tokens


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a worker shares in one plan."""

    seqs: float  # sequence slots, less the slot headroom
    kv: float  # admissible KV tokens, less the KV headroom
    step: float  # the step's tokens (max_num_batched_tokens)


class Standing:
    """Who is over share and who is full on a worker, for one plan; `admitted` keeps it current as
    the plan admits requests (the shares stay those the plan started with). Who is full is worked
    out when first asked (a plan with slots and KV to spare never asks)."""

    __slots__ = ("_tenants", "_seqs", "_kv", "_queued", "_queued_tokens", "_step", "_seq_share", "_kv_share",
                 "_capacity", "_weights", "over", "_full")

    def __init__(self, held: Holdings, capacity: Capacity, weights: Seq[float]) -> None:
        # copies: the plan's admissions change them (and the worker's own counts, which held reads)
        self._tenants = tenants = set(held.seqs) | set(held.queued)
        self._seqs, self._kv = dict(held.seqs), dict(held.kv)
        self._queued = {t: n for t, n in held.queued.items() if n > 0}
        self._queued_tokens = dict(held.queued_tokens)
        self._step = held.step
        self._capacity, self._weights = capacity, weights
        self._full: set[int] | None = None
        self.over: set[int] = set()
        step = held.step
        # only a tenant that computes here and has requests queued can be over share
        asking = [t for t in self._queued if t in step and step[t] > 0]
        if len(tenants) < 2 or not asking:  # alone, or none that asks for more computes here
            return
        split = capacity.step / sum(weights[t] for t in tenants)
        self.over = {t for t in asking if step[t] > split * weights[t]}

    @property
    def full(self) -> set[int]:
        """Tenants at or above their max-min share of the worker's slots or of its KV."""
        if self._full is None:
            tenants, capacity = self._tenants, self._capacity
            seqs, kv, queued, tokens = self._seqs, self._kv, self._queued, self._queued_tokens
            # what each asks for: held and queued, which admissions move from one to the other
            seq_demand = {t: seqs.get(t, 0) + queued.get(t, 0) for t in tenants}
            kv_demand = {t: kv.get(t, 0) + tokens.get(t, 0) for t in tenants}
            if len(tenants) < 2:  # alone: its share of each is its demand, up to the capacity
                self._seq_share = {t: min(d, capacity.seqs) for t, d in seq_demand.items()}
                self._kv_share = {t: min(d, capacity.kv) for t, d in kv_demand.items()}
            else:
                self._seq_share = max_min_shares(capacity.seqs, seq_demand, self._weights)
                self._kv_share = max_min_shares(capacity.kv, kv_demand, self._weights)
            self._full = {t for t in tenants if self._is_full(t)}
        return self._full

    def claim(self, tenant: int) -> float:
        """What the tenant's running requests ask of the next step, per unit of weight."""
        return self._step.get(tenant, 0) / self._weights[tenant]

    def holds_headroom(self, arriving: int) -> bool:
        """Whether the headroom is held back from full tenants: no tenant that is not full has
        more than `arriving` requests queued (one that has is backlogged, not arriving, and the
        policy orders it with the full ones)."""
        return all(tenant in self.full or queued <= arriving for tenant, queued in self._queued.items())

    def _is_full(self, tenant: int) -> bool:
        seqs, kv = self._seqs.get(tenant, 0), self._kv.get(tenant, 0)
        return (seqs > 0 and seqs >= self._seq_share[tenant]) or (kv > 0 and kv >= self._kv_share[tenant])

    def admitted(self, tenant: int, prompt_tokens: int) -> None:
        """The plan admitted a request of `tenant` with this prompt."""
        self._seqs[tenant] = self._seqs.get(tenant, 0) + 1
        self._kv[tenant] = self._kv.get(tenant, 0) + prompt_tokens
        if self._queued.get(tenant, 0) > 1:
            self._queued[tenant] -= 1
        else:
            self._queued.pop(tenant, None)
        if tenant in self._queued_tokens:
            self._queued_tokens[tenant] -= prompt_tokens
        if self._full is not None and tenant in self._seq_share and self._is_full(tenant):
            self._full.add(tenant)
