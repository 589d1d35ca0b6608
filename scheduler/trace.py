"""A timeline trace of a run, as Chrome trace-event JSON (what Perfetto and chrome://tracing open).

Owns `TraceRecorder`. A driver (sim.cluster, scheduler.runtime.driver) feeds it what it already
has: the core's plans and step outputs, submission verdicts, KV usage and the per-tenant queries.
The core never sees it, so the core stays pure, and a run without a trace has no recorder at all.
No I/O either: `to_json()` returns the text and the driver writes it.

What a viewer shows:

- process "workers", a thread per worker: one complete event ("X") per step, named and coloured
  by its kind (prefill: prefill chunks only; decode: decodes only; mixed: both). A run of identical
  decode steps (the simulator's fast forward) is one event with `steps` > 1. Args: steps, tokens
  and tenant_tokens (each tenant's; over all its steps), and of its first step: batch (decodes +
  chunks), prefill_tokens, decodes, kv_used and kv_total (blocks, at its start), admitted, preempted.
- a process per tenant: counters "queued" (requests waiting) and "service" (its normalised service,
  VTC's counter definition) at every sample the driver gives; a thread "arrivals" with a zero-length
  slice per arrival (an instant per rejection); and each request as an async slice
  "request <id>" holding its phases in turn: queued, prefill, decode (queued again after a
  preemption, recomputed, and so on).
- a flow per request (id = the request's): its arrival, the step that admitted it, the steps that
  preempted or readmitted it, the step of its first token and the step it finished in.

Bounds for long runs: `window` = (start, end) seconds keeps the steps and samples that overlap it
and the requests whose lifetime does; `requests` (ids, a sample the driver drew) keeps only those
requests' slices and flows (every step and sample is kept either way).
"""

from __future__ import annotations

import json
from typing import Container, Hashable, Iterable, Sequence

from .actions import StepOutputs, StepPlan
from .request import Request

WORKERS_PID = 1
TENANT_PID = 2  # tenant i is process TENANT_PID + i
COLOURS = {"prefill": "thread_state_iowait", "decode": "good", "mixed": "yellow"}  # trace viewers' names


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)  # trace time is in microseconds; ns precision keeps it short


def _json_id(rid: Hashable) -> int | str:
    return rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else str(rid)


class _Traced:
    """A request whose slices are kept: its events so far and the phase open in its slice."""

    __slots__ = ("tenant", "events", "phase")

    def __init__(self, tenant: int) -> None:
        self.tenant = tenant
        self.events: list[dict] = []
        self.phase: str | None = None


class _Step:
    """A step in flight: its start, kind, first step's args, and per tenant the requests decoding
    in the steps after its first (when it is a run of several)."""

    __slots__ = ("start", "name", "args", "later")

    def __init__(self, start: float, name: str, args: dict, later: list[int]) -> None:
        self.start, self.name, self.args, self.later = start, name, args, later


class TraceRecorder:
    """The trace of one run, fed in time order by its driver."""

    def __init__(self, tenants: Sequence[str], workers: Iterable[int] = (), *,
                 window: tuple[float, float] | None = None, requests: Container[Hashable] | None = None) -> None:
        self._names = tuple(tenants)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._workers = dict.fromkeys(sorted(workers))
        self._window = window
        self._sample = requests
        self._events: list[dict] = []
        self._traced: dict[Hashable, _Traced] = {}
        self._tenant_of: dict[Hashable, int] = {}  # every live request, traced or not
        self._decoding: dict[Hashable, int] = {}  # decoding request -> its worker
        self._decodes: dict[int, list[int]] = {}  # worker -> decoding requests per tenant
        self._steps: dict[int, _Step] = {}  # worker -> its step in flight (or last)
        self.last_time = 0.0

    # ----- what the driver reports --------------------------------------------------------------

    def submitted(self, request: Request, now: float, rejected: str | None = None) -> None:
        """A request arrived; `rejected`: the reason it was refused, if it was."""
        self.last_time = max(self.last_time, now)
        tenant = self._index[request.tenant]
        sampled = self._sample is None or request.id in self._sample
        rid = _json_id(request.id)
        if rejected is not None:
            if sampled and self._inside(now, now):
                self._events.append({"name": f"rejected {rid}", "ph": "i", "s": "t", "pid": TENANT_PID + tenant,
                                     "tid": 0, "ts": _us(now), "args": {"request": rid, "reason": rejected}})
            return
        self._tenant_of[request.id] = tenant
        if not sampled or not self._before_end(now):
            return
        traced = self._traced[request.id] = _Traced(tenant)
        pid, ts = TENANT_PID + tenant, _us(now)
        traced.events += [
            {"name": f"arrive {rid}", "ph": "X", "pid": pid, "tid": 0, "ts": ts, "dur": 0,
             "args": {"request": rid, "prompt_tokens": request.prompt_tokens,
                      "max_new_tokens": request.max_new_tokens}},
            {"name": "request", "cat": "flow", "ph": "s", "id": rid, "pid": pid, "tid": 0, "ts": ts},
            {"name": f"request {rid}", "cat": "request", "ph": "b", "id": rid, "pid": pid, "ts": ts,
             "args": {"tenant": request.tenant, "prompt_tokens": request.prompt_tokens}},
        ]
        self._phase(request.id, traced, "queued", now)

    def step_started(self, worker: int, plan: StepPlan, now: float, kv_used: int, kv_total: int) -> None:
        """The worker got `plan` at `now` (an empty plan too: it may preempt or release)."""
        self.last_time = max(self.last_time, now)
        self._workers.setdefault(worker, None)
        for rid in plan.preempted:
            self._stop_decoding(rid)
            self._point(rid, worker, now, "t")
            self._phase(rid, self._traced.get(rid), "queued (preempted)", now)
        for rid in plan.released:
            self._stop_decoding(rid)
        if not plan:
            return
        for rid in plan.admitted:
            self._point(rid, worker, now, "t")
            self._phase(rid, self._traced.get(rid), "prefill", now)
        later = list(self._decodes.get(worker, [0] * len(self._names)))
        for item in plan.chunks:  # a chunk that completes its prompt decodes in the steps after
            tenant = self._tenant_of.get(item.request_id)
            if item.samples and tenant is not None:
                later[tenant] += 1
        self._steps[worker] = _Step(now, _kind(plan), self._step_args(worker, plan, kv_used, kv_total), later)

    def step_finished(self, worker: int, end: float, steps: int) -> None:
        """The worker's step (or run of `steps` identical steps) ended at `end`."""
        self.last_time = max(self.last_time, end)
        step = self._steps[worker]
        if not self._inside(step.start, end):
            return
        ts, args = _us(step.start), dict(step.args)
        if steps > 1:  # the later steps decode every request of the first, one token each
            args["tokens"] += (steps - 1) * sum(step.later)
            args["tenant_tokens"] = {self._names[t]: args["tenant_tokens"].get(self._names[t], 0) + (steps - 1) * n
                                     for t, n in enumerate(step.later) if n or self._names[t] in args["tenant_tokens"]}
        self._events.append({"name": step.name, "cat": "step", "ph": "X", "pid": WORKERS_PID, "tid": worker,
                             "ts": ts, "dur": round(_us(end) - ts, 3), "cname": COLOURS[step.name],
                             "args": {"steps": steps, **args}})

    def step_outputs(self, worker: int, outputs: StepOutputs, token_time: float, now: float) -> None:
        """What the report of the worker's step produced; `token_time`: when its first step
        ended (the time of the tokens its prefill chunks sampled)."""
        self.last_time = max(self.last_time, now)
        start = self._steps[worker].start
        ended = {finished.request_id for finished in outputs.finished}
        for emitted in outputs.emitted:
            rid = emitted.request_id
            if emitted.first:
                self._point(rid, worker, start, "t")
            self._phase(rid, self._traced.get(rid), "decode", token_time)
            if rid not in ended:
                self._start_decoding(rid, worker)
        for finished in outputs.finished:
            rid = finished.request_id
            self._stop_decoding(rid)
            self._point(rid, worker, start, "f")
            self._end(rid, now, {"output_tokens": finished.output_tokens, "finish_reason": str(finished.reason.value)})

    def cancelled(self, request_id: Hashable, now: float) -> None:
        self.last_time = max(self.last_time, now)
        self._stop_decoding(request_id)
        self._end(request_id, now, {"finish_reason": "cancelled"})

    def tenants_sampled(self, now: float, queued: Sequence[int], service: Sequence[float]) -> None:
        """Each tenant's queued requests and normalised service at `now`."""
        self.last_time = max(self.last_time, now)
        if not self._inside(now, now):
            return
        ts = _us(now)
        for tenant, (waiting, served) in enumerate(zip(queued, service)):
            pid = TENANT_PID + tenant
            self._events += [{"name": "queued", "ph": "C", "pid": pid, "ts": ts, "args": {"queued": int(waiting)}},
                             {"name": "service", "ph": "C", "pid": pid, "ts": ts,
                              "args": {"service": round(float(served), 3)}}]

    # ----- the trace ----------------------------------------------------------------------------

    def events(self, end: float | None = None) -> list[dict]:
        """Every event, metadata first; requests still live are closed at `end` (default: the
        last time reported) and marked unfinished."""
        end = self.last_time if end is None else end
        kept = list(self._events)
        for rid, traced in self._traced.items():
            events = list(traced.events)
            if traced.phase is not None:
                ts, pid = _us(end), TENANT_PID + traced.tenant
                events += [{"name": traced.phase, "cat": "request", "ph": "e", "id": _json_id(rid), "pid": pid,
                            "ts": ts},
                           {"name": f"request {_json_id(rid)}", "cat": "request", "ph": "e", "id": _json_id(rid),
                            "pid": pid, "ts": ts, "args": {"unfinished": True}}]
            kept += events
        return self._metadata() + kept

    def to_json(self, end: float | None = None) -> str:
        """The trace file's text: {"traceEvents": [...]}, one event a line, the same for the same run."""
        lines = ",\n".join(json.dumps(event, separators=(",", ":"), allow_nan=False) for event in self.events(end))
        return '{"displayTimeUnit":"ms","traceEvents":[\n' + lines + "\n]}\n"

    # ----- internals ----------------------------------------------------------------------------

    def _inside(self, start: float, end: float) -> bool:
        window = self._window
        return window is None or (start <= window[1] and end >= window[0])

    def _before_end(self, now: float) -> bool:
        return self._window is None or now <= self._window[1]

    def _metadata(self) -> list[dict]:
        meta = [{"name": "process_name", "ph": "M", "pid": WORKERS_PID, "args": {"name": "workers"}},
                {"name": "process_sort_index", "ph": "M", "pid": WORKERS_PID, "args": {"sort_index": 0}}]
        meta += [{"name": "thread_name", "ph": "M", "pid": WORKERS_PID, "tid": worker,
                  "args": {"name": f"worker {worker}"}} for worker in sorted(self._workers)]
        for i, name in enumerate(self._names):
            pid = TENANT_PID + i
            meta += [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"tenant {name}"}},
                     {"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": 1 + i}},
                     {"name": "thread_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "arrivals"}}]
        return meta

    def _step_args(self, worker: int, plan: StepPlan, kv_used: int, kv_total: int) -> dict:
        per_tenant = list(self._decodes.get(worker, ()))
        per_tenant += [0] * (len(self._names) - len(per_tenant))
        prefill = 0
        for item in plan.chunks:
            prefill += item.num_tokens
            tenant = self._tenant_of.get(item.request_id)
            if tenant is not None:
                per_tenant[tenant] += item.num_tokens
        return {"batch": plan.decodes + len(plan.chunks), "tokens": plan.num_tokens, "prefill_tokens": prefill,
                "decodes": plan.decodes, "kv_used": kv_used, "kv_total": kv_total, "admitted": len(plan.admitted),
                "preempted": len(plan.preempted),
                "tenant_tokens": {self._names[t]: n for t, n in enumerate(per_tenant) if n}}

    def _start_decoding(self, rid: Hashable, worker: int) -> None:
        tenant = self._tenant_of.get(rid)
        if tenant is None or rid in self._decoding:
            return
        self._decoding[rid] = worker
        counts = self._decodes.setdefault(worker, [0] * len(self._names))
        counts[tenant] += 1

    def _stop_decoding(self, rid: Hashable) -> None:
        worker = self._decoding.pop(rid, None)
        if worker is not None:
            self._decodes[worker][self._tenant_of[rid]] -= 1

    def _phase(self, rid: Hashable, traced: _Traced | None, name: str, now: float) -> None:
        if traced is None:
            return
        ts, pid, jid = _us(now), TENANT_PID + traced.tenant, _json_id(rid)
        if traced.phase is not None:
            traced.events.append({"name": traced.phase, "cat": "request", "ph": "e", "id": jid, "pid": pid, "ts": ts})
        traced.events.append({"name": name, "cat": "request", "ph": "b", "id": jid, "pid": pid, "ts": ts})
        traced.phase = name

    def _point(self, rid: Hashable, worker: int, at: float, phase: str) -> None:
        """A step of the request's flow, bound to the worker's step that starts at `at`."""
        traced = self._traced.get(rid)
        if traced is not None:
            event = {"name": "request", "cat": "flow", "ph": phase, "id": _json_id(rid), "pid": WORKERS_PID,
                     "tid": worker, "ts": _us(at)}
            if phase == "f":
                event["bp"] = "e"  # bind to the enclosing slice, the step itself
            traced.events.append(event)

    def _end(self, rid: Hashable, now: float, args: dict) -> None:
        self._tenant_of.pop(rid, None)
        traced = self._traced.pop(rid, None)
        if traced is None:
            return
        ts, pid, jid = _us(now), TENANT_PID + traced.tenant, _json_id(rid)
        if traced.phase is not None:
            traced.events.append({"name": traced.phase, "cat": "request", "ph": "e", "id": jid, "pid": pid, "ts": ts})
        traced.events.append({"name": f"request {jid}", "cat": "request", "ph": "e", "id": jid, "pid": pid, "ts": ts,
                              "args": args})
        if self._window is None or now >= self._window[0]:
            self._events += traced.events


def _kind(plan: StepPlan) -> str:
    if not plan.chunks:
        return "decode"
    return "mixed" if plan.decodes else "prefill"
