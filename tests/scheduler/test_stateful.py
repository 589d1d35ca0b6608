"""A hypothesis state machine that drives the scheduler core as a serving loop and its engines would.

Rules: submit (configured tenants with small quotas, now and then an unknown tenant, a duplicate id
or invalid fields), advance time, plan on an idle worker, complete a worker's plan (one step, or
part or all of a multi-step run as progress or final reports; the machine keeps each request's
true output length hidden from the core and reports EOS when it is reached, cutting the run there,
as a real engine does), run a worker's loop for a few plans, cancel a live, ended or unknown id,
remove a worker, add a worker (all workers have the same KV size). The policy and placement are
drawn from every registered one.

The core runs with debug_checks off; the machine calls `invariants.check` itself after every rule
and checks, against its own record of the verdicts and outputs it saw:

- every submission is in exactly one of live, finished, cancelled, rejected, and the core's counts,
  live set agree;
- structural refusals and queue caps are predicted exactly; rate limits only hit tenants that have
  one, and a request costing more than its tenant's token burst is refused with no retry_after;
- each request streams exactly `generated` tokens (first=True once), never more than
  max_new_tokens, nothing after it ended, and finishes exactly when its true length or
  max_new_tokens is reached, with that reason;
- each plan is a correct diff: what the worker holds (admitted less preempted less released)
  is what the core runs there, and items, budgets and `samples` flags match the core's records;
  a plan repeats only a batch of pure decodes, never past a request's max_new_tokens, and only
  when no queued request could be admitted;
- a worker with nothing running never returns an empty plan while its queue holds requests;
- time never goes backwards and request timestamps are causal.

Teardown drains the pool (no arrivals, plan/complete until nothing is live) and checks that every
request ended exactly once and every KV block came back.
"""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from mirrored import cancel_full, complete_full, forget_worker, plan_full
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from scheduler.actions import Admitted, Emitted, Finished, Rejected, RejectReason
from scheduler.core import Scheduler, SchedulerConfig
from scheduler.events import StepResult
from scheduler.invariants import check
from scheduler.placement import PLACEMENTS
from scheduler.policies import POLICIES
from scheduler.request import SLO, Quota, Request, RequestState, Tenant

TENANTS = (
    Tenant("a", quota=Quota(requests_per_s=2, request_burst=3, max_queued=5)),
    Tenant("b", weight=2.0, quota=Quota(tokens_per_s=32, token_burst=40, max_queued_tokens=60)),
    Tenant("c", weight=0.5, priority=1, slo=SLO(ttft_ms=300), quota=Quota(requests_per_s=4, tokens_per_s=96,
                                                                            max_queued=4)),
    Tenant("d", priority=-1, slo=SLO(ttft_ms=2000)),  # no quota
)
NAMES = [t.name for t in TENANTS] + ["mallory"]  # the last is not configured
MAX_WORKERS = 3
DRAIN_ROUNDS = 3000

LIVE, FINISHED, CANCELLED, REJECTED = "live", "finished", "cancelled", "rejected"

# (tenant index into NAMES, prompt, max_new, true output length, priority, duplicate: 0 reuses a live id)
ARRIVALS = st.tuples(
    st.sampled_from([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4]),
    st.integers(-1, 24),
    st.integers(0, 12),
    st.integers(1, 16),
    st.sampled_from([None] * 8 + [0, 2, -1, "high"]),
    st.integers(0, 15),
)


class Machine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s: Scheduler | None = None
        self.now = 0.0
        self.last_now = -math.inf  # the core's clock at the previous check
        self.pending = False  # a rule started and its invariants have not passed yet
        self.next_id = 0
        self.next_worker = 0
        self.requests: dict[int, Request] = {}  # admitted requests by id
        self.hidden: dict[int, int] = {}  # true output length, known to the engine only
        self.outcome: dict[object, str] = {}  # every submission: id, or ("dup", n) for duplicate ids
        self.records: dict = {}  # id -> the core's Sequence, kept after it ends
        self.emitted: Counter = Counter()
        self.finished: Counter = Counter()
        self.inflight: dict = {}  # worker -> StepPlan
        self.left: dict = {}  # worker -> steps of its plan not yet reported
        self.held: dict[int, set] = {}  # worker -> ids it holds KV for, from the plans' diffs

    # ----- setup --------------------------------------------------------------------------------

    @initialize(
        policy=st.sampled_from(sorted(POLICIES)),
        placement=st.sampled_from(sorted(PLACEMENTS)),
        workers=st.sampled_from([0, 1, 1, 1, 2, 2, 2, 3]),
        kv_blocks=st.integers(6, 20),
        block_size=st.sampled_from([2, 4]),
        max_num_batched_tokens=st.sampled_from([4, 8, 16, 32]),
        max_num_seqs=st.integers(1, 6),
        kv_watermark=st.sampled_from([0.0, 0.0, 0.1]),
        pool_caps=st.sampled_from([(None, None), (None, None), (6, None), (None, 48), (4, 32)]),
    )
    def setup(self, policy, placement, workers, kv_blocks, block_size, max_num_batched_tokens, max_num_seqs,
              kv_watermark, pool_caps):
        self.pending = True
        self.config = SchedulerConfig(
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=min(max_num_seqs, max_num_batched_tokens),
            block_size=block_size,
            kv_watermark=kv_watermark,
            max_queued=pool_caps[0],
            max_queued_tokens=pool_caps[1],
            debug_checks=False,
        )
        self.kv_blocks = kv_blocks
        self.admissible = (kv_blocks - int(kv_blocks * kv_watermark)) * block_size
        self.s = Scheduler(TENANTS, policy, placement, self.config)
        for _ in range(workers):
            self._add_worker()

    # ----- rules --------------------------------------------------------------------------------

    @rule(arrivals=st.lists(ARRIVALS, min_size=1, max_size=4))
    def submit(self, arrivals):
        self.pending = True
        for arrival in arrivals:
            self._submit(*arrival)

    @rule(dt=st.sampled_from([0.0, 0.05, 0.25, 1.0, 4.0]))
    def advance_time(self, dt):
        self.pending = True
        self.now += dt

    @precondition(lambda self: self.s is not None and any(w not in self.inflight for w in self.s.workers))
    @rule(pick=st.integers(0, 2))
    def plan(self, pick):
        self.pending = True
        idle = sorted(w for w in self.s.workers if w not in self.inflight)
        self._plan(idle[pick % len(idle)])

    @precondition(lambda self: bool(self.inflight))
    @rule(pick=st.integers(0, 2), steps=st.integers(1, 6), final=st.booleans())
    def complete(self, pick, steps, final):
        """The worker reports `steps` steps of its plan (fewer if an EOS cuts the run), as the final
        report or as progress of a multi-step run that goes on."""
        self.pending = True
        busy = sorted(self.inflight)
        self._complete(busy[pick % len(busy)], steps, final)

    @precondition(lambda self: self.s is not None and bool(self.s.workers))
    @rule(pick=st.integers(0, 2), rounds=st.integers(1, 8), chunk=st.sampled_from([1, 2, 3, 1 << 30]),
          dt=st.sampled_from([0.0, 0.01, 0.1]))
    def run_steps(self, pick, rounds, chunk, dt):
        """A worker's engine loop for a few plans: run the plan in flight to its end, reporting
        progress every `chunk` steps, then plan the next."""
        self.pending = True
        workers = sorted(self.s.workers)
        worker = workers[pick % len(workers)]
        for _ in range(rounds):
            while worker in self.inflight:
                self.now += dt
                self._complete(worker, chunk, False)
            self._plan(worker)

    @rule(kind=st.sampled_from(["live", "live", "live", "ended", "unknown"]), pick=st.integers(0, 1000))
    def cancel(self, kind, pick):
        self.pending = True
        live = sorted(rid for rid, o in self.outcome.items() if o == LIVE)
        ended = sorted(rid for rid, o in self.outcome.items() if o != LIVE and not isinstance(rid, tuple))
        pool = {"live": live, "ended": ended}.get(kind) or [("unknown", pick)]
        rid = pool[pick % len(pool)]
        assert cancel_full(self.s, rid, self.now) is (self.outcome.get(rid) == LIVE)
        if self.outcome.get(rid) == LIVE:
            self.outcome[rid] = CANCELLED

    @precondition(lambda self: self.s is not None and bool(self.s.workers))
    @rule(pick=st.integers(0, 2))
    def remove_worker(self, pick):
        self.pending = True
        workers = sorted(self.s.workers)
        worker = workers[pick % len(workers)]
        state = self.s.workers[worker]
        expected = [seq.id for seq in state.running] + [seq.id for seq in state.queue or ()]
        removed = self.s.remove_worker(worker, self.now)
        assert removed.ended == ()  # every worker has the same KV size here
        moved = removed.requeued
        forget_worker(self.s, worker)
        assert sorted(moved) == sorted(expected) and len(set(moved)) == len(moved), (moved, expected)
        assert worker not in self.s.workers
        self.inflight.pop(worker, None)
        self.left.pop(worker, None)
        del self.held[worker]
        for rid in moved:
            seq = self.s.sequence(rid)
            assert seq.state is RequestState.QUEUED and seq.computed == 0 and seq.blocks == 0, seq

    @precondition(lambda self: self.s is not None and len(self.s.workers) < MAX_WORKERS)
    @rule()
    def add_worker(self):
        self.pending = True
        self._add_worker()

    # ----- invariants ---------------------------------------------------------------------------

    @invariant()
    def consistent(self):
        if self.s is None:
            return
        s = self.s
        check(s)
        assert self.last_now <= s.now <= self.now, (self.last_now, s.now, self.now)
        self.last_now = s.now
        kinds = Counter(self.outcome.values())
        live = {rid for rid, o in self.outcome.items() if o == LIVE}
        assert set(s.live) == live
        assert (s.counts.submitted, s.counts.finished, s.counts.cancelled, s.counts.rejected) == (
            len(self.outcome), kinds[FINISHED], kinds[CANCELLED], kinds[REJECTED])
        assert s.counts.submitted == s.counts.ended + len(s.live)
        for rid in live:
            seq = s.sequence(rid)
            assert seq is self.records[rid]
            assert seq.generated == self.emitted[rid] <= self.requests[rid].max_new_tokens, seq
            assert self.emitted[rid] < min(self.hidden[rid], self.requests[rid].max_new_tokens), seq
            self._causal(seq, self.now)
        assert set(self.held) == set(s.workers)
        self.pending = False

    def teardown(self):
        if self.s is None or self.pending:  # a failing rule or invariant: report that, not the drain
            return
        self._drain()

    # ----- helpers ------------------------------------------------------------------------------

    def _add_worker(self) -> None:
        worker = self.next_worker
        self.next_worker += 1
        self.s.add_worker(worker, self.kv_blocks, self.now)
        self.held[worker] = set()

    def _submit(self, tenant, prompt, max_new, output, priority, duplicate) -> None:
        live = sorted(rid for rid, o in self.outcome.items() if o == LIVE)
        if duplicate == 0 and live:
            rid = live[prompt % len(live)]
            key = ("dup", self.next_id)
        else:
            rid = key = self.next_id
        self.next_id += 1
        request = Request(rid, NAMES[tenant], prompt, max_new, priority)
        expected = self._expected_refusal(request, tenant, duplicate=key != rid)
        verdict = self.s.submit(request, self.now)
        never = expected is None and self._beyond_token_burst(request, tenant)
        if isinstance(verdict, Admitted):
            assert verdict == Admitted(rid) and expected is None and not never, (request, expected)
            self.outcome[key] = LIVE
            self.requests[rid] = request
            self.hidden[rid] = output
            self.records[rid] = seq = self.s.sequence(rid)
            assert seq.state is RequestState.QUEUED and seq.arrival == self.now and seq.request is request
            return
        assert isinstance(verdict, Rejected) and verdict.request_id == rid and verdict.detail, verdict
        if expected is None:  # everything but the rate limits passed
            quota = TENANTS[tenant].quota
            assert verdict.reason is RejectReason.RATE_LIMITED, (request, verdict)
            assert quota.requests_per_s is not None or quota.tokens_per_s is not None, (request, verdict)
            if never:
                assert verdict.retry_after is None, verdict
            else:
                assert verdict.retry_after is not None and verdict.retry_after > 0, verdict
        else:
            reason, fragment = expected
            assert verdict.reason is reason and fragment in verdict.detail, (request, expected, verdict)
        self.outcome[key] = REJECTED

    @staticmethod
    def _beyond_token_burst(request: Request, tenant: int) -> bool:
        quota = TENANTS[tenant].quota
        if quota.tokens_per_s is None:
            return False
        burst = quota.token_burst if quota.token_burst is not None else max(quota.tokens_per_s, 1.0)
        return request.prompt_tokens + request.max_new_tokens > burst

    def _queued(self) -> tuple[list[int], list[int]]:
        requests = [0] * len(TENANTS)
        tokens = [0] * len(TENANTS)
        for seq in self.s.live.values():
            if seq.state is RequestState.QUEUED:
                requests[seq.tenant] += 1
                tokens[seq.tenant] += seq.request.prompt_tokens
        return requests, tokens

    def _expected_refusal(self, request: Request, tenant: int, duplicate: bool):
        """(reason, detail fragment) for every refusal but a rate limit, or None."""
        if tenant >= len(TENANTS):
            return RejectReason.UNKNOWN_TENANT, repr(request.tenant)
        for key in ("prompt_tokens", "max_new_tokens"):
            if getattr(request, key) < 1:
                return RejectReason.INVALID_REQUEST, key
        if request.priority is not None and not isinstance(request.priority, int):
            return RejectReason.INVALID_REQUEST, "priority"
        if duplicate:
            return RejectReason.INVALID_REQUEST, "already in flight"
        if not self.s.workers:
            return RejectReason.NO_WORKERS, "no workers"
        total = request.prompt_tokens + request.max_new_tokens
        if total > self.admissible:
            return RejectReason.PROMPT_TOO_LONG, str(total)
        requests, tokens = self._queued()
        quota, prompt = TENANTS[tenant].quota, request.prompt_tokens
        caps = (  # the tenant's own figures; the pool's none
            (quota.max_queued, requests[tenant] + 1, f"the tenant's queued requests would be {requests[tenant] + 1}"),
            (quota.max_queued_tokens, tokens[tenant] + prompt,
             f"the tenant's queued prompt tokens would be {tokens[tenant] + prompt}"),
            (self.config.max_queued, sum(requests) + 1, "the pool's queue is full (a cap on queued requests)"),
            (self.config.max_queued_tokens, sum(tokens) + prompt, "the pool's queue is full (a cap on queued prompt"),
        )
        for cap, would_be, detail in caps:
            if cap is not None and would_be > cap:
                return RejectReason.QUEUE_FULL, detail
        return None

    def _plan(self, worker: int) -> None:
        s, config = self.s, self.config
        state = s.workers[worker]
        queue = s._queue_served_by(state)  # the core's own, read by its property test
        idle_with_work = not state.running and len(queue) > 0
        plan = plan_full(s, worker, self.now)
        assert plan.worker == worker and plan.repeat >= 1
        assert plan.num_tokens <= config.max_num_batched_tokens and len(plan.items) <= config.max_num_seqs
        ids = [item.request_id for item in plan.items]
        assert len(ids) == len(set(ids))
        held = self.held[worker]
        for rid in plan.released:
            assert rid in held and self.outcome[rid] in (FINISHED, CANCELLED), (rid, plan)
        for rid in plan.preempted:
            assert rid in held and self.outcome[rid] == LIVE, (rid, plan)
            assert s.sequence(rid).state is RequestState.QUEUED
        held -= set(plan.released) | set(plan.preempted)
        for rid in plan.admitted:
            assert rid not in held and rid in ids, (rid, plan)
            seq = s.sequence(rid)
            assert seq.admit_time is not None and seq.admit_time <= self.now
        held |= set(plan.admitted)
        assert held == {seq.id for seq in state.running}, (held, state.running, plan)
        for item in plan.items:
            seq = s.sequence(item.request_id)
            assert seq.state is RequestState.RUNNING and seq.worker == worker and item.request_id in held
            assert item.num_tokens >= 1 and item.context == seq.computed, (item, seq)
            assert item.samples == (item.context + item.num_tokens == seq.target), (item, seq)
        if idle_with_work:
            assert plan, f"worker {worker} runs nothing but returned an empty plan while {len(queue)} requests wait"
        if plan.repeat > 1:  # only a batch that samples for all and that nothing could change repeats
            assert all(item.samples for item in plan.items), plan
            assert all(item.num_tokens == 1 for item in plan.items[:plan.decodes]), plan
            assert len(plan.items) == len(state.running) and not plan.preempted, plan
            assert len(queue) == 0 or len(state.running) == config.max_num_seqs, plan
            for item in plan.items:
                seq = s.sequence(item.request_id)
                assert plan.repeat <= seq.request.max_new_tokens - seq.generated, (plan, seq)
        if plan:
            self.inflight[worker] = plan
            self.left[worker] = plan.repeat

    def _complete(self, worker: int, steps: int, final: bool) -> None:
        plan, left = self.inflight[worker], self.left[worker]
        steps = min(steps, left)
        final = final or steps == left
        sampling = [item.request_id for item in plan.items if item.samples]
        live = [rid for rid in sampling if self.outcome[rid] == LIVE]
        # The engine stops a run at the first EOS (the core cannot know it is coming).
        to_eos = min((self.hidden[rid] - self.emitted[rid] for rid in live), default=1 << 62)
        if steps >= to_eos:
            steps, final = to_eos, True
        # It does not know about cancellations: it reports EOS wherever its token was EOS.
        eos = frozenset(rid for rid in sampling if self.emitted[rid] + steps >= self.hidden[rid]) if final else frozenset()
        outputs = complete_full(self.s, worker, StepResult(steps, eos, final), self.now)
        if final:
            del self.inflight[worker], self.left[worker]
        else:
            self.left[worker] = left - steps
        emitted = [out.request_id for out in outputs if isinstance(out, Emitted)]
        assert sorted(emitted) == sorted(live), (outputs, plan)
        ended = set()
        for out in outputs:
            rid = out.request_id
            request = self.requests[rid]
            assert self.outcome[rid] == LIVE and rid not in ended, f"{out} after request {rid} ended"
            if isinstance(out, Emitted):
                assert out.count == steps and out.first == (self.emitted[rid] == 0), (out, steps)
                self.emitted[rid] += out.count
                assert self.emitted[rid] <= request.max_new_tokens, out
                continue
            assert isinstance(out, Finished), out
            assert final and rid in emitted, f"{out} without a token in the same final report"
            if self.emitted[rid] == self.hidden[rid]:
                reason = "eos"
            else:
                assert self.emitted[rid] == request.max_new_tokens, (out, self.hidden[rid])
                reason = "length"
            assert (out.reason, out.output_tokens) == (reason, self.emitted[rid]), out
            self.finished[rid] += 1
            ended.add(rid)
        for rid in emitted:
            done = self.emitted[rid] >= min(self.hidden[rid], self.requests[rid].max_new_tokens)
            assert done == (rid in ended), (rid, outputs)
            if done:
                self.outcome[rid] = FINISHED
                seq = self.records[rid]
                assert seq.state is RequestState.FINISHED and seq.finish_time == self.now
                assert seq.generated == self.emitted[rid]

    @staticmethod
    def _causal(seq, now: float) -> None:
        times = [seq.arrival, seq.admit_time, seq.first_token_time, seq.finish_time, now]
        known = [t for t in times if t is not None]
        assert known == sorted(known), seq
        if seq.first_token_time is not None:
            assert seq.admit_time is not None, seq

    def _drain(self) -> None:
        s = self.s
        for round_ in range(DRAIN_ROUNDS):
            if not s.live and not self.inflight:
                break
            if not s.workers:
                self._add_worker()
            self.now += 1.0
            for worker in sorted(s.workers):
                if worker in self.inflight:
                    self._complete(worker, 1 + round_ % 4, round_ % 2 == 0)
                else:
                    self._plan(worker)
            self.pending = True
            self.consistent()
        else:
            raise AssertionError(f"not drained after {DRAIN_ROUNDS} rounds: {list(s.live.values())}")
        assert not s.live and LIVE not in self.outcome.values()
        assert s.counts.submitted == s.counts.ended == len(self.outcome)
        assert all(n == 1 for n in self.finished.values())
        assert set(self.finished) == {rid for rid, o in self.outcome.items() if o == FINISHED}
        for rid, seq in self.records.items():
            assert seq.state.value == self.outcome[rid], (seq, self.outcome[rid])
            self._causal(seq, self.now)
            if self.outcome[rid] == FINISHED:
                assert seq.first_token_time is not None and seq.charged_prompt == seq.request.prompt_tokens
        for worker in s.workers.values():
            assert not worker.running and worker.pool.free == worker.pool.total
        assert s.num_waiting == 0 and s.num_running == 0


Machine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStateMachine = Machine.TestCase


def test_progress_reports_of_one_step_grow_kv_across_block_boundaries(make_scheduler, make_request):
    """Pinned from the machine: in a multi-step run, each progress report (of however many steps,
    one included) allocates the KV blocks the steps it reports grew into."""
    s = make_scheduler(debug_checks=False)  # 4-token blocks
    s.submit(make_request(1, prompt=4, max_new=20), 0.0)
    plan_full(s, 0, 1.0)
    complete_full(s, 0, StepResult(), 1.0)  # the prompt: 4 tokens cached, the first token sampled
    plan = plan_full(s, 0, 2.0)
    assert plan.repeat > 8
    seq = s.sequence(1)
    for steps in (3, 1, 1, 1, 1, 1):  # cached: 7, 8, 9 (a third block), 10, 11, 12
        complete_full(s, 0, StepResult(steps, frozenset(), final=False), 2.0)
        check(s)
        assert seq.blocks * 4 >= seq.computed, seq
    assert (seq.computed, seq.generated, seq.blocks) == (12, 9, 3)
