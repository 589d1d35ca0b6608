"""Tests of scheduler.placement: late binding (one global queue) against early binding (routers)."""

import pytest

from scheduler.errors import ConfigError
from scheduler.placement import PLACEMENTS, GlobalQueue, LeastLoaded, Place, RoundRobin, make_placement
from scheduler.policies import FCFS

POOL = FCFS().new_queue()
QUEUES = {w: FCFS().new_queue() for w in (0, 1, 2, 3, 5, 9)}


def own(*ids):
    return {w: QUEUES[w] for w in ids}


class View:
    """A pool as a placement reads it, made by hand: loads, KV usage and cached blocks per worker."""

    def __init__(self, load=None, kv=None, cached=None, prompt_blocks=0, prefix_key=None):
        self._load, self._kv, self._cached = load or {}, kv or {}, cached or {}
        self.prompt_blocks, self.prefix_key = prompt_blocks, prefix_key

    def load(self, worker):
        return self._load.get(worker, 0)

    def kv_usage(self, worker):
        return self._kv.get(worker, 0.0)

    def cached_blocks(self, worker):
        return self._cached.get(worker, 0)


def test_make_placement_by_name():
    assert isinstance(make_placement("global"), GlobalQueue)
    assert isinstance(make_placement("round_robin"), RoundRobin)
    assert isinstance(make_placement("least_loaded"), LeastLoaded)
    assert make_placement("global").worker_queue(FCFS().new_queue) is None  # workers pull from the pool's
    assert make_placement("round_robin").worker_queue(FCFS().new_queue) is not None


def test_unknown_placement_lists_the_allowed_names():
    with pytest.raises(ConfigError, match="scheduler.placement: unknown placement 'random'; allowed: ") as info:
        make_placement("random")
    assert str(info.value).split("allowed: ")[1].split(", ") == sorted(PLACEMENTS)


def test_unknown_placement_through_the_scheduler(make_scheduler):
    with pytest.raises(ConfigError, match="unknown placement"):
        make_scheduler(placement="nearest")


def test_global_queue_places_every_request_in_the_pools_queue_unbound():
    assert GlobalQueue().choose(POOL, {}, View()) == Place(POOL, None)


def test_round_robin_cycles_whatever_the_load():
    placement = RoundRobin()
    chosen = [placement.choose(POOL, own(3, 5, 9), View(load={5: 100})) for _ in range(7)]
    assert [place.worker for place in chosen] == [3, 5, 9, 3, 5, 9, 3]
    assert all(place.queue is QUEUES[place.worker] for place in chosen)


def test_least_loaded_picks_the_fewest_outstanding_ties_to_lowest_id():
    placement = LeastLoaded()
    load = {0: 3, 1: 1, 2: 1}
    assert placement.choose(POOL, own(0, 1, 2), View(load=load)) == Place(QUEUES[1], 1)
    load[1] = 5
    assert placement.choose(POOL, own(0, 1, 2), View(load=load)) == Place(QUEUES[2], 2)


# ----- through the scheduler ----------------------------------------------------------------------


def test_global_binds_at_admission_and_any_worker_pulls(make_scheduler, make_request):
    s = make_scheduler(placement="global", workers=(64, 64), max_num_seqs=1, max_num_batched_tokens=16)
    for rid in range(3):
        s.submit(make_request(rid), 0.0)
    assert all(s.sequence(rid).worker is None for rid in range(3))
    assert s.workers[0].queue is None and len(next(iter(s.queues()))) == 3
    assert s.plan(1, 1.0).admitted == (0,)  # worker 1 asks first and takes the head
    assert s.plan(0, 1.0).admitted == (1,)
    assert (s.sequence(0).worker, s.sequence(1).worker, s.sequence(2).worker) == (1, 0, None)


def test_round_robin_binds_at_submit_to_each_worker_in_turn(make_scheduler, make_request):
    s = make_scheduler(placement="round_robin", workers=(64, 64, 64))
    for rid in range(5):
        s.submit(make_request(rid), 0.0)
    assert [s.sequence(rid).worker for rid in range(5)] == [0, 1, 2, 0, 1]
    assert sorted(seq.id for seq in s.workers[0].queue) == [0, 3]
    assert s.plan(0, 1.0).admitted == (0, 3)  # a worker admits from its own queue only
    assert s.plan(2, 1.0).admitted == (2,)


def test_least_loaded_binds_at_submit_to_the_emptiest_worker(make_scheduler, make_request):
    s = make_scheduler(placement="least_loaded", workers=(64, 64))
    s.submit(make_request(0), 0.0)  # tie: worker 0
    s.plan(0, 1.0)  # running on 0 still counts as load
    s.submit(make_request(1), 2.0)
    s.submit(make_request(2), 2.0)  # 0: 1, 1: 1 -> tie -> 0
    s.submit(make_request(3), 2.0)  # 0: 2, 1: 1 -> 1
    assert [s.sequence(rid).worker for rid in range(4)] == [0, 1, 0, 1]


def test_early_binding_does_not_steal_work(make_scheduler, make_request):
    s = make_scheduler(placement="round_robin", workers=(64, 64))
    s.submit(make_request(0), 0.0)
    s.submit(make_request(1), 0.0)
    s.plan(0, 1.0)
    s.submit(make_request(2), 1.0)  # bound to worker 0, though worker 1 idles
    plan = s.plan(1, 1.0)
    assert plan.admitted == (1,)  # its own request only
    assert s.sequence(2).worker == 0 and s.sequence(2) in s.workers[0].queue
