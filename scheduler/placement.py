"""Where a request waits: the pool's one queue, or a worker's own.

Late binding (`global`): one queue that every worker pulls from when it has room, so no worker
idles while a request waits. Early binding (`round_robin`, `least_loaded`, `power_of_two`, and the
cache-aware `prefix_affinity` and `scorer`): the request is bound to a worker's own queue at
submit, as a router in front of independent engines does. A placement answers both questions the
core asks, so the core never branches on which kind it has: does a new worker get a queue of its
own (`worker_queue`), and where does a request wait (`choose`).

`make_placement` builds one by name with its parameters (`PARAMETERS`, each with its range) and,
for the one that draws at random, a numpy Generator the caller owns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Protocol

from .errors import ConfigError
from .policies.base import WaitQueue

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, slots=True)
class Place:
    """Where a request waits: `queue`, bound to `worker` (None: whichever worker pulls it)."""

    queue: WaitQueue
    worker: int | None


class PlaceView(Protocol):
    """What a placement may read of the pool when it places one request."""

    def load(self, worker: int) -> int:
        """The worker's outstanding requests: queued for it and running on it."""

    def kv_usage(self, worker: int) -> float:
        """The fraction of the worker's KV blocks in use (cached blocks no request holds are free)."""

    def cached_blocks(self, worker: int) -> int:
        """How many leading blocks of this request's prompt the worker has cached."""

    @property
    def prompt_blocks(self) -> int:
        """The full blocks of this request's prompt: the most it could find cached."""

    @property
    def prefix_key(self) -> int | None:
        """A hash of the start of this request's prompt (None without content): equal keys, equal
        first blocks, so consistent hashing on it gives a prefix a home."""


class Placement(ABC):
    name: ClassVar[str]

    def worker_queue(self, new_queue: Callable[[], WaitQueue]) -> WaitQueue | None:
        """The queue a worker joining the pool serves on its own; None: it serves the pool's."""
        return new_queue()

    @abstractmethod
    def choose(self, pool: WaitQueue, queues: Mapping[int, WaitQueue], view: PlaceView) -> Place:
        """Where a new request waits: the pool's queue, or one of the workers' own `queues` (by
        worker id, in id order, never empty), reading the pool through `view`."""


class GlobalQueue(Placement):
    name = "global"

    def worker_queue(self, new_queue):
        return None

    def choose(self, pool, queues, view):
        return Place(pool, None)


class RoundRobin(Placement):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, pool, queues, view):
        ids = list(queues)
        worker = ids[self._next % len(ids)]
        self._next += 1
        return Place(queues[worker], worker)


class LeastLoaded(Placement):
    """Fewest outstanding (queued + running) requests; ties to the lowest worker id."""

    name = "least_loaded"

    def choose(self, pool, queues, view):
        worker = least_loaded(queues, view)
        return Place(queues[worker], worker)


def least_loaded(workers: Iterable[int], view: PlaceView) -> int:
    """The worker of the fewest outstanding requests, ties to the lowest id."""
    return min(workers, key=lambda w: (view.load(w), w))


class PowerOfTwo(Placement):
    """The less loaded of two distinct workers drawn at random (ties to the lower id): nearly
    least-loaded balance from two loads read, and no herd on the one emptiest worker. Owns nothing
    but the Generator it is given, so a seed fixes its choices."""

    name = "power_of_two"

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def choose(self, pool, queues, view):
        ids = list(queues)
        if len(ids) == 1:
            return Place(queues[ids[0]], ids[0])
        first, second = self._rng.choice(len(ids), size=2, replace=False)
        worker = least_loaded((ids[first], ids[second]), view)
        return Place(queues[worker], worker)


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    # The finaliser of java.util.SplittableRandom's mix64 (Steele, Lea and Flood, "Fast splittable
    # pseudorandom number generators", OOPSLA 2014; constants: Stafford's variant 13): every input
    # bit moves every output bit, so nearby keys and worker ids give unrelated weights.
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def rendezvous_weight(key: int, worker: int) -> int:
    """The highest-random-weight (rendezvous) hash of a prefix key on a worker: the key's home is
    the worker of the highest weight, so a worker joining takes only the keys it now wins, and one
    leaving gives up only its own (Thaler and Ravishankar, "Using name-based mappings to increase
    hit rates", IEEE/ACM ToN 1998)."""
    return _mix64((key & _MASK64) ^ _mix64(worker & _MASK64))


class PrefixAffinity(Placement):
    """Cache-aware routing as SGLang's router does it. Among the workers within `max_imbalance`
    requests of the least loaded: the one holding the longest cached run of the prompt's leading
    blocks, if that run is at least `min_match` of the prompt; otherwise the least loaded, so that
    prompts sharing only a short start (a common system prompt) spread instead of piling on one
    home. Ties go to the prefix's rendezvous home, so equal prefixes keep gathering where their
    blocks are. A prompt without content goes to the least loaded worker."""

    name = "prefix_affinity"

    def __init__(self, max_imbalance: float = 8, min_match: float = 0.5) -> None:
        # SGLang's cache-aware router leaves cache affinity for the shortest queue when
        # max_load - min_load > balance_abs_threshold (default 64) and max_load > min_load x
        # balance_rel_threshold (1.5) (sgl-router/src/policies/cache_aware.rs, defaults in
        # sgl-router/py_src/sglang_router/router_args.py). 8 is a choice, not a measurement: a hot
        # prefix may pile at most 8 requests on its home beyond the emptiest worker before its
        # requests spill to the next longest match. The guard here is absolute alone (no relative
        # test to hold it back), so it is set tighter than SGLang's 64, which its router applies to
        # in-flight counts of engines that each batch hundreds of requests.
        # min_match is SGLang's cache_threshold (0.5 there too): below it a match is not worth
        # more than balance.
        self.max_imbalance = max_imbalance
        self.min_match = min_match

    def choose(self, pool, queues, view):
        key = view.prefix_key
        if key is None:
            worker = least_loaded(queues, view)
            return Place(queues[worker], worker)
        loads = {w: view.load(w) for w in queues}
        floor = min(loads.values())
        eligible = [w for w in queues if loads[w] - floor <= self.max_imbalance]
        cached = {w: view.cached_blocks(w) for w in eligible}
        longest = max(cached.values())
        if longest and longest >= self.min_match * view.prompt_blocks:
            candidates = [w for w in eligible if cached[w] == longest]
        else:
            lightest = min(loads[w] for w in eligible)
            candidates = [w for w in eligible if loads[w] == lightest]
        worker = max(candidates, key=lambda w: rendezvous_weight(key, w))
        return Place(queues[worker], worker)


class Scorer(Placement):
    """llm-d's weighted scoring as a cost, lowest wins (ties to the lower id):
    w_queue x load / the largest load + w_kv x KV usage - w_prefix x cached / prompt blocks, each
    term in [0, 1] (0 where every load, or the prompt's block count, is 0)."""

    name = "scorer"

    # llm-d's default scheduling profile: queue-scorer weight 2, kv-cache-utilization-scorer 2,
    # prefix-cache-scorer 3 (default-plugins.yaml in the inferencepool chart of
    # kubernetes-sigs/gateway-api-inference-extension, config/charts/inferencepool/templates/
    # epp-config.yaml, which llm-d's inference-scheduling guide deploys). llm-d sums scores and
    # takes the highest; this is the same sum negated, so the lowest cost wins.
    def __init__(self, w_queue: float = 2.0, w_kv: float = 2.0, w_prefix: float = 3.0) -> None:
        self.w_queue, self.w_kv, self.w_prefix = w_queue, w_kv, w_prefix

    def choose(self, pool, queues, view):
        loads = {w: view.load(w) for w in queues}
        most = max(loads.values())
        blocks = view.prompt_blocks

        def cost(w: int) -> tuple[float, int]:
            queue = loads[w] / most if most else 0.0
            match = view.cached_blocks(w) / blocks if blocks else 0.0
            return self.w_queue * queue + self.w_kv * view.kv_usage(w) - self.w_prefix * match, w

        worker = min(queues, key=cost)
        return Place(queues[worker], worker)


PLACEMENTS: dict[str, type[Placement]] = {
    cls.name: cls for cls in (GlobalQueue, RoundRobin, LeastLoaded, PowerOfTwo, PrefixAffinity, Scorer)
}

MAX_PARAM = 1e6  # weights and imbalances beyond a million only overflow sums
# Each placement's parameters and their ranges [low, high]: what make_placement accepts.
PARAMETERS: dict[str, dict[str, tuple[float, float]]] = {
    "global": {}, "round_robin": {}, "least_loaded": {}, "power_of_two": {},
    "prefix_affinity": {"max_imbalance": (0, MAX_PARAM), "min_match": (0, 1)},
    "scorer": {"w_queue": (0, MAX_PARAM), "w_kv": (0, MAX_PARAM), "w_prefix": (0, MAX_PARAM)},
}
PARAMS_KEY = "scheduler.placement_params"


def make_placement(name: str, params: Mapping[str, Any] | None = None,
                   rng: np.random.Generator | None = None) -> Placement:
    """The placement `name` with `params` (checked against PARAMETERS), drawing from `rng` if it
    draws at all (default: a Generator seeded 0, so an unseeded build is still reproducible)."""
    if not isinstance(name, str) or name not in PLACEMENTS:
        raise ConfigError(
            f"scheduler.placement: unknown placement {name!r}; allowed: {', '.join(sorted(PLACEMENTS))}"
        )
    kwargs = check_params(name, params)
    if name == PowerOfTwo.name:
        kwargs["rng"] = rng if rng is not None else placement_rng(0)
    return PLACEMENTS[name](**kwargs)


def check_params(name: str, params: Mapping[str, Any] | None) -> dict[str, float]:
    """`params` as keyword arguments of placement `name`, or a ConfigError naming the key as written."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{PARAMS_KEY}: must be a table, got {_shown(params)}")
    allowed = PARAMETERS[name]
    unknown = sorted(str(key) for key in params if key not in allowed)
    if unknown:
        raise ConfigError(f"{PARAMS_KEY}: {', '.join(unknown)} not a parameter of {name!r}; "
                          f"allowed: {', '.join(allowed) or 'none'}")
    return {key: _in_range(value, key, *allowed[key]) for key, value in params.items()}


def _in_range(value: Any, key: str, low: float, high: float) -> float:
    # bool is an int to Python, never a number to a user; NaN fails both comparisons.
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not ok:
        raise ConfigError(f"{PARAMS_KEY}.{key}: must be a number in [{_bound(low)}, {_bound(high)}], "
                          f"got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    # as TOML writes it, where the value came from a config file
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _bound(x: float) -> str:
    # 0, 8, 1e6: as a TOML user would write them
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e5 else f"{x:.0e}".replace("e+0", "e").replace("e+", "e")


PLACEMENT_STREAM = 1  # the spawn key of the placement's draws under a driver's seed


def placement_rng(seed: int) -> np.random.Generator:
    """The Generator a driver seeded with `seed` hands the placement: the child stream
    (spawn key PLACEMENT_STREAM) of the seed's SeedSequence, apart from `default_rng(seed)`, the
    stream a simulated workload draws from, which it leaves as it was."""
    import numpy as np  # only power_of_two draws; the other placements need no numpy

    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PLACEMENT_STREAM,)))
