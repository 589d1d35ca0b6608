"""Small pools for the runtime tests: a fixed step time, tiny KV blocks and steps."""

from __future__ import annotations

from scheduler.core import Scheduler, SchedulerConfig
from scheduler.request import Tenant
from scheduler.runtime import SimulatedWorker

TENANTS = (Tenant("a"), Tenant("b"))


class FixedCost:
    """A cost model where every step takes `seconds`."""

    def __init__(self, seconds: float = 0.001) -> None:
        self.seconds = seconds

    def plan_step_time(self, plan) -> float:
        return self.seconds


def small_pool(workers: int = 1, kv_blocks: int = 64, speed: float = 0.0, step_s: float = 0.001,
               **config) -> tuple[Scheduler, dict[int, SimulatedWorker]]:
    """A scheduler with 4-token blocks and 16-token steps, and simulated workers."""
    settings = dict(max_num_batched_tokens=16, max_num_seqs=4, block_size=4, kv_watermark=0.0,
                    debug_checks=True) | config
    scheduler = Scheduler(TENANTS, "fcfs", "global", SchedulerConfig(**settings))
    return scheduler, {w: SimulatedWorker(FixedCost(step_s), kv_blocks, speed) for w in range(workers)}
