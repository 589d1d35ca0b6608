"""Isolation inside the step: which tenants hold more than their fair share of one worker.

Fair order at admission is not enough: a step's token budget, its sequence slots and its KV are
taken by whatever was admitted first, so a flooder admitted while the others were idle keeps them.
A `Standing` is taken when a plan is formed, for a policy that shares by weight
(`Policy.shares_fairly`). Three resources of the worker are shared max-min by tenant weight among
the tenants with work on it (running there, or queued):

- sequence slots: max_num_seqs less the slot headroom, against the requests each tenant runs;
- KV: the worker's admissible tokens less the KV headroom, against the prompt tokens each holds;
- the step's prefill tokens: what the decodes leave of max_num_batched_tokens, against the prompt
  tokens each still has to prefill here.

A tenant holding more than its share of slots or KV, or more than its share of the step's prefill
while it has more requests queued, is *over share*: its prefill gets what is left
of the step (`planner.StepBuilder`), and it is the victim when an under-share request has waited
too long for room. A tenant holding at least its share of slots or KV is *full*: it may not take
the last free slots or the last KV blocks, the headroom, which stay for the others' arrivals.
A tenant alone on a worker is never over share, so isolation costs a lone tenant nothing but the
headroom.
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
    prefill: Mapping[int, int]  # prompt tokens its running requests still have to compute
    queued: Mapping[int, int]  # requests queued (the worker may admit them)
    queued_tokens: Mapping[int, int]  # their prompt tokens


@dataclass(frozen=True, slots=True)
class Capacity:
    """What a worker shares in one plan."""

    seqs: float  # sequence slots, less the slot headroom
    kv: float  # admissible KV tokens, less the KV headroom
    prefill: float  # the step's tokens left after the decodes


class Standing:
    """Who is over share and who is full on a worker, for one plan; `admitted` keeps it current as
    the plan admits requests (the shares stay those the plan started with)."""

    __slots__ = ("_seqs", "_kv", "_seq_share", "_kv_share", "over", "full")

    def __init__(self, held: Holdings, capacity: Capacity, weights: Seq[float]) -> None:
        tenants = set(held.seqs) | set(held.queued)
        self._seqs = {t: held.seqs.get(t, 0) for t in tenants}
        self._kv = {t: held.kv.get(t, 0) for t in tenants}
        seq_demand = {t: self._seqs[t] + held.queued.get(t, 0) for t in tenants}
        kv_demand = {t: self._kv[t] + held.queued_tokens.get(t, 0) for t in tenants}
        if len(tenants) < 2:  # alone: its share of each is its demand, up to the capacity
            self._seq_share = {t: min(d, capacity.seqs) for t, d in seq_demand.items()}
            self._kv_share = {t: min(d, capacity.kv) for t, d in kv_demand.items()}
            self.over: set[int] = set()
            self.full = {t for t in tenants if self._is_full(t)}
            return
        self._seq_share = max_min_shares(capacity.seqs, seq_demand, weights)
        self._kv_share = max_min_shares(capacity.kv, kv_demand, weights)
        prefill = {t: held.prefill.get(t, 0) for t in tenants}
        prefill_share = max_min_shares(capacity.prefill, {t: prefill[t] + held.queued_tokens.get(t, 0)
                                                          for t in tenants}, weights)
        # More prefill than its share of the step is over share only for a tenant that asks for
        # still more (it has requests queued): one long prompt of a quiet tenant is not a flood.
        self.over = {t for t in tenants if self._seqs[t] > self._seq_share[t] or self._kv[t] > self._kv_share[t]
                     or (prefill[t] > prefill_share[t] and held.queued.get(t, 0))}
        self.full = {t for t in tenants if self._is_full(t)}

    def _is_full(self, tenant: int) -> bool:
        seqs, kv = self._seqs[tenant], self._kv[tenant]
        return (seqs > 0 and seqs >= self._seq_share[tenant]) or (kv > 0 and kv >= self._kv_share[tenant])

    def admitted(self, tenant: int, prompt_tokens: int) -> None:
        """The plan admitted a request of `tenant` with this prompt."""
        self._seqs[tenant] = self._seqs.get(tenant, 0) + 1
        self._kv[tenant] = self._kv.get(tenant, 0) + prompt_tokens
        if tenant in self._seq_share and self._is_full(tenant):
            self.full.add(tenant)
