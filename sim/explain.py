"""A run's decision file, and one request's story told from it (`fairbatch explain RUN REQUEST_ID`).

`fairbatch simulate --decisions PATH` writes PATH as JSON lines: first {"kind": "run", ...} (the
policy, placement, tenants and service weights), then every decision record of the core
(scheduler.decisions: "admit", "preempt", "blocked") in the order they were made, then one
{"kind": "request", ...} per request (its times, tokens, worker, preemptions and outcome). Times
are seconds of simulated time; a time that never came is null.

`explain()` reads it back and tells one request's story in plain words: when it arrived, what
was queued, whom the policy admitted while it waited and by which keys, when nothing was admitted
and why, when it ran, whether it was preempted, and what it cost in service.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from scheduler.decisions import ADMIT, BLOCKED, PREEMPT, Candidate, Decision
from scheduler.errors import ConfigError
from scheduler.outcomes import Outcome

from .results import RunData

MAX_LISTED = 5  # admissions ahead of the request shown one by one


# ----- writing ----------------------------------------------------------------------------------

def decision_lines(header: dict, decisions: Iterable[Decision], data: RunData) -> Iterator[str]:
    """The decision file's lines: the run, the decisions, the requests."""
    names = [t.name for t in data.tenants]
    yield _dumps({"kind": "run", **header, "tenants": names})
    for decision in decisions:
        yield _dumps(_decision_dict(decision, names))
    for row in data.records:
        yield _dumps({"kind": "request", "id": int(row["id"]), "tenant": names[row["tenant"]],
                      "arrival": _time(row["arrival"]), "admit": _time(row["admit"]),
                      "first_token": _time(row["first_token"]), "finish": _time(row["finish"]),
                      "prompt_tokens": int(row["prompt_tokens"]), "output_tokens": int(row["output_tokens"]),
                      "worker": int(row["worker"]), "preemptions": int(row["preemptions"]),
                      "outcome": Outcome.from_code(int(row["outcome"])).value})


def _dumps(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _time(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_id(rid):
    return rid.item() if isinstance(rid, np.generic) else rid


def _candidate_dict(candidate: Candidate, names: Sequence[str]) -> dict:
    out = {"id": _json_id(candidate.request_id), "tenant": names[candidate.tenant], "arrival": candidate.arrival,
           "keys": {name: float(value) for name, value in candidate.keys}}
    if candidate.fits is not None:
        out["fits"] = candidate.fits
    return out


def _decision_dict(decision: Decision, names: Sequence[str]) -> dict:
    out = {"kind": decision.kind, "time": decision.time, "worker": decision.worker, "queue": decision.queue,
           "chosen": _candidate_dict(decision.chosen, names),
           "candidates": [_candidate_dict(c, names) for c in decision.candidates],
           "queued": {names[t]: n for t, n in enumerate(decision.queued) if n}}
    if decision.cause:
        out["cause"] = decision.cause
    return out


# ----- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Run:
    header: dict
    decisions: list[dict]
    request: dict


def load(path: Path, request_id: str) -> Run:
    """The run's header, its decisions and the one request's record, or a ConfigError that says
    what is wrong with RUN or REQUEST_ID."""
    path = _decision_file(path)
    header, decisions, found, ids = None, [], None, 0
    try:
        with path.open() as lines:
            for number, line in enumerate(lines, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise ConfigError(f"RUN: {path} line {number} is not JSON; allowed: a file that "
                                      "`fairbatch simulate --decisions` wrote") from None
                kind = row.get("kind") if isinstance(row, dict) else None
                if number == 1 and kind != "run":
                    raise ConfigError(f"RUN: {path} is not a decision file (its first line is not the run's); "
                                      "allowed: a file that `fairbatch simulate --decisions` wrote")
                if kind == "run":
                    header = row
                elif kind == "request":
                    ids += 1
                    if str(row["id"]) == request_id:
                        found = row
                elif kind in (ADMIT, PREEMPT, BLOCKED):
                    decisions.append(row)
    except OSError as err:
        raise ConfigError(f"RUN: cannot read {path}: {err.strerror or err}") from None
    if header is None:
        raise ConfigError(f"RUN: {path} is empty; allowed: a file that `fairbatch simulate --decisions` wrote")
    if found is None:
        raise ConfigError(f"REQUEST_ID: no request {request_id!r} in {path}; allowed: the ids of its {ids:,} "
                          f"requests" + (f" (0 to {ids - 1:,})" if ids else ""))
    return Run(header, decisions, found)


def _decision_file(path: Path) -> Path:
    """RUN: the decision file, or a folder holding exactly one *.decisions.jsonl."""
    if path.is_dir():
        found = sorted(path.glob("*.decisions.jsonl"))
        if len(found) != 1:
            raise ConfigError(f"RUN: {path} holds {len(found)} *.decisions.jsonl files; allowed: a decision "
                              "file, or a folder with exactly one")
        return found[0]
    if not path.exists():
        raise ConfigError(f"RUN: {path} does not exist; allowed: a file that `fairbatch simulate --decisions` wrote")
    return path


# ----- the story --------------------------------------------------------------------------------

def explain(path: Path, request_id: str) -> str:
    run = load(path, request_id)
    return "\n".join(story(run.header, run.decisions, run.request))


def story(header: dict, decisions: list[dict], request: dict) -> list[str]:
    rid, tenant = request["id"], request["tenant"]
    lines = [f"request {rid} of tenant {tenant}: {request['prompt_tokens']:,} prompt tokens, "
             f"{request['output_tokens']:,} output tokens; {header.get('policy')} / {header.get('placement')} on "
             f"{header.get('workers')} worker(s), seed {header.get('seed')}"]
    arrival, admit = request["arrival"], request["admit"]
    lines.append(f"arrived at {_s(arrival)}" + _queued_then(decisions, arrival))
    mine = [d for d in decisions if _involves(d, rid)]
    end = admit if admit is not None else math.inf
    waited = [d for d in decisions if d["kind"] == ADMIT and arrival <= d["time"] <= end and d["chosen"]["id"] != rid
              and _serves(d, request)]
    lines += _waiting(request, waited, decisions, end)
    for decision in mine:
        lines += _own(decision, request)
    lines += _outcome(header, request)
    return lines


def _queued_then(decisions: list[dict], at: float) -> str:
    """What the first decision at or after `at` saw queued."""
    first = next((d for d in decisions if d["time"] >= at), None)
    if first is None or not first["queued"]:
        return "; nothing else was queued"
    total = sum(first["queued"].values())
    parts = ", ".join(f"{n:,} of {name}" for name, n in sorted(first["queued"].items(), key=lambda kv: -kv[1]))
    return f"; at the next decision ({_s(first['time'])}) {total:,} requests were queued ({parts}), itself included"


def _involves(decision: dict, rid) -> bool:
    return decision["chosen"]["id"] == rid and decision["kind"] in (ADMIT, PREEMPT, BLOCKED)


def _serves(decision: dict, request: dict) -> bool:
    # under early binding only the request's own worker's admissions were ahead of it
    return decision["queue"] is None or request["worker"] < 0 or decision["queue"] == request["worker"]


def _waiting(request: dict, waited: list[dict], decisions: list[dict], end: float) -> list[str]:
    arrival, admit = request["arrival"], request["admit"]
    until = "until the run ended" if admit is None else f"{_ms(admit - arrival)} in the queue"
    if not waited:
        return [f"waited {until}; no other request was admitted meanwhile"]
    by_tenant = Counter(d["chosen"]["tenant"] for d in waited)
    parts = ", ".join(f"{n:,} of {name}" for name, n in by_tenant.most_common())
    lines = [f"waited {until}, while {len(waited):,} other requests were admitted ahead of it ({parts})"]
    own_head = [d for d in waited if _head_of(d, request["tenant"]) not in (None, request["id"])]
    if own_head:
        lines.append(f"  for {len(own_head):,} of those admissions its tenant's first queued request was an earlier "
                     f"one of its own")
    listed = [d for d in waited if _head_of(d, request["tenant"]) == request["id"]][:MAX_LISTED]
    if listed:
        count = sum(1 for d in waited if _head_of(d, request["tenant"]) == request["id"])
        lines.append(f"  while it was its tenant's first in the queue the policy chose {count:,} others"
                     + (f", the first {len(listed)}:" if count > len(listed) else ":"))
        for d in listed:
            me = next(c for c in d["candidates"] if c["id"] == request["id"])
            why = " (isolation passed over the policy's first choice)" if d.get("cause") == "isolation" else ""
            lines.append(f"    {_s(d['time'])} worker {d['worker']}: request {d['chosen']['id']} of "
                         f"{d['chosen']['tenant']} ({_keys(d['chosen'])}) over it ({_keys(me)}){why}")
    blocked = [d for d in decisions if d["kind"] == BLOCKED and arrival <= d["time"] <= end and _serves(d, request)]
    if blocked:
        fits = sum(1 for d in blocked if any(c.get("fits") for c in d["candidates"]))
        lines.append(f"  {len(blocked):,} times a step had room but the policy's next request did not fit the KV "
                     f"cache, so nothing more was admitted ({fits:,} of them with another request that would have fitted)")
    return lines


def _head_of(decision: dict, tenant: str):
    return next((c["id"] for c in decision["candidates"] if c["tenant"] == tenant), None)


def _own(decision: dict, request: dict) -> list[str]:
    kind, at = decision["kind"], _s(decision["time"])
    others = [c for c in decision["candidates"] if c["id"] != request["id"]]
    compared = "; ".join(f"{c['tenant']}'s {c['id']} ({_keys(c)})" for c in others)
    if kind == ADMIT:
        line = f"admitted at {at} on worker {decision['worker']} ({_keys(decision['chosen'])})"
        line += f", chosen over {compared}" if compared else ", the only candidate"
        if decision.get("cause") == "isolation":
            line += ("; isolation passed over the policy's first choice (a tenant at its fair share of the "
                     "worker's slots, KV or step)")
        return [line]
    if kind == PREEMPT:
        cause = "its worker left the pool" if decision.get("cause") == "worker_removed" else "the step needed its KV"
        return [f"preempted at {at} on worker {decision['worker']} ({cause}; {_keys(decision['chosen'])}), "
                f"to be recomputed; the other tenants' victims were {compared or 'none'}"]
    fitting = [c for c in others if c.get("fits")]
    return [f"at {at} it was the policy's next request on worker {decision['worker']} but did not fit the KV cache"
            + (f"; {len(fitting)} other tenants' requests would have" if fitting else "")]


def _outcome(header: dict, request: dict) -> list[str]:
    arrival, first, finish = request["arrival"], request["first_token"], request["finish"]
    lines = []
    if first is not None:
        lines.append(f"first token at {_s(first)} (TTFT {_ms(first - arrival)})")
    if request["preemptions"]:
        lines.append(f"preempted {request['preemptions']} time(s) in all")
    w_p, w_q = (header.get("service_weights") or [1.0, 2.0])[:2]
    prompt, output = request["prompt_tokens"], request["output_tokens"]
    cost = f"cost {w_p:g} x {prompt:,} + {w_q:g} x {output:,} = {w_p * prompt + w_q * output:,.0f} service"
    if finish is not None:
        lines.append(f"finished at {_s(finish)} (E2E {_ms(finish - arrival)}) with {output:,} output tokens; {cost}")
    else:
        lines.append(f"{request['outcome']}: {output:,} output tokens when the run ended; {cost} so far")
    return lines


def _keys(candidate: dict) -> str:
    keys = {k: v for k, v in candidate["keys"].items() if k != "submitted"}
    shown = [f"{name.replace('_', ' ')} {_num(value)}" for name, value in keys.items()]
    return ", ".join(shown) or f"arrived {_s(candidate['arrival'])}"


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.3f}"


def _s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.2f} s"
