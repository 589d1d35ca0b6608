"""The runtime feeds the same timeline trace as the simulator (scheduler.trace)."""

from __future__ import annotations

import json

import anyio
import pytest
from runtime_helpers import small_pool

from scheduler.request import Request
from scheduler.runtime import RequestRejected, Runtime
from scheduler.trace import TraceRecorder

pytestmark = pytest.mark.anyio


async def test_a_runtime_trace_has_its_steps_and_each_requests_flow_to_its_finish():
    scheduler, workers = small_pool(workers=2, kv_blocks=16)
    trace = TraceRecorder([t.name for t in scheduler.tenants], workers)
    async with Runtime(scheduler, workers, trace=trace) as runtime:
        handles = [runtime.submit(Request(f"r{i}", "ab"[i % 2], 6, 4)) for i in range(5)]
        with pytest.raises(RequestRejected):
            runtime.submit(Request("huge", "a", 500, 4))
        async with anyio.create_task_group() as group:
            for handle in handles:
                group.start_soon(handle.collect)
    events = json.loads(trace.to_json())["traceEvents"]
    steps = [e for e in events if e.get("cat") == "step"]
    assert steps and sum(e["args"]["tokens"] for e in steps) == 5 * 6 + 5 * 3  # prompts, then 3 decodes each
    for i in range(5):
        flow = [e["ph"] for e in events if e.get("cat") == "flow" and e["id"] == f"r{i}"]
        assert flow[0] == "s" and flow[-1] == "f" and set(flow[1:-1]) == {"t"}
    assert any(e["ph"] == "i" and e["args"]["request"] == "huge" for e in events)
    assert {e["name"] for e in events if e["ph"] == "C"} == {"queued", "service"}
