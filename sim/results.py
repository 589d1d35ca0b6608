"""Results of a simulated run: what the simulator hands over and the metrics computed from it.

Owns the output contract (RECORD_DTYPE, TenantInfo, StageInfo, WorkerStats, Timeline, RunData),
summarize() which turns one run into a JSON-ready dict (latency and throughput with vLLM
benchmark_serving definitions, goodput, per-tenant service, fairness, utilisation, and per stage of
a staged load), format_report() for a terminal,
the statistics helpers weighted_percentile(), jain_index() and max_service_gap(), and
finite_or_none(), which keeps NaN out of every result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.outcomes import Outcome, RejectReason
from scheduler.request import SLO, Tenant
from scheduler.service import ServiceWeights, service

RECORD_DTYPE = np.dtype([
    ("id", np.int64), ("tenant", np.int32), ("worker", np.int32),
    ("arrival", np.float64), ("admit", np.float64), ("first_token", np.float64), ("finish", np.float64),
    ("prompt_tokens", np.int64), ("output_tokens", np.int64),
    ("outcome", np.int8),  # an Outcome's code
    ("reason", np.int8),  # a rejected request's RejectReason code; -1 otherwise
    ("preemptions", np.int32),
])

LATENCIES = ("ttft", "tpot", "itl", "e2el", "queue")
PERCENTILES = (("median", 50.0), ("p90", 90.0), ("p99", 99.0))
# Above this many backlogged tenants the pairwise gap search keeps only the heaviest ones.
GAP_MAX_TENANTS = 200
# Elements per (samples x tenants) block in the gap search: bounds memory for long timelines.
_GAP_BLOCK = 1 << 22


@dataclass(frozen=True, slots=True)
class TenantInfo:
    name: str
    weight: float = 1.0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None

    def __post_init__(self) -> None:
        # The core's Tenant and SLO own the rules for these fields.
        Tenant(self.name, self.weight, slo=SLO(self.slo_ttft_ms, self.slo_tpot_ms))

    @property
    def has_slo(self) -> bool:
        return self.slo_ttft_ms is not None or self.slo_tpot_ms is not None


@dataclass(frozen=True, slots=True)
class StageInfo:
    """One stage of a staged load: [start_s, end_s) and the rate offered in it (requests/s, the
    staged tenants' stage rates times load)."""

    start_s: float
    end_s: float
    rate: float


@dataclass(frozen=True, slots=True)
class WorkerStats:
    busy_s: float
    steps: int
    seq_steps: int
    token_steps: int
    kv_block_seconds: float
    kv_blocks_total: int
    preemptions: int
    prefix_queries: int = 0  # prompt tokens looked up in its prefix cache (vLLM's counting)
    prefix_hits: int = 0  # of those, found cached


# eq=False: fields are arrays, whose == is elementwise and has no truth value.
@dataclass(frozen=True, slots=True, eq=False)
class Timeline:
    time: np.ndarray
    service: np.ndarray
    backlogged: np.ndarray

    def __post_init__(self) -> None:
        s = self.time.shape[0] if self.time.ndim == 1 else -1
        if s < 0 or self.service.ndim != 2 or self.service.shape[0] != s:
            raise ValueError(f"timeline: time must be (S,), service (S, T); got {self.time.shape}, "
                             f"{self.service.shape}")
        if self.backlogged.shape != self.service.shape:
            raise ValueError(f"timeline: backlogged shape {self.backlogged.shape} != service shape "
                             f"{self.service.shape}")

    @classmethod
    def empty(cls, n_tenants: int) -> Timeline:
        return cls(np.zeros(0), np.zeros((0, n_tenants)), np.zeros((0, n_tenants), bool))


@dataclass(frozen=True, slots=True, eq=False)
class RunData:
    records: np.ndarray
    itl_values: np.ndarray
    itl_weights: np.ndarray
    duration_s: float
    tenants: tuple[TenantInfo, ...]
    workers: tuple[WorkerStats, ...]
    timeline: Timeline
    service_weights: tuple[float, ...] = (1.0, 2.0, 0.1)  # w_p, w_q, w_cached
    stages: tuple[StageInfo, ...] = ()  # empty unless tenants have stages
    # Per tenant (rows) the prompt tokens computed, output tokens generated and prompt tokens found
    # cached (columns): the scheduler's ledger at the end of the run, what its service counted.
    # None for a run built by hand: then the prompts of the admitted requests and the records' outputs.
    served: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.records.dtype != RECORD_DTYPE:
            raise ValueError(f"records must have RECORD_DTYPE, got {self.records.dtype}")
        if self.itl_values.shape != self.itl_weights.shape:
            raise ValueError("itl_values and itl_weights must have the same shape")
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError(f"tenant names must be unique: {names}")
        if self.timeline.service.shape[1] != len(self.tenants):
            raise ValueError(f"timeline has {self.timeline.service.shape[1]} tenant columns, "
                             f"expected {len(self.tenants)}")
        tenant = self.records["tenant"]
        if tenant.size and (tenant.min() < 0 or tenant.max() >= len(self.tenants)):
            raise ValueError("records reference a tenant index outside data.tenants")


@dataclass(frozen=True, slots=True)
class ServiceGap:
    gap: float | None                  # None when no two tenants were ever backlogged at the same sample
    pair: tuple[int, int] | None       # tenant indices achieving the gap; None when the gap is 0
    considered: int                    # tenants searched
    backlogged: int                    # tenants backlogged at some sample


# ---------------------------------------------------------------------------------------------
# statistics


class WeightedSamples:
    """Values with integer weights (inter-token gaps), gathered in numpy blocks and merged by exact
    value now and then, so memory grows with the distinct values, not with the tokens."""

    __slots__ = ("_values", "_weights", "_pending", "_merge_every", "_one_values", "_one_weights")

    def __init__(self, merge_every: int = 1 << 20) -> None:
        self._values: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._one_values: list[float] = []  # single values, kept apart: an array each would cost more
        self._one_weights: list[int] = []
        self._pending = 0
        self._merge_every = merge_every

    def add_one(self, value: float, weight: int) -> None:
        self._one_values.append(value)
        self._one_weights.append(weight)
        self._pending += 1
        if self._pending >= self._merge_every:
            self._merge()

    def add(self, values: Sequence[float], weight: int) -> None:
        """Count every value in `values` `weight` times (kept in lists until the next merge: a run's
        gaps are few, where an array each would cost more)."""
        self._one_values.extend(values)
        self._one_weights.extend([weight] * len(values))
        self._pending += len(values)
        if self._pending >= self._merge_every:
            self._merge()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct values ascending, their total weights)."""
        self._merge()
        if not self._values:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return self._values[0], self._weights[0]

    def _merge(self) -> None:
        if self._pending == 0:
            return
        self._values.append(np.array(self._one_values, dtype=float))
        self._weights.append(np.array(self._one_weights, dtype=np.int64))
        self._one_values, self._one_weights = [], []
        values, inverse = np.unique(np.concatenate(self._values), return_inverse=True)
        weights = np.bincount(inverse.ravel(), weights=np.concatenate(self._weights), minlength=len(values))
        self._values, self._weights = [values], [weights.astype(np.int64)]
        self._pending = 0


def weighted_percentile(values, weights, q, method: str = "inverted_cdf"):
    """Percentile q (0..100, scalar or array) of values each counted weights times.

    Equals np.percentile(np.repeat(values, weights), q, method=method) without the repeat.
    method is "inverted_cdf" or "linear" (linear assumes integer weights: they are positions).
    NaN when the total weight is zero.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    w = np.asarray(weights).ravel()
    if v.shape != w.shape:
        raise ValueError(f"values and weights differ in length: {v.size} != {w.size}")
    if np.any(w < 0):
        raise ValueError("weights must be >= 0")
    p = np.true_divide(q, 100)  # the same float numpy forms, so indices agree bit for bit
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"percentiles must be in [0, 100], got {q}")
    keep = w > 0
    v, w = v[keep], w[keep]
    if v.size == 0:
        return np.full(np.shape(p), np.nan)[()]
    order = np.argsort(v, kind="stable")
    v, cum = v[order], np.cumsum(w[order])
    n = cum[-1]
    if method == "inverted_cdf":
        # numpy's index: n * p - 1 rounded up (same float steps), clipped at 0. Element k of the
        # repeated array is the first value whose cumulative weight exceeds k.
        h = n * p - 1
        k = np.maximum(np.where(h == np.floor(h), np.floor(h), np.floor(h) + 1), 0)
        return v[np.minimum(np.searchsorted(cum, k, side="right"), v.size - 1)][()]
    if method == "linear":
        h = (n - 1) * p
        lo = np.floor(h)
        t = h - lo
        a = v[np.searchsorted(cum, lo, side="right")]
        b = v[np.searchsorted(cum, np.minimum(lo + 1, n - 1), side="right")]
        # numpy's lerp, both branches, for bit-equal results.
        return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)[()]
    raise ValueError(f"method must be 'inverted_cdf' or 'linear', got {method!r}")


def jain_index(x) -> float | None:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 is equal shares; None for no values, or for
    values that are not all finite (the ratio would be NaN)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all():
        return None
    sq = float(np.sum(x * x))
    if x.size == 1 or sq == 0.0:
        return 1.0
    return float(np.sum(x) ** 2 / (x.size * sq))


def max_service_gap(timeline: Timeline, max_tenants: int = GAP_MAX_TENANTS) -> ServiceGap:
    """Largest |dW_f - dW_g| over tenant pairs and intervals where both were backlogged at every sample.

    Exact at sample resolution: within a maximal run of samples where both are backlogged the answer
    is max(D) - min(D), D = W_f - W_g. Above max_tenants backlogged tenants, only the max_tenants
    with the most final normalised service are searched.
    """
    bl = np.asarray(timeline.backlogged, dtype=bool)
    w = np.asarray(timeline.service, dtype=np.float64)
    cand = np.flatnonzero(bl.any(axis=0))
    n_backlogged = cand.size
    if cand.size > max_tenants:
        heaviest = np.argsort(-w[-1, cand], kind="stable")[:max_tenants]
        cand = np.sort(cand[heaviest])
    # Tenant-major copies: each tenant's samples contiguous, so one tenant against many is one block.
    wt, bt = np.ascontiguousarray(w[:, cand].T), np.ascontiguousarray(bl[:, cand].T)
    best, pair = -np.inf, None
    block = max(1, _GAP_BLOCK // max(w.shape[0], 1))
    for i in range(cand.size - 1):
        for lo in range(i + 1, cand.size, block):
            hi = min(lo + block, cand.size)
            gaps = _pair_gaps(wt[i], bt[i], wt[lo:hi], bt[lo:hi])
            j = int(np.argmax(gaps))
            if gaps[j] > best:
                best, pair = float(gaps[j]), (int(cand[i]), int(cand[lo + j]))
    if pair is None:
        return ServiceGap(None, None, int(cand.size), int(n_backlogged))
    return ServiceGap(best, pair if best > 0 else None, int(cand.size), int(n_backlogged))


def _pair_gaps(w_f, bl_f, w_g, bl_g) -> np.ndarray:
    """Gap of tenant f against each row of w_g (tenant-major); -inf for a tenant never backlogged with f."""
    k, s = w_g.shape
    idx = np.flatnonzero(bl_g & bl_f)
    out = np.full(k, -np.inf)
    if idx.size == 0:
        return out
    d = (w_f - w_g).ravel()[idx]
    # A run ends where a sample is skipped or where one tenant's row ends and the next begins.
    ends = (np.diff(idx) != 1) | (idx[1:] % s == 0)
    starts = np.concatenate(([0], np.flatnonzero(ends) + 1))
    run_gap = np.maximum.reduceat(d, starts) - np.minimum.reduceat(d, starts)
    np.maximum.at(out, idx[starts] // s, run_gap)
    return out


# ---------------------------------------------------------------------------------------------
# summarize


def summarize(data: RunData) -> dict:
    """Metrics of one run as a dict of plain Python values (json.dumps(..., allow_nan=False) works).

    {"summary": {...}, "tenants": {name: {...}}, "fairness": {...}, "workers": [{...}, ...]}, and
    "stages": [{...}, ...] when the run has stages (the requests of every tenant that arrive in each).
    Latencies are in ms; a statistic over an empty set is None.
    """
    recs, dur = data.records, float(data.duration_s)
    slo_ttft = np.array([_inf(t.slo_ttft_ms) for t in data.tenants], dtype=np.float64)
    slo_tpot = np.array([_inf(t.slo_tpot_ms) for t in data.tenants], dtype=np.float64)
    summary = {"requests": int(recs.size), "duration_s": dur}
    summary |= _request_metrics(recs, dur, slo_ttft, slo_tpot)
    summary |= _latency_stats("itl", data.itl_values, data.itl_weights)
    summary = _order_latencies(summary)
    summary |= _utilisation(data.workers, dur)
    tenants = _tenant_metrics(data, slo_ttft, slo_tpot)
    result = {
        "summary": summary,
        "tenants": tenants,
        "fairness": _fairness(data, tenants),
        "workers": [_worker_metrics(w, dur) for w in data.workers],
    }
    if data.stages:
        result["stages"] = _stage_metrics(data, slo_ttft, slo_tpot)
    return finite_or_none(result)


def finite_or_none(value):
    """`value` with every NaN or infinite float, at any depth of dicts and lists, replaced by None:
    a ratio of nothing has no value, and JSON has no NaN."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _request_metrics(recs: np.ndarray, dur: float, slo_ttft: np.ndarray, slo_tpot: np.ndarray) -> dict:
    """Counts, throughputs, goodput and latency statistics of a set of records."""
    outcome = recs["outcome"]
    fin = recs[outcome == Outcome.FINISHED.code]
    ttft = fin["first_token"] - fin["arrival"]
    multi = fin["output_tokens"] > 1
    tpot = (fin["finish"] - fin["first_token"]) / np.maximum(fin["output_tokens"] - 1, 1)
    # A single-token request has no TPOT and meets a TPOT SLO trivially (as vLLM counts it).
    good = (ttft * 1e3 <= slo_ttft[fin["tenant"]]) & (~multi | (tpot * 1e3 <= slo_tpot[fin["tenant"]]))
    has_slo = np.isfinite(slo_ttft) | np.isfinite(slo_tpot)  # by tenant
    n_with_slo = int(np.count_nonzero(has_slo[recs["tenant"]]))
    admitted = recs[~np.isnan(recs["admit"])]
    n_done, n_good = int(fin.size), int(np.count_nonzero(good))
    in_tok, out_tok = int(fin["prompt_tokens"].sum()), int(fin["output_tokens"].sum())
    out = {
        "completed": n_done,
        Outcome.REJECTED.value: _count(outcome, Outcome.REJECTED),
        "rejected_by_reason": _reason_counts(recs),
        Outcome.CANCELLED.value: _count(outcome, Outcome.CANCELLED),
        Outcome.UNFINISHED.value: _count(outcome, Outcome.UNFINISHED),
        "total_input_tokens": in_tok,
        "total_output_tokens": out_tok,
        "request_throughput": _rate(n_done, dur),
        "output_throughput": _rate(out_tok, dur),
        "total_token_throughput": _rate(in_tok + out_tok, dur),
        "request_goodput": _rate(n_good, dur),
        # Over every submitted request with an SLO: rejected, cancelled and unfinished ones miss
        # (DistServe's attainment), so a policy cannot look good by leaving a tenant's requests
        # unserved. A tenant without an SLO has nothing to attain: None, not 100%.
        "slo_attainment": int(np.count_nonzero(good & has_slo[fin["tenant"]])) / n_with_slo if n_with_slo else None,
    }
    out |= _latency_stats("ttft", ttft)
    out |= _latency_stats("tpot", tpot[multi])
    out |= _latency_stats("e2el", fin["finish"] - fin["arrival"])
    out |= _latency_stats("queue", admitted["admit"] - admitted["arrival"])
    return out


def _count(outcomes: np.ndarray, outcome: Outcome) -> int:
    return int(np.count_nonzero(outcomes == outcome.code))


def _reason_counts(recs: np.ndarray) -> dict[str, int]:
    reason = recs["reason"][recs["outcome"] == Outcome.REJECTED.code]
    counts = np.bincount(reason[reason >= 0], minlength=len(RejectReason))
    return {RejectReason.from_code(i).value: int(c) for i, c in enumerate(counts) if c}


def _latency_stats(name: str, seconds, weights=None) -> dict:
    """mean/median/p90/p99 in ms. Percentiles interpolate linearly, like vLLM's np.percentile."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    w = np.ones(ms.shape, dtype=np.int64) if weights is None else np.asarray(weights)
    keep = np.isfinite(ms) & (w > 0)
    ms, w = ms[keep], w[keep]
    if ms.size == 0:
        return {f"mean_{name}_ms": None} | {f"{p}_{name}_ms": None for p, _ in PERCENTILES}
    qs = weighted_percentile(ms, w, [q for _, q in PERCENTILES], method="linear")
    out = {f"mean_{name}_ms": float(np.average(ms, weights=w))}
    return out | {f"{p}_{name}_ms": float(v) for (p, _), v in zip(PERCENTILES, qs)}


def _order_latencies(d: dict) -> dict:
    """Group latency keys by metric (ttft, tpot, itl, e2el, queue) after the scalar keys."""
    lat = [f"{s}_{n}_ms" for n in LATENCIES for s in ("mean", *(p for p, _ in PERCENTILES))]
    rest = {k: v for k, v in d.items() if k not in lat}
    return rest | {k: d[k] for k in lat if k in d}


def _utilisation(workers: tuple[WorkerStats, ...], dur: float) -> dict:
    steps = sum(w.steps for w in workers)
    per = [_worker_metrics(w, dur) for w in workers]
    return {
        "utilisation": _mean([p["utilisation"] for p in per]),
        "mean_batch_size": sum(w.seq_steps for w in workers) / steps if steps else None,
        "kv_usage_mean": _mean([p["kv_usage_mean"] for p in per]),
        "preemptions": int(sum(w.preemptions for w in workers)),
        "prefix_cache_hit_rate": _ratio(sum(w.prefix_hits for w in workers), sum(w.prefix_queries for w in workers)),
    }


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _worker_metrics(w: WorkerStats, dur: float) -> dict:
    kv_cap = w.kv_blocks_total * dur
    return {
        "utilisation": w.busy_s / dur if dur > 0 else None,
        "steps": int(w.steps),
        "mean_batch_size": w.seq_steps / w.steps if w.steps else None,
        "kv_usage_mean": w.kv_block_seconds / kv_cap if kv_cap > 0 else None,
        "preemptions": int(w.preemptions),
        "prefix_cache_queries": int(w.prefix_queries),
        "prefix_cache_hits": int(w.prefix_hits),
        "prefix_cache_hit_rate": _ratio(w.prefix_hits, w.prefix_queries),
    }


def tenant_tokens(data: RunData, tenant: int, records: np.ndarray | None = None) -> tuple[int, int, int]:
    """(prompt tokens computed, output tokens generated, prompt tokens found cached) of a tenant:
    the scheduler's ledger (`data.served`), or for a run built by hand its records (the prompts of
    its admitted requests, none cached). `records`: the tenant's, when the caller has them."""
    if data.served is not None:
        prompt, output, cached = (int(count) for count in data.served[tenant])
        return prompt, output, cached
    r = data.records[data.records["tenant"] == tenant] if records is None else records
    return int(r["prompt_tokens"][~np.isnan(r["admit"])].sum()), int(r["output_tokens"].sum()), 0


def tenant_service(data: RunData, tenant: int, records: np.ndarray | None = None) -> float:
    """A tenant's service (not normalised by its weight), the scheduler's definition."""
    prompt, output, cached = tenant_tokens(data, tenant, records)
    return float(service(ServiceWeights(*data.service_weights), prompt, output, 1.0, cached))


def _tenant_metrics(data: RunData, slo_ttft: np.ndarray, slo_tpot: np.ndarray) -> dict[str, dict]:
    recs, dur = data.records, float(data.duration_s)
    # One sort, then a slice per tenant, instead of a full mask per tenant.
    recs = recs[np.argsort(recs["tenant"], kind="stable")]
    bounds = np.searchsorted(recs["tenant"], np.arange(len(data.tenants) + 1))
    rows = {}
    for i, info in enumerate(data.tenants):
        r = recs[bounds[i]:bounds[i + 1]]
        prompt, output, cached = tenant_tokens(data, i, r)
        served = tenant_service(data, i, r)
        rows[info.name] = {
            "weight": float(info.weight),
            "slo_ttft_ms": info.slo_ttft_ms,
            "slo_tpot_ms": info.slo_tpot_ms,
            "submitted": int(r.size),
            **_order_latencies(_request_metrics(r, dur, slo_ttft, slo_tpot)),
            "prompt_tokens": prompt,
            "cached_prompt_tokens": cached,
            "prefix_cache_hit_rate": _ratio(cached, cached + prompt),
            "output_tokens": output,
            "service": float(served),
            "normalised_service": float(served / info.weight),
        }
    total = sum(row["service"] for row in rows.values())
    for row in rows.values():
        row["service_share"] = row["service"] / total if total > 0 else None
    return rows


# What each stage row keeps of _request_metrics, after its span, rates and submitted count.
STAGE_KEYS = ("completed", "rejected", "unfinished", "request_throughput", "output_throughput", "slo_attainment",
              *(f"{s}_{n}_ms" for n in ("ttft", "tpot", "e2el") for s in ("mean", *(p for p, _ in PERCENTILES))))


def _stage_metrics(data: RunData, slo_ttft: np.ndarray, slo_tpot: np.ndarray) -> list[dict]:
    """One row per stage over the requests (of every tenant) arriving in it; throughputs are per
    second of the stage, whenever the requests finish."""
    arrival = data.records["arrival"]
    rows = []
    for k, stage in enumerate(data.stages):
        recs = data.records[(arrival >= stage.start_s) & (arrival < stage.end_s)]
        span = stage.end_s - stage.start_s
        metrics = _request_metrics(recs, span, slo_ttft, slo_tpot)
        rows.append({"stage": k, "start_s": float(stage.start_s), "end_s": float(stage.end_s),
                     "rate": float(stage.rate), "submitted": int(recs.size), "offered_rate": _rate(recs.size, span),
                     **{key: metrics[key] for key in STAGE_KEYS}})
    return rows


def _fairness(data: RunData, tenants: dict[str, dict]) -> dict:
    active = [row["normalised_service"] for row in tenants.values() if row["submitted"] > 0]
    gap = max_service_gap(data.timeline)
    names = [t.name for t in data.tenants]
    note = None
    if gap.considered < gap.backlogged:
        note = (f"searched the {gap.considered} of {gap.backlogged} backlogged tenants "
                f"with the most normalised service")
    return {
        "jain_index": jain_index(active),
        "jain_tenants": len(active),
        "max_service_gap": gap.gap,
        "service_gap_pair": [names[gap.pair[0]], names[gap.pair[1]]] if gap.pair else None,
        "max_service_gap_note": note,
        "service_weights": [float(x) for x in data.service_weights],
    }


def _rate(count: float, dur: float) -> float | None:
    return count / dur if dur > 0 else None


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _inf(slo: float | None) -> float:
    return math.inf if slo is None else float(slo)


# ---------------------------------------------------------------------------------------------
# report

REPORT_MAX_TENANTS = 50


def format_report(result: dict, title: str | None = None, *, max_tenants: int = REPORT_MAX_TENANTS) -> str:
    """Plain-text tables of a summarize() result, at most 110 columns wide.

    With more than max_tenants tenants, the table lists the busiest (by submitted requests).
    """
    blocks = [_summary_block(result["summary"]), _latency_table(result["summary"])]
    if result["tenants"]:
        blocks.append(_tenant_table(result["tenants"], max_tenants))
    if result.get("stages"):
        blocks.append(_stage_table(result["stages"], max_tenants))
    blocks.append(_fairness_line(result["fairness"]) + "\n" + _utilisation_line(result["summary"]))
    text = "\n\n".join(blocks)
    if title:
        text = f"{title}\n{'=' * min(len(title), 110)}\n\n{text}"
    return text + "\n"


def _summary_block(s: dict) -> str:
    rejected = _num(s["rejected"])
    if s["rejected_by_reason"]:
        rejected += " (" + ", ".join(f"{k} {_num(v)}" for k, v in s["rejected_by_reason"].items()) + ")"
    lines = [
        ("Requests", f"{_num(s['requests'])} submitted, {_num(s['completed'])} completed, "
                     f"{_num(s['cancelled'])} cancelled, {_num(s['unfinished'])} unfinished"),
        ("Rejected", rejected),
        ("Duration", f"{_num(s['duration_s'], 2)} s"),
        ("Throughput", f"{_num(s['request_throughput'], 2)} req/s, {_num(s['output_throughput'], 1)} "
                       f"output tok/s, {_num(s['total_token_throughput'], 1)} total tok/s"),
        ("Goodput", f"{_num(s['request_goodput'], 2)} req/s, SLO attainment {_pct(s['slo_attainment'])}"),
    ]
    return "\n".join(_clip(f"{k:<12}{v}") for k, v in lines)


def _latency_table(s: dict) -> str:
    head = f"{'Latency (ms)':<14}" + "".join(f"{c:>12}" for c in ("mean", "median", "p90", "p99"))
    rows = [head, "-" * len(head)]
    for name in LATENCIES:
        cells = [s.get(f"{p}_{name}_ms") for p in ("mean", "median", "p90", "p99")]
        rows.append(f"{name.upper():<14}" + "".join(f"{_ms(c):>12}" for c in cells))
    return "\n".join(rows)


_TENANT_COLS = (("weight", 6), ("done", 8), ("rej", 7), ("req/s", 8), ("p50 TTFT", 9), ("p99 TTFT", 9),
                ("p50 TPOT", 9), ("p99 TPOT", 9), ("share", 7), ("SLO", 7))


def _tenant_table(tenants: dict[str, dict], max_tenants: int) -> str:
    names = list(tenants)
    if len(names) > max_tenants:
        names = sorted(names, key=lambda n: -tenants[n]["submitted"])[:max_tenants]
    width = max(6, min(20, max(len(n) for n in names)))
    head = f"{'tenant':<{width}}" + "".join(f"{c:>{w + 1}}" for c, w in _TENANT_COLS)
    rows = [head, "-" * len(head)]
    for n in names:
        t = tenants[n]
        cells = (_num(t["weight"], 2), _num(t["completed"]), _num(t["rejected"]),
                 _num(t["request_throughput"], 2), _ms(t["median_ttft_ms"]), _ms(t["p99_ttft_ms"]),
                 _ms(t["median_tpot_ms"]), _ms(t["p99_tpot_ms"]), _pct(t["service_share"]),
                 _pct(t["slo_attainment"]))
        label = n if len(n) <= width else n[:width - 1] + "~"
        rows.append(f"{label:<{width}}" + "".join(f"{c:>{w + 1}}" for c, (_, w) in zip(cells, _TENANT_COLS)))
    if len(names) < len(tenants):
        rows.append(f"... {len(tenants) - len(names)} more tenants not shown")
    return "\n".join(rows)


_STAGE_COLS = (("stage", 5), ("start s", 8), ("end s", 8), ("rate", 7), ("offered", 8), ("done", 7), ("rej", 6),
               ("req/s", 7), ("p50 TTFT", 8), ("p99 TTFT", 8), ("p50 TPOT", 8), ("p99 TPOT", 8), ("p99 E2E", 9))


def _stage_table(stages: list[dict], max_rows: int) -> str:
    """Stage rows in order; past max_rows, the first ones and a count of the rest."""
    head = "".join(f"{c:>{w + 1}}" for c, w in _STAGE_COLS)[1:]
    rows = [head, "-" * len(head)]
    for s in stages[:max_rows]:
        cells = (_num(s["stage"]), _num(s["start_s"], 1), _num(s["end_s"], 1), _num(s["rate"], 2),
                 _num(s["offered_rate"], 2), _num(s["completed"]), _num(s["rejected"]),
                 _num(s["request_throughput"], 2), _ms(s["median_ttft_ms"]), _ms(s["p99_ttft_ms"]),
                 _ms(s["median_tpot_ms"]), _ms(s["p99_tpot_ms"]), _ms(s["p99_e2el_ms"]))
        rows.append("".join(f"{c:>{w + 1}}" for c, (_, w) in zip(cells, _STAGE_COLS))[1:])
    if len(stages) > max_rows:
        rows.append(f"... {len(stages) - max_rows} more stages not shown")
    return "\n".join(rows)


def _fairness_line(f: dict) -> str:
    line = f"{'Fairness':<12}Jain {_num(f['jain_index'], 3)}, max service gap {_num(f['max_service_gap'], 1)}"
    if f["service_gap_pair"]:
        line += " ({} vs {})".format(*f["service_gap_pair"])
    if f["max_service_gap_note"]:
        line += f"\n{'':<12}({f['max_service_gap_note']})"
    return _clip(line)


def _utilisation_line(s: dict) -> str:
    line = (f"{'Utilisation':<12}busy {_pct(s['utilisation'])}, "
            f"mean batch {_num(s['mean_batch_size'], 1)}, KV {_pct(s['kv_usage_mean'])}, "
            f"preemptions {_num(s['preemptions'])}")
    if s.get("prefix_cache_hit_rate") is not None:
        line += f", prefix cache hits {_pct(s['prefix_cache_hit_rate'])}"
    return _clip(line)


def _num(x, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def _ms(x: float | None) -> str:
    # Sub-millisecond TPOTs of small models would all read 0.0 at one decimal.
    return _num(x, 3 if x is not None and abs(x) < 1 else 2 if x is not None and abs(x) < 10 else 1)


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _clip(text: str, width: int = 110) -> str:
    return "\n".join(line if len(line) <= width else line[:width - 3] + "..." for line in text.split("\n"))
