"""The timeline trace: its tracks, each request's flow, its bounds, determinism, and the
`fairbatch simulate --trace` flags' errors."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from hypothesis import given, settings, strategies as st
from sim_configs import small_config, tight_config

from benchmarks.main import main
from scheduler.actions import Emitted, Finished, ScheduledItem, StepOutputs, StepPlan
from scheduler.outcomes import FinishReason, Outcome
from scheduler.request import Request
from scheduler.trace import TENANT_PID, WORKERS_PID, TraceRecorder
from sim.cluster import Simulation
from sim.trace import TraceSpec


def traced(config, spec=TraceSpec()):
    sim = Simulation(config, trace=spec)
    data = sim.run()
    return data, json.loads(sim.trace.to_json(data.duration_s))["traceEvents"]


def flows(events) -> dict:
    by_id = defaultdict(list)
    for event in events:
        if event.get("cat") == "flow":
            by_id[event["id"]].append(event)
    return by_id


def test_each_worker_has_a_track_of_steps_with_their_kind_and_arguments():
    data, events = traced(small_config(duration_s=5))
    names = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events if e["ph"] == "M" and "name" in e["args"]}
    assert names[(WORKERS_PID, None)] == "workers"
    assert names[(WORKERS_PID, 0)] == "worker 0" and names[(WORKERS_PID, 1)] == "worker 1"
    assert names[(TENANT_PID, None)] == "tenant a" and names[(TENANT_PID + 1, None)] == "tenant b"
    steps = [e for e in events if e.get("cat") == "step"]
    assert {e["name"] for e in steps} <= {"prefill", "decode", "mixed"} and len(steps) > 10
    assert sum(e["args"]["steps"] for e in steps) == sum(w.steps for w in data.workers)
    for step in steps:
        args = step["args"]
        assert step["dur"] > 0 and args["batch"] >= 1 and 0 < args["kv_used"] <= args["kv_total"]
        assert sum(args["tenant_tokens"].values()) == args["tokens"]
        assert step["name"] == ("decode" if args["prefill_tokens"] == 0 else
                                "prefill" if args["decodes"] == 0 else "mixed")
    counters = [e for e in events if e["ph"] == "C"]
    assert {e["name"] for e in counters} == {"queued", "service"}


def check_flows(data, events) -> None:
    """Every request has one flow: its arrival, then steps in time order, ending where it finished."""
    by_id = flows(events)
    recs = data.records
    assert set(by_id) == set(recs["id"][recs["outcome"] != Outcome.REJECTED.code].tolist())
    for row in recs:
        if row["outcome"] == Outcome.REJECTED.code:
            continue
        flow = by_id[int(row["id"])]
        assert flow[0]["ph"] == "s" and flow[0]["ts"] == pytest.approx(row["arrival"] * 1e6, abs=1e-3)
        assert all(a["ts"] <= b["ts"] for a, b in zip(flow, flow[1:]))
        assert [e["ph"] for e in flow[1:-1]] == ["t"] * (len(flow) - 2)
        if row["outcome"] == Outcome.FINISHED.code:
            assert flow[-1]["ph"] == "f" and flow[-1]["ts"] <= row["finish"] * 1e6 + 1e-3
        else:
            assert flow[-1]["ph"] != "f"


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), policy=st.sampled_from(["fcfs", "vtc", "priority", "drr", "slo"]),
       placement=st.sampled_from(["global", "round_robin"]))
def test_every_request_flows_from_its_arrival_through_its_steps_to_its_finish(seed, policy, placement):
    config = tight_config(seed=seed, scheduler={"policy": policy, "placement": placement})  # preemptions happen
    data, events = traced(config)
    check_flows(data, events)


def test_a_request_slice_holds_its_phases_in_order():
    data, events = traced(small_config(duration_s=3))
    finished = data.records[data.records["outcome"] == Outcome.FINISHED.code][0]
    rid = int(finished["id"])
    mine = [e for e in events if e.get("cat") == "request" and e["id"] == rid]
    assert [(e["ph"], e["name"]) for e in mine] == [
        ("b", f"request {rid}"), ("b", "queued"), ("e", "queued"), ("b", "prefill"), ("e", "prefill"),
        ("b", "decode"), ("e", "decode"), ("e", f"request {rid}")]
    assert mine[-1]["args"]["output_tokens"] == finished["output_tokens"]


def test_same_config_and_seed_give_the_same_trace_byte_for_byte():
    config = small_config(duration_s=3)
    texts = []
    for _ in range(2):
        sim = Simulation(config, trace=TraceSpec(requests=10))
        data = sim.run()
        texts.append(sim.trace.to_json(data.duration_s))
    assert texts[0] == texts[1]


def test_the_results_are_the_same_with_and_without_a_trace():
    config = small_config(duration_s=5)
    plain = Simulation(config).run()
    with_trace = Simulation(config, trace=TraceSpec(), record_decisions=True).run()
    assert plain.records.tobytes() == with_trace.records.tobytes()
    assert plain.timeline.service.tobytes() == with_trace.timeline.service.tobytes()


def test_a_window_keeps_the_steps_and_requests_that_overlap_it():
    config = small_config(duration_s=10)
    data, events = traced(config, TraceSpec(window=(4.0, 5.0)))
    steps = [e for e in events if e.get("cat") == "step"]
    assert steps and all(e["ts"] <= 5e6 and e["ts"] + e["dur"] >= 4e6 for e in steps)
    assert all(4e6 <= e["ts"] <= 5e6 for e in events if e["ph"] == "C")
    kept = set(flows(events))
    recs = data.records
    ends = [r["finish"] if r["outcome"] == Outcome.FINISHED.code else data.duration_s for r in recs]
    overlapping = {int(r["id"]) for r, end in zip(recs, ends) if r["arrival"] <= 5.0 and end >= 4.0}
    assert kept == overlapping


def test_a_sample_keeps_only_that_many_requests():
    data, events = traced(small_config(duration_s=10), TraceSpec(requests=7))
    assert len(flows(events)) == 7
    assert len([e for e in events if e.get("cat") == "step"]) > 0


def test_the_recorder_alone_follows_a_plan_and_its_outputs():
    recorder = TraceRecorder(["a", "b"], [0])
    recorder.submitted(Request(1, "a", 8, 4), 0.0)
    recorder.submitted(Request(2, "b", 8, 4), 0.0, rejected="queue_full")
    plan = StepPlan(0, (ScheduledItem(1, 8, 0, True),), admitted=(1,))
    recorder.step_started(0, plan, 0.5, 2, 10)
    recorder.step_finished(0, 0.75, 1)
    recorder.step_outputs(0, StepOutputs(1, 0, (Emitted(1, 1, True),), ()), 0.75, 0.75)
    recorder.step_started(0, StepPlan(0, decodes=1, decode_context=9, repeat=3), 0.75, 3, 10)
    recorder.step_finished(0, 1.0, 3)
    recorder.step_outputs(0, StepOutputs(3, 1, (), (Finished(1, FinishReason.LENGTH, 4),)), 1.0, 1.0)
    events = json.loads(recorder.to_json())["traceEvents"]
    steps = [e for e in events if e.get("cat") == "step"]
    assert [(s["name"], s["args"]["steps"], s["args"]["tenant_tokens"]) for s in steps] == [
        ("prefill", 1, {"a": 8}), ("decode", 3, {"a": 3})]
    assert [e["ph"] for e in flows(events)[1]] == ["s", "t", "t", "f"]
    assert any(e["ph"] == "i" and e["args"] == {"request": 2, "reason": "queue_full"} for e in events)


# ----- the command line -------------------------------------------------------------------------

def error_of(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err.strip()


def test_simulate_writes_the_trace_and_bounds_it(tmp_path, capsys):
    out = tmp_path / "t" / "run.trace.json"
    assert main(["simulate", "--requests", "40", "--trace", str(out), "--trace-window", "0:2",
                 "--trace-requests", "5"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    events = json.loads(out.read_text())["traceEvents"]
    assert 0 < len(flows(events)) <= 5


@pytest.mark.parametrize("argv,message", [
    (["--trace-window", "1:2"], "--trace-window: bounds the trace, so it needs --trace PATH"),
    (["--trace", "T", "--trace-window", "5:1"], "--trace-window: must have 0 <= START < END, got '5:1'"),
    (["--trace", "T", "--trace-window", "soon"], "--trace-window: must be START:END in seconds"),
    (["--trace", "T", "--trace-requests", "0"], "--trace-requests: must be an integer >= 1"),
    (["--trace", "T", "--trace-window", "5000:6000"], "--trace-window: 5000:6000 starts after the run"),
])
def test_bad_trace_flags_are_named_errors(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "t.json") if a == "T" else a for a in argv]
    assert message in error_of(["simulate", "--requests", "20", *argv], capsys)


def test_an_unwritable_trace_path_is_refused_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    message = error_of(["simulate", "--requests", "20", "--trace", str(blocker / "t.json")], capsys)
    assert message.startswith("fairbatch: error: --trace:") and "is a file" in message
    assert "TTFT" not in capsys.readouterr().out  # nothing ran
