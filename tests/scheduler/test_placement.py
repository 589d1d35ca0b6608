"""Tests of scheduler.placement: late binding (one global queue) against early binding (routers)."""

import numpy as np
import pytest

from scheduler.errors import ConfigError
from scheduler.placement import (PARAMETERS, PLACEMENTS, GlobalQueue, LeastLoaded, Place, PowerOfTwo,
                                 PrefixAffinity, RoundRobin, Scorer, make_placement, rendezvous_weight)
from scheduler.policies import FCFS
from scheduler.prefix import Prefix
from scheduler.request import Request

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
    assert isinstance(make_placement("power_of_two", rng=np.random.default_rng(1)), PowerOfTwo)
    assert isinstance(make_placement("prefix_affinity"), PrefixAffinity)
    assert isinstance(make_placement("scorer", {"w_kv": 0.5}), Scorer)
    assert set(PARAMETERS) == set(PLACEMENTS)


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


# ----- prefix_affinity ----------------------------------------------------------------------------


def test_prefix_affinity_picks_the_longest_cached_match():
    view = View(cached={0: 1, 1: 4, 2: 2}, prompt_blocks=5, prefix_key=42)
    assert PrefixAffinity().choose(POOL, own(0, 1, 2), view) == Place(QUEUES[1], 1)


def test_prefix_affinity_load_guard_overrides_the_match():
    cached = {0: 0, 1: 4, 2: 2}
    within = View(load={0: 0, 1: 8, 2: 1}, cached=cached, prompt_blocks=5, prefix_key=42)
    assert PrefixAffinity(max_imbalance=8).choose(POOL, own(0, 1, 2), within).worker == 1  # 8 over: still eligible
    beyond = View(load={0: 0, 1: 9, 2: 1}, cached=cached, prompt_blocks=5, prefix_key=42)
    assert PrefixAffinity(max_imbalance=8, min_match=0.4).choose(POOL, own(0, 1, 2), beyond).worker == 2  # next longest
    assert PrefixAffinity(max_imbalance=0).choose(POOL, own(0, 1, 2), beyond).worker == 0  # only the least loaded


def test_prefix_affinity_ignores_a_match_below_min_match_for_balance():
    view = View(load={0: 2, 1: 0, 2: 1}, cached={0: 2}, prompt_blocks=5, prefix_key=42)  # 2 of 5 cached on 0
    assert PrefixAffinity(min_match=0.5).choose(POOL, own(0, 1, 2), view).worker == 1  # a short match: least loaded
    assert PrefixAffinity(min_match=0.4).choose(POOL, own(0, 1, 2), view).worker == 0  # long enough: its cache


def test_prefix_affinity_ties_go_to_the_keys_rendezvous_home():
    ids = (0, 1, 2, 3)
    for key in range(50):
        home = max(ids, key=lambda w: rendezvous_weight(key, w))
        assert PrefixAffinity().choose(POOL, own(*ids), View(prefix_key=key)).worker == home  # no match anywhere
        tie = View(cached={w: 3 for w in ids}, prompt_blocks=3, prefix_key=key)
        assert PrefixAffinity().choose(POOL, own(*ids), tie).worker == home
    homes = {PrefixAffinity().choose(POOL, own(*ids), View(prefix_key=key)).worker for key in range(50)}
    assert homes == set(ids)  # keys spread over the pool


def test_prefix_affinity_homes_survive_a_worker_joining():
    placement = PrefixAffinity()
    keys = [hash(("prompt", k)) for k in range(1000)]
    before = [placement.choose(POOL, own(0, 1, 2, 3), View(prefix_key=k)).worker for k in keys]
    after = [placement.choose(POOL, own(0, 1, 2, 3, 5), View(prefix_key=k)).worker for k in keys]
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(a == 5 for _, a in moved)  # only keys the new worker wins move, and only to it
    assert 1 - len(moved) / len(keys) > 0.6  # about 4/5 stay


def test_prefix_affinity_without_content_goes_to_the_least_loaded():
    view = View(load={0: 3, 1: 1, 2: 1}, cached={0: 9})
    assert PrefixAffinity().choose(POOL, own(0, 1, 2), view) == Place(QUEUES[1], 1)


# ----- power_of_two -------------------------------------------------------------------------------


def test_power_of_two_is_deterministic_per_seed():
    def picks(seed):
        placement = make_placement("power_of_two", rng=np.random.default_rng(seed))
        return [placement.choose(POOL, own(0, 1, 2, 3, 5, 9), View()).worker for _ in range(200)]

    assert picks(7) == picks(7)
    assert picks(7) != picks(8)


class Recorded(np.random.Generator):
    """A Generator that remembers the pairs it drew."""

    def __init__(self, seed):
        super().__init__(np.random.PCG64(seed))
        self.drawn = []

    def choice(self, *args, **kwargs):
        pair = super().choice(*args, **kwargs)
        self.drawn.append(tuple(pair))
        return pair


def test_power_of_two_never_picks_the_more_loaded_of_its_two():
    ids = (0, 1, 2, 3, 5, 9)
    load = {0: 4, 1: 0, 2: 7, 3: 4, 5: 1, 9: 2}
    rng = Recorded(3)
    placement = PowerOfTwo(rng)
    for _ in range(300):
        worker = placement.choose(POOL, own(*ids), View(load=load)).worker
        a, b = (ids[i] for i in rng.drawn[-1])
        assert a != b and worker in (a, b)
        assert worker == min((a, b), key=lambda w: (load[w], w))  # the less loaded, ties to the lower id
    assert {ids[i] for pair in rng.drawn for i in pair} == set(ids)


def test_power_of_two_with_one_worker_takes_it():
    assert PowerOfTwo(np.random.default_rng(0)).choose(POOL, own(5), View(load={5: 9})) == Place(QUEUES[5], 5)


# ----- scorer -------------------------------------------------------------------------------------


def test_scorer_defaults_weigh_a_match_above_load():
    view = View(load={0: 0, 1: 4}, kv={0: 0.0, 1: 0.2}, cached={1: 4}, prompt_blocks=4, prefix_key=1)
    assert Scorer().choose(POOL, own(0, 1), view).worker == 1  # 2 x 1 + 2 x 0.2 - 3 x 1 < 0
    assert (Scorer().w_queue, Scorer().w_kv, Scorer().w_prefix) == (2.0, 2.0, 3.0)


def test_scorer_with_no_prefix_weight_ignores_matches():
    view = View(load={0: 1, 1: 4}, cached={1: 4}, prompt_blocks=4, prefix_key=1)
    assert Scorer(w_prefix=0).choose(POOL, own(0, 1), view).worker == 0


def test_scorer_with_a_large_kv_weight_avoids_a_full_worker():
    view = View(load={0: 4, 1: 1}, kv={0: 0.1, 1: 1.0}, cached={1: 4}, prompt_blocks=4, prefix_key=1)
    assert Scorer().choose(POOL, own(0, 1), view).worker == 1
    assert Scorer(w_kv=100).choose(POOL, own(0, 1), view).worker == 0


def test_scorer_ties_go_to_the_lower_id_and_idle_pools_score_zero():
    assert Scorer().choose(POOL, own(3, 5, 9), View()) == Place(QUEUES[3], 3)  # all loads 0, no blocks


# ----- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, params, message", [
    ("scorer", {"w_kv": -1}, "scheduler.placement_params.w_kv: must be a number in [0, 1e6], got -1"),
    ("scorer", {"w_queue": True}, "scheduler.placement_params.w_queue: must be a number in [0, 1e6], got true"),
    ("scorer", {"w_prefix": "3"}, 'scheduler.placement_params.w_prefix: must be a number in [0, 1e6], got "3"'),
    ("scorer", {"w_kv": float("nan")}, "scheduler.placement_params.w_kv: must be a number in [0, 1e6], got nan"),
    ("scorer", {"w_x": 1}, "scheduler.placement_params: w_x not a parameter of 'scorer'; "
                           "allowed: w_queue, w_kv, w_prefix"),
    ("prefix_affinity", {"max_imbalance": 2e6},
     "scheduler.placement_params.max_imbalance: must be a number in [0, 1e6], got 2000000.0"),
    ("least_loaded", {"w_kv": 1}, "scheduler.placement_params: w_kv not a parameter of 'least_loaded'; allowed: none"),
    ("scorer", [1], "scheduler.placement_params: must be a table, got [1]"),
])
def test_bad_placement_params_are_named_errors(name, params, message):
    with pytest.raises(ConfigError) as info:
        make_placement(name, params)
    assert str(info.value) == message


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


def shared_prefix_homed_on(worker, make_scheduler):
    """A 12-token prompt (3 full 4-token blocks) whose rendezvous home in a 2-worker pool is `worker`."""
    for start in range(0, 1000, 12):
        prefix = Prefix(tuple(range(start, start + 12)), 1)
        probe = make_scheduler(placement="prefix_affinity", workers=(64, 64))
        probe.submit(Request(0, "a", 12, 4, prefix=prefix), 0.0)
        if probe.sequence(0).worker == worker:
            return prefix
    raise AssertionError("no prefix homed there")


def test_prefix_affinity_sends_a_shared_prefix_where_its_blocks_are_cached(make_scheduler, step):
    shared = shared_prefix_homed_on(0, make_scheduler)
    s = make_scheduler(placement=PrefixAffinity(max_imbalance=0), workers=(64, 64))
    s.submit(Request(0, "b", 8, 4), 0.0)  # no content: the least loaded, worker 0
    s.submit(Request(1, "a", 12, 4, prefix=shared), 0.0)  # the guard leaves worker 1 alone eligible
    assert (s.sequence(0).worker, s.sequence(1).worker) == (0, 1)
    step(s, 0, 1.0)
    step(s, 1, 1.0)  # the prompt is computed on worker 1, its full blocks cached there
    s.submit(Request(2, "c", 12, 4, prefix=shared), 1.0)  # loads equal again: both eligible
    assert s.sequence(2).worker == 1  # the cached blocks win over the prefix's home, worker 0
