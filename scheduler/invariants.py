"""Invariants of the core, checked by tests and, with `debug_checks`, after every call.

`check(scheduler)` raises `InvariantError` naming the first broken rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .request import RequestState

if TYPE_CHECKING:
    from .core import Scheduler


class InvariantError(AssertionError):
    """The core's state contradicts one of its own rules: a bug in fairbatch, not in the caller."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantError(message)


def check(scheduler: "Scheduler") -> None:
    check_requests(scheduler)
    check_workers(scheduler)
    check_tenants(scheduler)


def check_requests(scheduler: "Scheduler") -> None:
    """Every submitted request is live exactly once or ended exactly once."""
    counts = scheduler.counts
    live = scheduler.live
    _require(
        counts.submitted == counts.ended + len(live),
        f"request conservation: submitted {counts.submitted} != ended {counts.ended} + live {len(live)}",
    )
    queued = [seq for queue in scheduler.queues() for seq in queue]
    running = [seq for worker in scheduler.workers.values() for seq in worker.running]
    placed = queued + running
    _require(len(placed) == len({id(seq) for seq in placed}), "a request is in two places at once")
    _require(len(placed) == len(live), f"{len(live)} live requests but {len(placed)} queued or running")
    for seq in queued:
        _require(seq.state is RequestState.QUEUED, f"{seq!r} is in a queue but not QUEUED")
        _require(seq.blocks == 0 and seq.computed == 0, f"{seq!r} is queued but holds KV")
    for seq in running:
        _require(seq.state is RequestState.RUNNING, f"{seq!r} is on a worker but not RUNNING")
        _require(live.get(seq.id) is seq, f"{seq!r} runs but is not live")
        _require(0 <= seq.computed <= seq.target, f"{seq!r} computed more than its tokens")
        _require(seq.generated <= seq.request.max_new_tokens, f"{seq!r} generated past max_new_tokens")


def check_workers(scheduler: "Scheduler") -> None:
    """KV conservation (free + the requests' own blocks + the cached blocks = total; a cached block
    is held by exactly the running requests whose prompts start with it) and per-worker limits."""
    config = scheduler.config
    for worker in scheduler.workers.values():
        pool = worker.pool
        own = sum(seq.blocks - seq.cached for seq in worker.running)
        cached = len(worker.cache) if worker.cache is not None else 0
        _require(0 <= pool.free <= pool.total, f"worker {worker.id}: free blocks {pool.free} outside [0, {pool.total}]")
        _require(pool.free + own + cached == pool.total,
                 f"worker {worker.id}: {pool.free} free + {own} own + {cached} cached != {pool.total} blocks")
        _check_cache(worker)
        _require(len(worker.running) <= config.max_num_seqs, f"worker {worker.id}: more than max_num_seqs running")
        for seq in worker.running:
            _require(seq.worker == worker.id, f"{seq!r} runs on worker {worker.id} but is bound elsewhere")
            _require(seq.blocks >= pool.blocks_for(seq.computed), f"{seq!r} has KV beyond its blocks")
        _check_decode_set(worker)
        _check_holdings(worker)
        if worker.inflight is not None:
            tokens = sum(n for _, n in worker.inflight) + worker.decode.size
            _require(tokens <= config.max_num_batched_tokens,
                     f"worker {worker.id}: step of {tokens} tokens over budget")


def _check_holdings(worker) -> None:
    # What isolation reads of each tenant on the worker: its running requests and their prompts.
    seqs: dict[int, int] = {}
    prompts: dict[int, int] = {}
    for seq in worker.running:
        seqs[seq.tenant] = seqs.get(seq.tenant, 0) + 1
        prompts[seq.tenant] = prompts.get(seq.tenant, 0) + seq.request.prompt_tokens
    _require(worker.seqs_of == seqs and worker.prompt_of == prompts,
             f"worker {worker.id}: holdings {worker.seqs_of}, {worker.prompt_of} != running {seqs}, {prompts}")


def _check_cache(worker) -> None:
    """Each cached block is held by as many running requests as reference it through their prompt's
    leading blocks, and a request holds cached blocks only of its own prompt."""
    holders: dict[int, int] = {}
    for seq in worker.running:
        _require(0 <= seq.cached <= min(len(seq.hashes), seq.blocks), f"{seq!r} holds {seq.cached} cached blocks")
        for block_hash in seq.hashes[:seq.cached]:
            holders[block_hash] = holders.get(block_hash, 0) + 1
    cache = worker.cache
    if cache is None:
        _require(not holders, f"worker {worker.id}: requests hold cached blocks with caching off")
        return
    _require(holders == cache.holders(), f"worker {worker.id}: cache holders {cache.holders()} != requests' {holders}")
    _require(not set(cache.idle()) & set(holders), f"worker {worker.id}: a held block is also idle")


def _check_decode_set(worker) -> None:
    """The decode set's aggregates equal what its members say, and it holds exactly the running
    requests that are not prefilling."""
    decode = worker.decode
    members = [seq for seq in worker.running if seq.decoding_on is decode]
    _require(len(members) + len(worker.prefilling) == len(worker.running),
             f"worker {worker.id}: running requests neither prefilling nor decoding, or both")
    _require(decode.size == len(members), f"worker {worker.id}: decode set counts {decode.size}, has {len(members)}")
    context = sum(seq.computed for seq in members)
    _require(decode.context == context, f"worker {worker.id}: decode context {decode.context} != {context}")
    tenants: dict[int, int] = {}
    for seq in members:
        tenants[seq.tenant] = tenants.get(seq.tenant, 0) + 1
        _require(seq.remaining == 1, f"{seq!r} decodes but has {seq.remaining} tokens to compute")
    _require(decode.tenants == tenants, f"worker {worker.id}: decode set tenants {decode.tenants} != {tenants}")


def check_tenants(scheduler: "Scheduler") -> None:
    """The ledger's per-tenant counts match the requests themselves."""
    ledger = scheduler.ledger
    queued = [0] * len(scheduler.tenants)
    queued_tokens = [0] * len(scheduler.tenants)
    running = [0] * len(scheduler.tenants)
    for seq in scheduler.live.values():
        (queued if seq.state is RequestState.QUEUED else running)[seq.tenant] += 1
        if seq.state is RequestState.QUEUED:
            queued_tokens[seq.tenant] += seq.request.prompt_tokens
    _require(queued == ledger.queued, f"ledger queued {ledger.queued} != actual {queued}")
    _require(queued_tokens == ledger.queued_tokens, f"ledger queued tokens {ledger.queued_tokens} != {queued_tokens}")
    _require(running == ledger.running, f"ledger running {ledger.running} != actual {running}")
