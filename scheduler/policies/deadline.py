"""Deadline policies: `edf` (earliest TTFT deadline first) and `slo` (least slack, goodput first).

A request's deadline is its arrival plus its tenant's TTFT SLO (`default_ttft_ms` for tenants
without one). `slo` orders by slack, the deadline less an estimate of the prefill time
(`prefill_ms_per_token` x prompt tokens), and puts requests that can no longer meet their deadline
behind all that still can: serving a lost cause first would make others miss too, and goodput
counts only requests that meet every SLO.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..sequence import Sequence
from .base import KeyedQueue, Policy, WaitQueue


def _positive(key: str, value) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"scheduler.policy_params.{key}: must be a number > 0, got {value!r}")
    return float(value)


class EDF(Policy):
    name = "edf"

    def __init__(self, default_ttft_ms: float = 10_000.0) -> None:
        self.default_ttft_s = _positive("default_ttft_ms", default_ttft_ms) / 1000

    def bind(self, tenants, ledger) -> None:
        super().bind(tenants, ledger)
        self._ttft_s = [
            self.default_ttft_s if t.slo.ttft_ms is None else t.slo.ttft_ms / 1000 for t in self.tenants
        ]

    def deadline(self, seq: Sequence) -> float:
        return seq.arrival + self._ttft_s[seq.tenant]

    def new_queue(self) -> WaitQueue:
        return KeyedQueue(self.deadline)

    def victim(self, running):
        return max(running, key=lambda seq: (self.deadline(seq), seq.order))

    def decision_keys(self, seq: Sequence) -> tuple[tuple[str, float], ...]:
        return (("deadline_s", self.deadline(seq)), ("submitted", seq.order))


class LeastSlack(EDF):
    name = "slo"

    def __init__(self, default_ttft_ms: float = 10_000.0, prefill_ms_per_token: float = 0.03) -> None:
        super().__init__(default_ttft_ms)
        self.prefill_s_per_token = _positive("prefill_ms_per_token", prefill_ms_per_token) / 1000

    def latest_start(self, seq: Sequence) -> float:
        """The last moment its prefill can start and still meet the TTFT deadline."""
        return self.deadline(seq) - self.prefill_s_per_token * seq.request.prompt_tokens

    def bind(self, tenants, ledger) -> None:
        super().bind(tenants, ledger)
        self._queues: list[SlackQueue] = []

    def new_queue(self) -> WaitQueue:
        queue = SlackQueue(self)
        self._queues.append(queue)
        return queue

    def advance(self, now: float) -> None:
        super().advance(now)
        for queue in self._queues:
            queue.demote_late()

    def victim(self, running):
        return max(running, key=lambda seq: (self.latest_start(seq), seq.order))

    def decision_keys(self, seq: Sequence) -> tuple[tuple[str, float], ...]:
        latest = self.latest_start(seq)
        return (("latest_start_s", latest), ("slack_s", latest - self.now), ("late", float(latest < self.now)),
                ("submitted", seq.order))


class SlackQueue(WaitQueue):
    """Least slack first among requests that can still make it; then the late ones, oldest first.

    A request is late once the policy's clock (the core's `now`) passes its latest start. The
    policy moves the requests that have become late when its clock advances (`demote_late`), so
    between two moves of the clock the on-time queue holds on-time requests only and a peek
    changes nothing.
    """

    def __init__(self, policy: LeastSlack) -> None:
        self._policy = policy
        self._on_time = KeyedQueue(policy.latest_start)
        self._late = KeyedQueue(lambda seq: seq.arrival)

    def push(self, seq: Sequence) -> None:
        late = self._policy.latest_start(seq) < self._policy.now
        (self._late if late else self._on_time).push(seq)

    def demote_late(self) -> None:
        """Move the requests whose latest start has passed to the late queue."""
        now, latest_start = self._policy.now, self._policy.latest_start
        while (head := self._on_time.peek()) is not None and latest_start(head) < now:
            self._late.push(self._on_time.pop())

    def peek(self) -> Sequence | None:
        head = self._on_time.peek()
        return head if head is not None else self._late.peek()

    def pop(self) -> Sequence:
        head = self.peek()
        assert head is not None, "pop from an empty queue"
        queue = self._on_time if self._on_time.peek() is head else self._late
        return queue.pop()

    def remove(self, seq: Sequence) -> None:
        (self._on_time if seq in self._on_time else self._late).remove(seq)

    def tenant_heads(self, tenants, limit: int) -> list[Sequence]:
        heads = self._on_time.tenant_heads(tenants, limit)
        rest = set(tenants) - {seq.tenant for seq in heads}
        return heads + (self._late.tenant_heads(rest, limit) if rest else [])

    def __len__(self) -> int:
        return len(self._on_time) + len(self._late)

    def __iter__(self):
        yield from self._on_time
        yield from self._late
