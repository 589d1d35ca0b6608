"""The scheduler's configuration: `SchedulerConfig`, checked when it is made, each error naming
the key as a config file spells it (`scheduler.<key>`) and its allowed range. `scheduler.core`
re-exports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError
from .service import ServiceWeights

CACHE_ISOLATION = ("none", "tenant")  # who may hit whose cached blocks: anyone, or the same tenant only


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_batched_tokens: int = 4096  # tokens computed per step, prefill chunks and decodes together
    max_num_seqs: int = 256  # requests running on one worker at once
    block_size: int = 16  # tokens per KV block
    max_model_len: int | None = None  # longest prompt + max_new_tokens admitted; None: what a worker's KV holds
    kv_watermark: float = 0.01  # fraction of a worker's blocks kept free when admitting
    service_weights: tuple[float, float] = (1.0, 2.0)  # (w_p, w_q): cost of a prompt / output token
    max_queued: int | None = None  # requests waiting in all queues together; None: no cap
    max_queued_tokens: int | None = None  # prompt tokens waiting in all queues together
    enable_prefix_caching: bool = True  # full prompt blocks shared by content and kept after, as in vLLM
    cache_isolation: str = "none"  # "tenant": no tenant hits another's blocks (vLLM's cache_salt)
    # Isolation inside the step, for policies that share by weight (scheduler.isolation, planner).
    isolation: bool = True  # off: every mechanism below is off
    fair_prefill: bool = True  # under-share tenants' prefill first, over-share prefill after the admissions
    over_share_prefill_tokens: int | None = None  # cap on over-share prefill tokens per step; None: what is left
    slot_headroom: int | None = None  # the last free slots kept from a tenant at its share; None: max_num_seqs // 64
    kv_headroom: float = 0.02  # the last fraction of KV blocks kept from a tenant at its fair share
    latency_budget_tokens: int | None = None  # step tokens while an under-share first token waits; 0: no
    # limit; None: a quarter of max_num_batched_tokens (1,024 of 4,096: see README, Isolation)
    share_preempt_after_s: float | None = None  # preempt over-share requests for an under-share one waiting longer; None: never
    debug_checks: bool = False  # check every invariant after every call (slow; for tests)

    def __post_init__(self) -> None:
        for key in ("max_num_batched_tokens", "max_num_seqs", "block_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"scheduler.{key}: must be an integer >= 1, got {value!r}")
        if self.max_num_seqs > self.max_num_batched_tokens:
            raise ConfigError(
                f"scheduler.max_num_seqs: must be <= max_num_batched_tokens ({self.max_num_batched_tokens}) so "
                f"every running request can decode each step, got {self.max_num_seqs}"
            )
        if not 0 <= self.kv_watermark < 1:
            raise ConfigError(f"scheduler.kv_watermark: must be in [0, 1), got {self.kv_watermark!r}")
        if len(self.service_weights) not in (2, 3):
            raise ConfigError("scheduler.service_weights: must be two or three numbers >= 0 ([w_p, w_q] or "
                              f"[w_p, w_q, w_cached]), got {self.service_weights!r}")
        if not isinstance(self.enable_prefix_caching, bool):
            raise ConfigError(f"scheduler.enable_prefix_caching: must be true or false, got {self.enable_prefix_caching!r}")
        if self.cache_isolation not in CACHE_ISOLATION:
            raise ConfigError(f"scheduler.cache_isolation: unknown {self.cache_isolation!r}; allowed: "
                              + ", ".join(CACHE_ISOLATION))
        ServiceWeights(*self.service_weights)  # checks each
        self._check_isolation()
        for key in ("max_queued", "max_queued_tokens", "max_model_len"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"scheduler.{key}: must be an integer >= 1 or unset, got {value!r}")

    @property
    def headroom_seqs(self) -> int:
        """The slot headroom: as set, or one slot in 64 (4 of vLLM's default 256)."""
        return self.max_num_seqs // 64 if self.slot_headroom is None else self.slot_headroom

    @property
    def step_latency_budget(self) -> int:
        """The latency budget: as set, or a quarter of max_num_batched_tokens."""
        budget = self.latency_budget_tokens
        return self.max_num_batched_tokens // 4 if budget is None else budget

    def _check_isolation(self) -> None:
        for key in ("isolation", "fair_prefill"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"scheduler.{key}: must be true or false, got {getattr(self, key)!r}")
        tokens = self.max_num_batched_tokens
        if self.slot_headroom is not None:
            check_int("slot_headroom", self.slot_headroom, 0, self.max_num_seqs - 1,
                       "max_num_seqs - 1: a tenant at its fair share still gets a slot; or unset")
        if self.latency_budget_tokens is not None:
            check_int("latency_budget_tokens", self.latency_budget_tokens, 0, tokens,
                       "max_num_batched_tokens; 0: off; or unset")
        if self.over_share_prefill_tokens is not None:
            check_int("over_share_prefill_tokens", self.over_share_prefill_tokens, 0, tokens,
                       "max_num_batched_tokens, or unset")
        free = 1 - self.kv_watermark
        if not _is_number(self.kv_headroom) or not 0 <= self.kv_headroom < min(0.5, free):
            raise ConfigError(f"scheduler.kv_headroom: must be in [0, {min(0.5, free):g}) (at most half the KV, "
                              f"and less than what kv_watermark leaves), got {self.kv_headroom!r}")
        bound = self.share_preempt_after_s
        if bound is not None and (not _is_number(bound) or not 0 <= bound < math.inf):
            raise ConfigError(f"scheduler.share_preempt_after_s: must be a number of seconds >= 0, or unset (never), "
                              f"got {bound!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(key: str, value: object, low: int, high: int, high_is: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"scheduler.{key}: must be an integer in [{low}, {high}] ({high_is}), got {value!r}")
