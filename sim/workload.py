"""Workloads for the simulator: tenants, arrival processes, length distributions, trace replay.

This module owns turning a tenant configuration (TOML tables or `TenantSpec` objects) into a
`Workload`: sorted arrival times with each request's tenant, prompt length and true output length,
from a steady rate, staged load (`stages`, and the stage windows the results report) or a trace
(read by sim/traces.py). All randomness comes from the `numpy.random.Generator` passed in, so the
same inputs and seed always give identical arrays.

It also gives each request its prompt's content (`Workload.prefixes`) where the tenant says what it
shares: a Mooncake trace's hash ids, a `shared_prefix` (groups of users behind one system prompt
each) or `multi_turn` conversations (each turn carrying the ones before it). Synthetic ids come
from one counter per `generate` call, starting at SYNTHETIC_IDS, so ids are equal only where the
content is meant to be.

It also owns the tenant tables' schema (TENANT_SCHEMA, ...) and the tenant fields' ranges; the
value checks they use are sim/validation.py's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from scheduler.admission import unadmittable
from scheduler.errors import ConfigError
from scheduler.prefix import Prefix
from scheduler.request import Quota

from .traces import Trace, TraceError, read_trace
from .validation import (FACTOR, INTEGER, LENGTH, LIST, MAX_COUNT, MAX_SECONDS, MAX_TOKENS, NUMBER, STRING, TABLE,
                         as_number, check_keys, in_range, is_int, seconds, shown, shown_bound, token_count)

__all__ = [
    "ARRIVALS",
    "LENGTH_KINDS",
    "LENGTH_SCHEMA",
    "MAX_REQUESTS",
    "MAX_STAGES",
    "MULTI_TURN_SCHEMA",
    "RATE_LIMIT_SCHEMA",
    "SHARED_PREFIX_SCHEMA",
    "SLO_SCHEMA",
    "STAGE_SCHEMA",
    "TENANT_KEYS",
    "TENANT_SCHEMA",
    "LengthDist",
    "MultiTurn",
    "SharedPrefix",
    "TenantSpec",
    "Workload",
    "check_quota_admits",
    "generate",
    "name_tenant",
    "stage_windows",
]

LENGTH_KINDS = ("fixed", "uniform", "lognormal", "empirical")
ARRIVALS = ("poisson", "gamma", "constant", "onoff")
# A guard against typos such as rate = 1e9: past this the arrays alone take gigabytes.
MAX_REQUESTS = 50_000_000
_MAX_HORIZON = 1e12  # seconds: requests mode draws longer spans until the count is reached, up to this
_Z99 = NormalDist().inv_cdf(0.99)

# bounds of a tenant's traffic; the bounds shared by the whole schema are sim/validation.py's
MAX_RATE = 1e6  # requests per second of one tenant
RATE_LIMIT = (1e-6, 1e12)  # a token bucket's rate (per second) or burst
MAX_CV = 100.0  # coefficient of variation of gamma arrival gaps (1 is Poisson)
PRIORITIES = (-(2**31), 2**31 - 1)
MAX_STAGES = 1000  # stages of one tenant's staged load
MAX_GROUPS = 1_000_000  # shared_prefix groups, and users per group
MAX_TURNS = 1000  # turns of one multi_turn conversation
# Token ids a tenant's synthetic prefixes hold in all (a multi-turn prompt repeats its history): past
# this the tuples alone take gigabytes.
MAX_PREFIX_IDS = 100_000_000
# The first synthetic id: above any tokenizer's vocabulary and any trace's hash ids, so synthetic
# content never equals real content by accident.
SYNTHETIC_IDS = 2**40


def _resolve(path, base_dir: Path | None) -> str:
    """Relative paths in a config are relative to the config file's directory, when known."""
    p = Path(os.fspath(path)).expanduser()
    if base_dir is not None and not p.is_absolute():
        p = Path(base_dir) / p
    return str(p.resolve())


# ---------------------------------------------------------------------------------------------
# length distributions


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A distribution of token counts; every sample is an int64 >= 1.

    `params` by `kind`:
      fixed:     (value,)
      uniform:   (min, max), both inclusive
      lognormal: (mu, sigma) of the underlying normal; `from_config` fits them from mean and p99
      empirical: (values, weights): a tuple of ints and a tuple of probabilities summing to 1, or
                 None for equal weight per value (a trace's rows, so repeats keep their frequency)
    """

    kind: str
    params: tuple

    def __post_init__(self):
        if self.kind not in LENGTH_KINDS:
            raise ConfigError(f"LengthDist.kind: must be one of {', '.join(LENGTH_KINDS)}; got {self.kind!r}")
        expected = {"fixed": 1, "uniform": 2, "lognormal": 2, "empirical": 2}[self.kind]
        if not isinstance(self.params, tuple) or len(self.params) != expected:
            raise ConfigError(f"LengthDist.params: {self.kind} takes {expected} params, got {self.params!r}")

    def __repr__(self) -> str:
        if self.kind == "empirical":  # a trace's values would flood every repr of a tenant
            values, weights = self.params
            return f"LengthDist(kind='empirical', n={len(values)}, weighted={weights is not None})"
        return f"LengthDist(kind={self.kind!r}, params={self.params!r})"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw `n` lengths (int64, each >= 1) from `rng`."""
        if self.kind == "fixed":
            out = np.full(n, self.params[0], dtype=np.int64)
        elif self.kind == "uniform":
            lo, hi = self.params
            out = rng.integers(lo, hi + 1, size=n, dtype=np.int64)
        elif self.kind == "lognormal":
            mu, sigma = self.params
            out = np.rint(rng.lognormal(mu, sigma, size=n)).astype(np.int64)
        else:
            values, weights = self.params
            values = np.asarray(values, dtype=np.int64)
            if weights is None:
                out = values[rng.integers(0, len(values), size=n)]
            else:
                out = rng.choice(values, size=n, p=np.asarray(weights, dtype=np.float64))
        # Rounding a lognormal draw can give 0; a request always has at least one token.
        return np.maximum(out, 1)

    @classmethod
    def from_config(cls, value, key: str, base_dir: Path | None = None) -> LengthDist:
        """Parse a length config: an int (fixed) or a table with `dist` = fixed | uniform |
        lognormal | empirical. Errors name `key` (e.g. "tenants[0].prompt_tokens.p99")."""
        if isinstance(value, LengthDist):
            return value
        if is_int(value):
            return cls("fixed", (token_count(value, key),))
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{key}: must be an integer >= 1 or a table with dist = {' | '.join(LENGTH_KINDS)}, got {shown(value)}"
            )
        dist = value.get("dist")
        if dist not in LENGTH_KINDS:
            raise ConfigError(f"{key}.dist: must be one of {', '.join(LENGTH_KINDS)}; got {shown(dist)}")
        check_keys(value, ("dist", *LENGTH_SCHEMA[dist]), key)
        parser = {"fixed": _fixed, "uniform": _uniform, "lognormal": _lognormal, "empirical": _empirical}
        return parser[dist](value, key, base_dir)


# The keys of each length table besides `dist`, and the kind of value each takes.
LENGTH_SCHEMA = {
    "fixed": {"value": INTEGER},
    "uniform": {"min": INTEGER, "max": INTEGER},
    "lognormal": {"mean": NUMBER, "p99": NUMBER},
    "empirical": {"values": LIST, "weights": LIST, "trace": STRING, "field": STRING},
}


def _require(table: Mapping, name: str, key: str, what: str):
    if name not in table:
        raise ConfigError(f"{key}.{name}: required ({what})")
    return table[name]


def _fixed(table: Mapping, key: str, base_dir) -> LengthDist:
    return LengthDist("fixed", (token_count(_require(table, "value", key, "an integer >= 1"), f"{key}.value"),))


def _uniform(table: Mapping, key: str, base_dir) -> LengthDist:
    lo = token_count(_require(table, "min", key, "an integer >= 1"), f"{key}.min")
    hi = in_range(_require(table, "max", key, "an integer >= min"), f"{key}.max", lo, MAX_TOKENS, integer=True)
    return LengthDist("uniform", (lo, hi))


def _lognormal(table: Mapping, key: str, base_dir) -> LengthDist:
    mean = in_range(_require(table, "mean", key, "a number >= 1"), f"{key}.mean", 1, MAX_TOKENS)
    p99 = as_number(_require(table, "p99", key, "a number > mean"), f"{key}.p99", f"> mean ({mean:g})")
    if p99 <= mean:
        raise ConfigError(f"{key}.p99: must be > mean ({mean:g}), got {p99:g}")
    in_range(p99, f"{key}.p99", mean, MAX_TOKENS, open_low=True)
    mu, sigma = _fit_lognormal(mean, p99, key)
    return LengthDist("lognormal", (mu, sigma))


def _fit_lognormal(mean: float, p99: float, key: str) -> tuple[float, float]:
    """mu, sigma with E[X] = mean and P99[X] = p99.

    ln p99 - ln mean = z99*sigma - sigma^2/2, a quadratic in sigma. Its smaller root is the
    low-variance fit; the larger one puts most of the mean in a far tail no trace shows.
    """
    d = math.log(p99 / mean)
    disc = _Z99 * _Z99 - 2.0 * d
    if disc < 0:
        limit = math.exp(_Z99 * _Z99 / 2.0)
        raise ConfigError(
            f"{key}.p99: no lognormal has mean {mean:g} and p99 {p99:g}; "
            f"p99 must be in (mean, {limit:.2f} * mean] = ({mean:g}, {limit * mean:g}]"
        )
    sigma = _Z99 - math.sqrt(disc)
    return math.log(mean) - sigma * sigma / 2.0, sigma


def _empirical(table: Mapping, key: str, base_dir) -> LengthDist:
    if ("values" in table) == ("trace" in table):
        raise ConfigError(f"{key}: an empirical dist needs exactly one of 'values' or 'trace'")
    if "trace" in table:
        return _empirical_from_trace(table, key, base_dir)
    values = table["values"]
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{key}.values: must be a non-empty list of integers >= 1, got {shown(values)}")
    ints = tuple(token_count(v, f"{key}.values[{i}]") for i, v in enumerate(values))
    if "weights" not in table:
        return LengthDist("empirical", (ints, None))
    return LengthDist("empirical", (ints, _weights(table["weights"], len(ints), key)))


def _weights(weights, n: int, key: str) -> tuple:
    if not isinstance(weights, (list, tuple)) or len(weights) != n:
        raise ConfigError(f"{key}.weights: must be a list of {n} numbers >= 0 (one per value), got {shown(weights)}")
    # Bounded so that their sum stays finite: relative weights, not raw counts of a huge trace.
    w = [in_range(x, f"{key}.weights[{i}]", 0, 1e15) for i, x in enumerate(weights)]
    total = sum(w)
    if total <= 0:
        raise ConfigError(f"{key}.weights: must sum to > 0, got {total:g}")
    return tuple(x / total for x in w)


def _empirical_from_trace(table: Mapping, key: str, base_dir) -> LengthDist:
    if "weights" in table:
        raise ConfigError(f"{key}.weights: not allowed with 'trace' (each trace row weighs the same)")
    path = table["trace"]
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(f"{key}.trace: must be a non-empty path string, got {shown(path)}")
    field = _require(table, "field", key, "'prompt' or 'output'")
    if field not in ("prompt", "output"):
        raise ConfigError(f"{key}.field: must be 'prompt' or 'output', got {shown(field)}")
    trace = _trace_at(_resolve(path, base_dir), f"{key}.trace")
    column = trace.prompt_tokens if field == "prompt" else trace.output_tokens
    return LengthDist("empirical", (tuple(column.tolist()), None))


# ---------------------------------------------------------------------------------------------
# tenants

# Every key of a [[tenants]] table and the kind of value it takes (the tests feed each a wrong one).
TENANT_SCHEMA = {
    "name": STRING, "weight": NUMBER, "priority": INTEGER, "rate": NUMBER, "arrival": STRING, "cv": NUMBER,
    "on_s": NUMBER, "off_s": NUMBER, "prompt_tokens": LENGTH, "output_tokens": LENGTH, "max_new_tokens": INTEGER,
    "slo": TABLE, "trace": STRING, "share": NUMBER, "rate_limit": TABLE, "max_queued": INTEGER,
    "max_queued_tokens": INTEGER, "stages": LIST, "shared_prefix": TABLE, "multi_turn": TABLE,
}
TENANT_KEYS = tuple(TENANT_SCHEMA)
STAGE_SCHEMA = {"rate": NUMBER, "duration_s": NUMBER}  # the keys of each table in a tenant's `stages`
SLO_SCHEMA = {"ttft_ms": NUMBER, "tpot_ms": NUMBER}
SHARED_PREFIX_SCHEMA = {"groups": INTEGER, "users_per_group": INTEGER, "tokens": INTEGER}
MULTI_TURN_SCHEMA = {"turns": INTEGER, "think_time_s": NUMBER}
RATE_LIMIT_SCHEMA = {"requests_per_s": NUMBER, "request_burst": NUMBER, "tokens_per_s": NUMBER, "token_burst": NUMBER}
_RATE_LIMIT_KEYS = tuple(RATE_LIMIT_SCHEMA)
# The numeric fields of a tenant and their ranges, checked alike in TOML tables and TenantSpec objects.
_TENANT_RANGES = {
    "weight": FACTOR, "priority": PRIORITIES, "rate": (0, MAX_RATE),
    # Gamma gaps of shape 1/cv^2: a millionth of a shape is all draws near 0 and one far off.
    "cv": (1e-3, MAX_CV),
    "on_s": (1e-3, MAX_SECONDS), "off_s": (0, MAX_SECONDS), "max_new_tokens": (1, MAX_TOKENS), "share": FACTOR,
}


@dataclass(frozen=True, slots=True)
class SharedPrefix:
    """A tenant's users, `groups` x `users_per_group` of them, each request sent by one (round robin
    over the users, conversation by conversation). Every prompt starts with its group's system prompt
    of `tokens` tokens, ids of the group's own that all its users share, followed by the request's
    own prompt, so a prompt is `tokens` longer than its `prompt_tokens` draw."""

    groups: int
    tokens: int
    users_per_group: int = 1

    @classmethod
    def from_config(cls, table, key: str) -> SharedPrefix:
        _subtable(table, SHARED_PREFIX_SCHEMA, key)
        groups = _require(table, "groups", key, f"an integer in [1, {MAX_GROUPS:,}]")
        tokens = _require(table, "tokens", key, "the system prompt's length, an integer >= 1")
        spec = cls(groups, tokens, table.get("users_per_group", 1))
        spec.check(key)
        return spec

    def check(self, key: str) -> None:
        in_range(self.groups, f"{key}.groups", 1, MAX_GROUPS, integer=True)
        in_range(self.users_per_group, f"{key}.users_per_group", 1, MAX_GROUPS, integer=True)
        # One token less than the longest prompt: every request adds at least one of its own.
        in_range(self.tokens, f"{key}.tokens", 1, MAX_TOKENS - 1, integer=True)

    def group_of(self, conversation: int) -> int:
        """The group of the user that sends the tenant's `conversation`-th conversation."""
        return conversation % (self.groups * self.users_per_group) // self.users_per_group


@dataclass(frozen=True, slots=True)
class MultiTurn:
    """Conversations of `turns` requests: the tenant's arrival process starts them, and each next turn
    arrives `think_time_s` after the one before (arrival to arrival: the workload is drawn before any
    request is served). Turn k's prompt is the conversation so far, every earlier turn's prompt and
    output, then `prompt_tokens` new tokens; an output in the history is the tokens that turn emits
    (its `output_tokens`, at most `max_new_tokens`)."""

    turns: int
    think_time_s: float

    @classmethod
    def from_config(cls, table, key: str) -> MultiTurn:
        _subtable(table, MULTI_TURN_SCHEMA, key)
        turns = _require(table, "turns", key, f"an integer in [1, {MAX_TURNS:,}]")
        think = _require(table, "think_time_s", key, f"seconds in [0, {shown_bound(MAX_SECONDS)}]")
        spec = cls(turns, think)
        spec.check(key)
        return spec

    def check(self, key: str) -> None:
        in_range(self.turns, f"{key}.turns", 1, MAX_TURNS, integer=True)
        in_range(self.think_time_s, f"{key}.think_time_s", 0, MAX_SECONDS)


def _subtable(table, schema: Mapping, key: str) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{key}: must be a table {{ {', '.join(schema)} }}, got {shown(table)}")
    check_keys(table, tuple(schema), key)


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """One tenant's traffic and service terms.

    With a `trace` that has timestamps (Azure, Mooncake), arrivals and lengths come from the trace:
    `rate`, `arrival`, `cv`, `on_s`, `off_s`, `prompt` and `output` are ignored (the trace wins).
    With a length-only trace (Vidur), arrivals come from `arrival` at `rate` (required) and each
    request's lengths are a random row of the trace. `share` only matters when several tenants name
    the same timestamped trace: each row goes to one of them with probability share / sum(shares).

    `stages` ((rate, duration_s) pairs) replaces `rate` with staged load: `arrival` at each stage's
    rate for its duration, stage after stage from time 0; the tenant sends for the sum of the
    durations, whatever the run's `duration_s` (which then spans only the tenants without stages).

    `shared_prefix` and `multi_turn` (not with a timestamped trace) give the requests' prompts their
    content (see SharedPrefix and MultiTurn): their prompts then hold more tokens than `prompt` draws.
    """

    name: str
    weight: float = 1.0
    priority: int = 0
    rate: float | None = None
    arrival: str = "poisson"
    cv: float = 1.0
    on_s: float = 10.0
    off_s: float = 10.0
    prompt: LengthDist | None = None
    output: LengthDist | None = None
    max_new_tokens: int = 2048
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    quota: Quota = Quota()  # admission limits: rate_limit = {...}, max_queued, max_queued_tokens
    trace: str | None = None
    share: float = 1.0
    stages: tuple[tuple[float, float], ...] | None = None
    shared_prefix: SharedPrefix | None = None
    multi_turn: MultiTurn | None = None

    @classmethod
    def from_config(cls, table: Mapping, index: int, base_dir: Path | None = None) -> TenantSpec:
        """Parse one `[[tenants]]` table; errors name "tenants[index].key" and the tenant."""
        where = f"tenants[{index}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: must be a table, got {shown(table)}")
        check_keys(table, TENANT_KEYS, where)
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name: required, a non-empty string; got {shown(name)}")
        try:
            spec = cls(name=name, **_tenant_fields(table, where, base_dir))
            spec.check(index)
        except ConfigError as err:
            name_tenant(err, name)
            raise
        return spec

    def check(self, index: int) -> None:
        """Raise ConfigError naming "tenants[index].key" if a field is out of its range."""
        where = f"tenants[{index}]"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"{where}.name: required, a non-empty string; got {shown(self.name)}")
        try:
            self._check_ranges(where)
            self._check_sources(where)
        except ConfigError as err:
            name_tenant(err, self.name)
            raise

    def _check_ranges(self, where: str) -> None:
        for key in _TENANT_RANGES:
            if getattr(self, key) is not None:  # only rate may be None
                _tenant_number(getattr(self, key), key, where)
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"{where}.arrival: must be one of {', '.join(ARRIVALS)}; got {shown(self.arrival)}")
        for key, value in (("ttft_ms", self.slo_ttft_ms), ("tpot_ms", self.slo_tpot_ms)):
            if value is not None:
                _slo_ms(value, f"{where}.slo.{key}")
        if self.stages is not None:
            _check_stages(self.stages, f"{where}.stages")
        for key, kind in (("shared_prefix", SharedPrefix), ("multi_turn", MultiTurn)):
            value = getattr(self, key)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"{where}.{key}: must be a {kind.__name__} or None, got {shown(value)}")
            if value is not None:
                value.check(f"{where}.{key}")

    def _check_sources(self, where: str) -> None:
        """Arrivals and lengths must come from somewhere: the trace or rate + dists."""
        trace = _trace_at(self.trace, f"{where}.trace") if self.trace is not None else None
        if self.stages is not None:
            _check_stage_sources(self, trace, f"{where}.stages")
        if trace is not None and trace.arrival_s is not None:
            for key in ("shared_prefix", "multi_turn"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{where}.{key}: not allowed with a trace that has timestamps (the trace "
                                      "gives the arrivals, and Mooncake's hash_ids the prompts' content)")
            return
        if self.rate is None and self.stages is None:
            why = "with a length-only trace" if trace is not None else "unless a trace with timestamps gives arrivals"
            raise ConfigError(f"{where}.rate: required {why}")
        if trace is None:
            for key, dist in (("prompt_tokens", self.prompt), ("output_tokens", self.output)):
                if not isinstance(dist, LengthDist):
                    raise ConfigError(f"{where}.{key}: required without a trace (an integer or a dist table)")


def _stages(value, key: str) -> tuple[tuple[float, float], ...]:
    """A `stages` list: 1 to MAX_STAGES tables, each with rate (per second) and duration_s."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STAGES:
        raise ConfigError(f"{key}: must be a list of 1 to {MAX_STAGES:,} tables {{ rate, duration_s }}, "
                          f"got {shown(value)}")
    out = []
    for k, stage in enumerate(value):
        where = f"{key}[{k}]"
        if not isinstance(stage, Mapping):
            raise ConfigError(f"{where}: must be a table {{ rate, duration_s }}, got {shown(stage)}")
        check_keys(stage, tuple(STAGE_SCHEMA), where)
        rate = _require(stage, "rate", where, f"requests per second in [0, {shown_bound(MAX_RATE)}]")
        duration = _require(stage, "duration_s", where, f"seconds in (0, {shown_bound(MAX_SECONDS)}]")
        out.append((in_range(rate, f"{where}.rate", 0, MAX_RATE), seconds(duration, f"{where}.duration_s")))
    return tuple(out)


def _check_stages(stages, key: str) -> None:
    """The ranges of (rate, duration_s) pairs, as TenantSpec holds them, and their total span."""
    if not isinstance(stages, tuple) or not 1 <= len(stages) <= MAX_STAGES:
        raise ConfigError(f"{key}: must be a tuple of 1 to {MAX_STAGES:,} (rate, duration_s) pairs, "
                          f"got {shown(stages)}")
    for k, stage in enumerate(stages):
        if not isinstance(stage, tuple) or len(stage) != 2:
            raise ConfigError(f"{key}[{k}]: must be a (rate, duration_s) pair, got {shown(stage)}")
        in_range(stage[0], f"{key}[{k}].rate", 0, MAX_RATE)
        seconds(stage[1], f"{key}[{k}].duration_s")
    span = sum(duration for _, duration in stages)
    if span > MAX_SECONDS:
        raise ConfigError(f"{key}: the stages last {span:g} s in all; allowed: at most {MAX_SECONDS:,} s (a year)")


def _check_stage_sources(spec: TenantSpec, trace: Trace | None, key: str) -> None:
    """Stages set the arrival rate over time; what else would set it contradicts them."""
    if spec.rate is not None:
        raise ConfigError(f"{key}: give rate or stages, not both (each stage has its own rate)")
    if trace is not None and trace.arrival_s is not None:
        raise ConfigError(f"{key}: not allowed with a trace that has timestamps (the trace gives the arrivals)")
    if spec.arrival == "onoff":
        raise ConfigError(f"{key}: not allowed with arrival = \"onoff\" (the stages already shape the load "
                          "over time); allowed arrivals: poisson, gamma, constant")


def _tenant_number(value, key: str, where: str):
    low, high = _TENANT_RANGES[key]
    return in_range(value, f"{where}.{key}", low, high, integer=TENANT_SCHEMA[key] == INTEGER)


def _slo_ms(value, key: str) -> float:
    return in_range(value, key, 0, MAX_SECONDS * 1000, open_low=True)


def name_tenant(err: ConfigError, name: str) -> None:
    """Append the tenant's name to an error message once, keeping the error's type and fields."""
    suffix = f" (tenant {name!r})"
    message = str(err.args[0]) if err.args else ""
    if not message.endswith(suffix):
        err.args = (message + suffix,)


def _tenant_fields(table: Mapping, where: str, base_dir: Path | None) -> dict:
    """Map TOML keys to TenantSpec fields, checking types and the numeric fields' ranges (TenantSpec.check
    checks the ranges again, for specs built in Python, and the rest)."""
    out: dict = {}
    for key in _TENANT_RANGES:
        if key in table:
            out[key] = _tenant_number(table[key], key, where)
    if "arrival" in table:
        out["arrival"] = table["arrival"]
    if "stages" in table:
        out["stages"] = _stages(table["stages"], f"{where}.stages")
    for key, kind in (("shared_prefix", SharedPrefix), ("multi_turn", MultiTurn)):
        if key in table:
            out[key] = kind.from_config(table[key], f"{where}.{key}")
    for key, attr in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
        if key in table:
            out[attr] = LengthDist.from_config(table[key], f"{where}.{key}", base_dir)
    if "slo" in table:
        out.update(_slo(table["slo"], f"{where}.slo"))
    quota = _quota(table, where)
    if quota is not None:
        out["quota"] = quota
    if "trace" in table:
        path = table["trace"]
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.trace: must be a non-empty path string, got {shown(path)}")
        out["trace"] = _resolve(path, base_dir)
    return out


def _quota(table: Mapping, where: str) -> Quota | None:
    limits = table.get("rate_limit", {})
    if not isinstance(limits, Mapping):
        raise ConfigError(f"{where}.rate_limit: must be a table with {', '.join(_RATE_LIMIT_KEYS)}, "
                          f"got {shown(limits)}")
    check_keys(limits, _RATE_LIMIT_KEYS, f"{where}.rate_limit")
    fields = {key: in_range(value, f"{where}.rate_limit.{key}", *RATE_LIMIT) for key, value in limits.items()}
    for key in ("max_queued", "max_queued_tokens"):
        if key in table:
            fields[key] = in_range(table[key], f"{where}.{key}", 1, MAX_COUNT, integer=True)
    if not fields:
        return None
    try:
        return Quota(**fields)
    except ConfigError as err:
        prefix = f"{where}.rate_limit." if not str(err).startswith("quota.max") else f"{where}."
        raise ConfigError(str(err).replace("quota.", prefix, 1)) from None


def _slo(table, key: str) -> dict:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{key}: must be a table with ttft_ms and/or tpot_ms, got {shown(table)}")
    check_keys(table, tuple(SLO_SCHEMA), key)
    return {f"slo_{k}": _slo_ms(v, f"{key}.{k}") for k, v in table.items()}


def check_quota_admits(quota: Quota, prompt_tokens: int, max_new_tokens: int, where: str) -> None:
    """Raise ConfigError if `quota` refuses even a request of `prompt_tokens` and `max_new_tokens`
    (the smallest the tenant sends) when nothing waits: every request of the tenant would be rejected.

    `where` is the tenant's key, e.g. "tenants[2]"; the error names the quota key at fault. The
    simulator passes each tenant's smallest request; a server, the smallest a client may send.
    """
    never = unadmittable(quota, prompt_tokens + max_new_tokens)
    if never is not None:
        key, why = never
        raise ConfigError(f"{where}.rate_limit.{key}: every request would be rejected: {why}")
    if quota.max_queued_tokens is not None and quota.max_queued_tokens < prompt_tokens:
        raise ConfigError(f"{where}.max_queued_tokens: a cap of {quota.max_queued_tokens:,} prompt tokens cannot "
                          f"queue the smallest prompt ({prompt_tokens:,} tokens), so every request would be "
                          f"rejected; allowed: >= {prompt_tokens:,}")


# ---------------------------------------------------------------------------------------------
# trace files a config names


def _trace_at(path, key: str) -> Trace:
    """read_trace, its errors led by the config key that names the file."""
    try:
        return read_trace(path)
    except TraceError as err:
        err.args = (f"{key}: {err.args[0]}",)
        raise


# ---------------------------------------------------------------------------------------------
# workloads


@dataclass(frozen=True, slots=True, eq=False)
class Workload:
    """Requests sorted by arrival.

    `output_tokens` is the true output length, where the simulated worker emits EOS; the scheduler
    never sees it and stops a request at `max_new_tokens` if that comes first.

    `prefixes` says what each prompt holds, aligned with the arrays: None when no request carries
    content (the tenants have no `shared_prefix`, `multi_turn` or Mooncake hash ids, or a real run
    no token ids), else one `Prefix | None` per request (None for requests whose content is unknown),
    each covering exactly its prompt (`Prefix.check(prompt_tokens[i])` holds). Mooncake rows carry
    `Prefix(hash_ids, 512)`; synthetic and real-run prompts carry one id per token.
    """

    tenants: tuple[TenantSpec, ...]
    arrival_s: np.ndarray
    tenant: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    max_new_tokens: np.ndarray
    prefixes: tuple[Prefix | None, ...] | None = None

    def __post_init__(self):
        n = len(self.arrival_s)
        arrays = (self.tenant, self.prompt_tokens, self.output_tokens, self.max_new_tokens)
        if any(len(a) != n for a in arrays) or (self.prefixes is not None and len(self.prefixes) != n):
            raise ValueError("Workload: every per-request array must have the same length")

    def __len__(self) -> int:
        return len(self.arrival_s)


@dataclass(frozen=True, slots=True)
class _Part:
    """One tenant's requests before the merge, in generation order."""

    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    prefixes: tuple | None = None


class _Ids:
    """The counter synthetic ids come from: each `take` is a range no other take overlaps."""

    def __init__(self):
        self.next = SYNTHETIC_IDS

    def take(self, n: int) -> tuple[int, ...]:
        start, self.next = self.next, self.next + n
        return tuple(range(start, start + n))


def generate(
    tenants: Sequence[TenantSpec],
    rng: np.random.Generator,
    *,
    duration_s: float | None = None,
    requests: int | None = None,
    load: float = 1.0,
) -> Workload:
    """Generate every tenant's requests and merge them by arrival (stable: ties keep tenant order,
    then generation order).

    Give exactly one of `duration_s` (arrivals in [0, duration_s)) or `requests` (the first N
    arrivals over all tenants); a tenant with stages sends for its stages' span instead, and only
    with `duration_s`. `load` multiplies every rate and divides trace timestamps. Traces are
    replayed once, not looped. Tenants are processed in order and each draws arrivals, then prompt
    lengths, then output lengths, so a seed fixes the result.
    """
    tenants = tuple(tenants)
    horizon, count = _check_generate(tenants, duration_s, requests, load)
    if count is not None:
        horizon = _first_horizon(tenants, count, load)
    while True:
        splits: dict[str, np.ndarray] = {}
        ids = _Ids()
        parts = [_tenant_part(i, t, tenants, rng, horizon, load, splits, ids) for i, t in enumerate(tenants)]
        drawn = sum(len(part.arrival_s) for part in parts)
        if count is None or drawn >= count or math.isinf(horizon):
            return _merge(tenants, parts, count)
        if horizon > _MAX_HORIZON:  # rates so low that the requests would spread over millennia
            raise ConfigError(f"requests: the tenants give only {drawn:,} of the {count:,} requests in "
                              f"{horizon:g} s of virtual time; raise tenants[*].rate or load, or ask for fewer")
        # Too few arrivals before the horizon (bursts, off windows): a longer one, drawn afresh.
        horizon *= 2


def _first_horizon(tenants: tuple, count: int, load: float) -> float:
    """A time by which `count` arrivals are likely, so each tenant draws about its share of them
    rather than `count` each (1,000 tenants x 1M requests would not fit in memory)."""
    rate = sum(spec.rate * load * _turns(spec) for spec in tenants if not _has_timestamps(spec) and spec.rate)
    if rate == 0:
        return math.inf  # timestamped traces only: they are finite, replay them whole
    return 1.2 * count / rate + 10.0 / rate


def _check_generate(tenants: tuple, duration_s, requests, load) -> tuple[float, int | None]:
    if not tenants:
        raise ConfigError("tenants: at least one tenant is required")
    if (duration_s is None) == (requests is None):
        raise ConfigError("generate: give exactly one of duration_s or requests")
    load = in_range(load, "load", *FACTOR)
    seen: dict[str, int] = {}
    for i, spec in enumerate(tenants):
        if not isinstance(spec, TenantSpec):
            raise ConfigError(f"tenants[{i}]: must be a TenantSpec, got {type(spec).__name__}")
        spec.check(i)
        if spec.name in seen:
            raise ConfigError(f"tenants[{i}].name: duplicate {spec.name!r} (also tenants[{seen[spec.name]}])")
        seen[spec.name] = i
    _check_stage_windows(tenants, requests)
    if requests is not None:
        return math.inf, in_range(requests, "requests", 1, MAX_REQUESTS, integer=True)
    horizon = seconds(duration_s, "duration_s")
    _check_expected(tenants, horizon, load)
    return horizon, None


def _check_stage_windows(tenants: tuple, requests) -> None:
    """Stages need a duration_s run, and tenants with stages share the stage boundaries, so that
    stage k is one span of time in the results."""
    staged = [i for i, spec in enumerate(tenants) if spec.stages is not None]
    if staged and requests is not None:
        raise ConfigError(f"tenants[{staged[0]}].stages: not allowed with requests (stages set how long the "
                          f"load lasts); allowed: duration_s, or no stages (tenant {tenants[staged[0]].name!r})")
    for i in staged[1:]:
        durations = [d for _, d in tenants[i].stages]
        if durations != [d for _, d in tenants[staged[0]].stages]:
            raise ConfigError(
                f"tenants[{i}].stages: the stages' durations must be those of tenants[{staged[0]}].stages "
                f"({', '.join(f'{d:g}' for _, d in tenants[staged[0]].stages)[:200]} s), so that each stage "
                f"is one span of time for every tenant; got {', '.join(f'{d:g}' for d in durations)[:200]} s "
                f"(tenant {tenants[i].name!r})")


def stage_windows(tenants: Sequence[TenantSpec], load: float = 1.0) -> tuple[tuple[float, float, float], ...]:
    """(start_s, end_s, rate) of each stage: the boundaries the staged tenants share and the sum of
    their stage rates times `load`; () when no tenant has stages."""
    staged = [spec.stages for spec in tenants if spec.stages is not None]
    if not staged:
        return ()
    ends = np.cumsum([d for _, d in staged[0]]).tolist()
    starts = [0.0, *ends[:-1]]
    rates = [sum(stages[k][0] for stages in staged) * load for k in range(len(ends))]
    return tuple(zip(starts, ends, rates))


def _check_expected(tenants: tuple, horizon: float, load: float) -> None:
    expected = 0.0
    for spec in tenants:
        if spec.stages is not None:
            expected += sum(rate * load * duration for rate, duration in spec.stages) * _turns(spec)
        elif _has_timestamps(spec):
            expected += len(read_trace(spec.trace))
        else:
            expected += spec.rate * load * _on_time(spec, horizon) * _turns(spec)
    if expected > MAX_REQUESTS:
        raise ConfigError(
            f"duration_s: rates x duration_s give ~{expected:,.0f} requests, above the {MAX_REQUESTS:,} "
            "limit; check tenants[*].rate, load and duration_s"
        )


def _turns(spec: TenantSpec) -> int:
    """Requests per arrival of the tenant's process: a conversation's turns, or 1."""
    return 1 if spec.multi_turn is None else spec.multi_turn.turns


def _has_timestamps(spec: TenantSpec) -> bool:
    return spec.trace is not None and read_trace(spec.trace).arrival_s is not None


def _on_time(spec: TenantSpec, horizon: float) -> float:
    """Seconds of [0, horizon) during which the tenant's arrival process is on."""
    if spec.arrival != "onoff" or math.isinf(horizon):
        return horizon
    period = spec.on_s + spec.off_s
    cycles = math.floor(horizon / period)
    return cycles * spec.on_s + min(horizon - cycles * period, spec.on_s)


def _tenant_part(index, spec, tenants, rng, horizon, load, splits, ids) -> _Part:
    if _has_timestamps(spec):
        return _replay(index, spec, tenants, rng, horizon, load, splits)
    if spec.stages is not None:
        arrival = _staged_arrivals(spec, rng, load)
        horizon = sum(duration for _, duration in spec.stages)
    else:
        arrival = _arrivals(spec, rng, spec.rate * load, horizon)
    prompt, output = _lengths(spec, rng, len(arrival) * _turns(spec))
    if spec.shared_prefix is None and spec.multi_turn is None:
        return _Part(arrival, prompt, output)
    return _with_content(index, spec, arrival, prompt, output, horizon, ids)


def _lengths(spec: TenantSpec, rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` (prompt, output) lengths: random rows of a length-only trace, which keep each row's pair,
    or draws from the tenant's dists."""
    if spec.trace is not None:
        trace = read_trace(spec.trace)
        rows = rng.integers(0, len(trace), size=n)
        return trace.prompt_tokens[rows], trace.output_tokens[rows]
    return spec.prompt.sample(rng, n), spec.output.sample(rng, n)


def _with_content(index, spec, starts, prompt, output, span, ids) -> _Part:
    """The tenant's requests with their prompts' content. Each arrival of its process starts a
    conversation of `turns` requests (1 without multi_turn), turn k arriving k think times after the
    first; turns at or past `span` (the horizon, or the stages' end) are not sent. Requests come out
    conversation by conversation; the merge sorts them by arrival."""
    turns = _turns(spec)
    think = 0.0 if spec.multi_turn is None else spec.multi_turn.think_time_s
    n = len(starts)
    arrival = (starts[:, None] + think * np.arange(turns)).reshape(-1)
    own = prompt.astype(np.int64).reshape(n, turns)
    said = np.minimum(output, spec.max_new_tokens).astype(np.int64).reshape(n, turns)  # what each turn emits
    system = 0 if spec.shared_prefix is None else spec.shared_prefix.tokens
    history = np.cumsum(own + said, axis=1) - (own + said)  # every earlier turn's prompt and output
    full = (system + history + own).reshape(-1)
    keep = arrival < span  # a suffix of each conversation's turns: arrivals grow turn by turn
    _check_content_size(index, spec, full[keep])
    prefixes = _conversation_prefixes(spec, own, said, keep.reshape(n, turns), ids)
    return _Part(arrival[keep], full[keep], np.asarray(output)[keep], prefixes)


def _check_content_size(index: int, spec: TenantSpec, prompts: np.ndarray) -> None:
    """Prompts grown by a system prompt or a history stay token counts, and their ids fit in memory."""
    key = f"tenants[{index}].{'shared_prefix' if spec.multi_turn is None else 'multi_turn'}"
    longest, total = int(prompts.max(initial=0)), int(prompts.sum())
    if longest > MAX_TOKENS:
        raise ConfigError(f"{key}: a prompt would hold {longest:,} tokens (system prompt, history and its own); "
                          f"allowed: at most {MAX_TOKENS:,}: a shorter shared_prefix.tokens, fewer multi_turn.turns "
                          f"or shorter prompt_tokens and output_tokens (tenant {spec.name!r})")
    if total > MAX_PREFIX_IDS:
        raise ConfigError(f"{key}: the tenant's prompts would hold {total:,} token ids in all, above the "
                          f"{MAX_PREFIX_IDS:,} a run keeps in memory; allowed: fewer requests (rate, duration_s, "
                          f"requests), shorter prompts or fewer multi_turn.turns (tenant {spec.name!r})")


def _conversation_prefixes(spec: TenantSpec, own, said, keep, ids: _Ids) -> tuple[Prefix, ...]:
    """The kept turns' prefixes, conversation by conversation: [system prompt] + for each turn its
    new tokens, and its output before the next turn. Ids are taken in this order, so the seed fixes
    them; a group's system prompt takes its ids at the group's first conversation."""
    shared = spec.shared_prefix
    systems: dict[int, tuple[int, ...]] = {}
    out = []
    for c in range(len(own)):
        content: tuple[int, ...] = ()
        if shared is not None:
            group = shared.group_of(c)
            if group not in systems:
                systems[group] = ids.take(shared.tokens)
            content = systems[group]
        sent = int(keep[c].sum())
        for k in range(sent):
            content = content + ids.take(int(own[c, k]))
            out.append(Prefix(content, 1))
            if k + 1 < sent:
                content = content + ids.take(int(said[c, k]))
    return tuple(out)


def _replay(index, spec, tenants, rng, horizon, load, splits) -> _Part:
    """This tenant's rows of a timestamped trace, split among the tenants that share the file."""
    trace = read_trace(spec.trace)
    # Trace.path is resolved, so differently spelled paths to one file form one group.
    group = [i for i, t in enumerate(tenants) if t.trace is not None and read_trace(t.trace).path == trace.path]
    if len(group) == 1:
        mine = np.arange(len(trace))
    else:
        if trace.path not in splits:  # drawn once, at the group's first tenant, so order is fixed
            shares = np.array([tenants[i].share for i in group], dtype=np.float64)
            splits[trace.path] = rng.choice(len(group), size=len(trace), p=shares / shares.sum())
        mine = np.flatnonzero(splits[trace.path] == group.index(index))
    arrival = trace.arrival_s[mine] / load
    keep = arrival < horizon
    mine = mine[keep]
    prefixes = None if trace.prefixes is None else tuple(trace.prefixes[i] for i in mine)
    return _Part(arrival[keep], trace.prompt_tokens[mine], trace.output_tokens[mine], prefixes)


def _arrivals(spec: TenantSpec, rng, rate: float, horizon: float) -> np.ndarray:
    """Arrival times of one synthetic tenant in [0, horizon)."""
    if rate == 0:
        return np.zeros(0, dtype=np.float64)
    if spec.arrival == "constant":
        times = np.arange(1, math.ceil(horizon * rate) + 2, dtype=np.float64) / rate
    elif spec.arrival == "onoff":
        # A Poisson process paused during off windows is a Poisson process in "on time" (memoryless),
        # mapped to wall time by inserting the off windows.
        on_times = _renewal(rng, _exponential(rate), _on_time(spec, horizon), rate)
        cycle = np.floor(on_times / spec.on_s)
        times = cycle * (spec.on_s + spec.off_s) + (on_times - cycle * spec.on_s)
    elif spec.arrival == "gamma":
        times = _renewal(rng, _gamma(rate, spec.cv), horizon, rate)
    else:
        times = _renewal(rng, _exponential(rate), horizon, rate)
    return times[times < horizon]


def _staged_arrivals(spec: TenantSpec, rng, load: float) -> np.ndarray:
    """Arrivals of a tenant with stages: the tenant's arrival process at each stage's rate, started
    afresh at the stage's start; constant arrivals begin at the start, so a stage of rate r and
    duration d holds exactly ceil(r * d) of them."""
    pieces, start = [], 0.0
    for rate, duration in spec.stages:
        rate = rate * load
        if spec.arrival == "constant" and rate > 0:
            times = np.arange(math.ceil(duration * rate) + 1, dtype=np.float64) / rate
            times = times[times < duration]
        else:
            times = _arrivals(spec, rng, rate, duration)
        end = start + duration  # the sum stage_windows forms, so each arrival falls in its own window
        pieces.append(np.minimum(start + times, np.nextafter(end, -math.inf)))
        start = end
    return np.concatenate(pieces)


def _exponential(rate: float):
    return lambda rng, n: rng.exponential(1.0 / rate, size=n)


def _gamma(rate: float, cv: float):
    shape = 1.0 / (cv * cv)
    return lambda rng, n: rng.gamma(shape, 1.0 / (rate * shape), size=n)


def _renewal(rng, gaps, horizon: float, rate: float) -> np.ndarray:
    """Cumulative sums of gaps, drawn in chunks until one past `horizon`."""
    expected = rate * horizon
    # Mean + a few standard deviations usually ends in one chunk; the loop covers bursty tails.
    chunk = int(expected + 4.0 * math.sqrt(expected)) + 64
    pieces, last = [], 0.0
    while last < horizon:
        times = last + np.cumsum(gaps(rng, chunk))
        pieces.append(times)
        last = float(times[-1])
    return np.concatenate(pieces)


def _merge(tenants: tuple, parts: list[_Part], count: int | None) -> Workload:
    arrival = np.concatenate([p.arrival_s for p in parts]).astype(np.float64)
    tenant = np.concatenate([np.full(len(p.arrival_s), i, dtype=np.int32) for i, p in enumerate(parts)])
    max_new = np.concatenate(
        [np.full(len(p.arrival_s), t.max_new_tokens, dtype=np.int64) for t, p in zip(tenants, parts)]
    )
    order = np.argsort(arrival, kind="stable")
    if count is not None:
        if len(order) < count:
            raise ConfigError(
                f"requests: asked for {count:,} but the tenants give only {len(order):,} "
                "(traces are replayed once; rates of 0 give none)"
            )
        order = order[:count]
    prefixes = None
    if any(p.prefixes is not None for p in parts):
        flat = [x for p in parts for x in (p.prefixes or (None,) * len(p.arrival_s))]
        prefixes = tuple(flat[i] for i in order)
        if not any(prefixes):  # None is how a workload says that no request carries content
            prefixes = None
    return Workload(
        tenants=tenants,
        arrival_s=arrival[order],
        tenant=tenant[order],
        prompt_tokens=np.concatenate([p.prompt for p in parts]).astype(np.int64)[order],
        output_tokens=np.concatenate([p.output for p in parts]).astype(np.int64)[order],
        max_new_tokens=max_new[order],
        prefixes=prefixes,
    )
