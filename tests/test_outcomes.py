"""scheduler.outcomes is the one table of outcomes and reasons: each table is complete, its codes
round-trip, and every encoding (the core's verdicts, the simulator's records and summary, the
runtime's handles and counts, the Prometheus labels, the OpenAI finish_reason) comes from it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import anyio
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from scheduler.actions import Finished, RejectReason as ActionsRejectReason
from scheduler.core import Scheduler, SchedulerConfig
from scheduler.events import StepResult
from scheduler.metrics import OUTCOMES, REASONS, Metrics
from scheduler.outcomes import FinishReason, Outcome, RejectReason, Table
from scheduler.request import TERMINAL, Request, Tenant
from scheduler.runtime import Runtime, SimulatedWorker, api
from sim.results import RECORD_DTYPE, RunData, TenantInfo, Timeline, summarize

ROOT = Path(__file__).resolve().parents[1]
TABLES = (Outcome, FinishReason, RejectReason)
CONFIG = SchedulerConfig(max_num_batched_tokens=16, max_num_seqs=4, block_size=4, kv_watermark=0.0)


def test_the_tables_hold_exactly_the_documented_values():
    assert [o.value for o in Outcome] == ["finished", "rejected", "cancelled", "unfinished"]
    assert [r.value for r in FinishReason] == [
        "eos", "length", "stop", "no_worker_fits", "no_workers", "shutdown", "slow_consumer", "abandoned",
        "closed", "cancelled", "client_disconnected", "aborted"]
    assert [r.value for r in RejectReason] == [
        "rate_limited", "queue_full", "prompt_too_long", "unknown_tenant", "invalid_request", "no_workers"]
    assert ActionsRejectReason is RejectReason  # one rejection table, re-exported by the actions


@pytest.mark.parametrize("table", TABLES)
def test_codes_are_the_declaration_order_and_round_trip(table: type[Table]):
    assert [member.code for member in table] == list(range(len(table)))
    assert all(table.from_code(member.code) is member for member in table)


@pytest.mark.parametrize("member", [m for table in TABLES for m in table], ids=repr)
def test_a_member_prints_and_serialises_as_its_plain_string(member: Table):
    assert (str(member), f"{member}", json.dumps(member)) == (member.value, member.value, f'"{member.value}"')


def test_an_outcome_names_each_terminal_state_of_the_lifecycle():
    assert {state.value for state in TERMINAL} == {o.value for o in Outcome if o.ended}


def test_every_finish_reason_is_produced_somewhere_in_the_core_or_the_runtime():
    used = {node.attr for path in (ROOT / "scheduler").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "FinishReason"}
    assert used == set(FinishReason.__members__)


def test_the_core_finishes_and_cancels_with_finish_reasons():
    s = Scheduler([Tenant("a")], config=CONFIG)
    s.add_worker(0, 64, 0.0)
    s.submit(Request("eos", "a", 4, 3), 0.0)
    s.submit(Request("length", "a", 4, 1), 0.0)
    s.submit(Request("too_big", "a", 60, 4), 0.0)
    too_big = s.sequence("too_big")
    s.add_worker(1, 4, 0.0)  # joins after too_big was accepted, and could never hold it
    s.plan(0, 0.0)
    outputs = s.complete(0, StepResult(1, frozenset({"eos"})), 1.0)
    assert outputs.finished == (Finished("eos", FinishReason.EOS, 1), Finished("length", FinishReason.LENGTH, 1))
    assert all(type(f.reason) is FinishReason for f in outputs.finished)
    assert s.remove_worker(0, 2.0).ended == ("too_big",)
    assert too_big.finish_reason is FinishReason.NO_WORKER_FITS


def test_the_simulators_records_and_summary_use_the_tables():
    records = np.zeros(len(Outcome) + 1, dtype=RECORD_DTYPE)
    records["outcome"] = [o.code for o in Outcome] + [Outcome.REJECTED.code]
    records["reason"] = -1
    records["reason"][[Outcome.REJECTED.code, len(Outcome)]] = RejectReason.QUEUE_FULL.code
    records["first_token"] = records["finish"] = records["admit"] = np.nan
    data = RunData(records=records, itl_values=np.zeros(0), itl_weights=np.zeros(0, dtype=np.int64),
                   tenants=[TenantInfo("a")], workers=[], duration_s=1.0, timeline=Timeline.empty(1))
    summary = summarize(data)["summary"]
    counts = {o: summary["completed" if o is Outcome.FINISHED else o.value] for o in Outcome}
    assert counts == {Outcome.FINISHED: 1, Outcome.REJECTED: 2, Outcome.CANCELLED: 1, Outcome.UNFINISHED: 1}
    assert summary["rejected_by_reason"] == {RejectReason.QUEUE_FULL.value: 2}


def test_the_prometheus_labels_are_the_tables_values():
    assert OUTCOMES == tuple(o for o in Outcome if o.ended) and REASONS == tuple(RejectReason)
    registry = CollectorRegistry()
    Metrics(registry, ["a"])
    labels = {(s.name, s.labels.get("outcome") or s.labels.get("reason")) for m in registry.collect()
              for s in m.samples if s.name in ("fairbatch_requests_total", "fairbatch_rejections_total")}
    assert labels == ({("fairbatch_requests_total", o.value) for o in OUTCOMES}
                      | {("fairbatch_rejections_total", r.value) for r in RejectReason})


def test_openai_finish_reasons_cover_every_way_to_finish():
    assert set(api.FINISH_REASONS) == {FinishReason.EOS, FinishReason.LENGTH, FinishReason.STOP}
    assert [api.finish_reason(r) for r in api.FINISH_REASONS] == ["stop", "length", "stop"]


class Instant:
    def plan_step_time(self, plan) -> float:
        return 0.0


def test_the_runtimes_handles_and_counts_use_the_tables():
    async def run() -> tuple:
        scheduler = Scheduler([Tenant("a")], config=CONFIG)
        async with Runtime(scheduler, [SimulatedWorker(Instant(), 64, 0.0)]) as runtime:
            async with runtime.submit(Request("r", "a", 4, 2)) as handle:
                await handle.collect()
            cut = runtime.submit(Request("c", "a", 4, 2))
            cut.cancel()
        return handle, cut, runtime.counts

    handle, cut, counts = anyio.run(run)
    assert (handle.outcome, handle.reason) == (Outcome.FINISHED, FinishReason.LENGTH)
    assert (cut.outcome, cut.reason) == (Outcome.CANCELLED, FinishReason.CLOSED)
    assert type(handle.outcome) is Outcome and type(cut.reason) is FinishReason
    assert counts == {"submitted": 2} | {o.value: 0 for o in OUTCOMES} | {"finished": 1, "cancelled": 1}
