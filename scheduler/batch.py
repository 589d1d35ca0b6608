"""A worker's whole batch, rebuilt from the core's plan diffs.

A `StepPlan` names only what changed (chunks, admissions, preemptions, releases) and counts the
decode set, so the core's cost per step does not grow with the batch. A driver or engine adapter
that needs every request of a step (to feed a real engine, or to stream each request's tokens)
keeps a `BatchMirror` per worker: it applies each plan and each report and lists the step's items
and the outputs request by request, at O(batch) per step, which is the driver's to pay.
"""

from __future__ import annotations

from typing import Hashable

from .actions import Emitted, Finished, ScheduledItem, StepOutputs, StepPlan
from .errors import ProtocolError


class BatchMirror:
    __slots__ = ("_context", "_decoding", "_plan", "_decoders", "_chunks")

    def __init__(self) -> None:
        self._context: dict[Hashable, int] = {}  # running request -> tokens cached, in admission order
        self._decoding: set[Hashable] = set()
        self._plan: StepPlan | None = None
        self._decoders: list[Hashable] = []  # the decode set of the plan in flight
        self._chunks: tuple[ScheduledItem, ...] = ()  # its chunks, until a report has applied them

    def step(self, plan: StepPlan) -> tuple[ScheduledItem, ...]:
        """Apply a plan; every request its first step computes: the decode set, then the chunks."""
        for rid in plan.released + plan.preempted:
            self.drop(rid)
        for rid in plan.admitted:
            self._context[rid] = 0
        self._decoders = [rid for rid in self._context if rid in self._decoding]
        if len(self._decoders) != plan.decodes:
            raise ProtocolError(f"mirror of worker {plan.worker}: {len(self._decoders)} decoding, "
                                f"the plan says {plan.decodes}; it missed a plan or a report")
        self._plan = plan
        self._chunks = plan.chunks
        decodes = tuple(ScheduledItem(rid, 1, self._context[rid], True) for rid in self._decoders)
        return decodes + plan.chunks

    def report(self, outputs: StepOutputs) -> list[Emitted | Finished]:
        """Apply a report; its outputs request by request, in step order, each request's Emitted
        followed by its Finished."""
        if self._plan is None:
            raise ProtocolError("mirror: a report with no plan applied")
        finished = {out.request_id: out for out in outputs.finished}
        emitted = {out.request_id: out for out in outputs.emitted}
        result: list[Emitted | Finished] = []
        decoders = [rid for rid in self._decoders if rid in self._decoding]  # not dropped since
        if len(decoders) != outputs.decoded:
            raise ProtocolError(f"mirror: {len(decoders)} decoding, the report says {outputs.decoded}; "
                                "drop() a request cancelled while its step ran")
        for rid in decoders:
            self._context[rid] += outputs.steps
            result.append(Emitted(rid, outputs.steps, False))
            if rid in finished:
                result.append(finished[rid])
        joined = []  # prompts completed by the report's first step, decoding in its later ones
        for chunk in self._chunks if outputs.steps else ():
            rid = chunk.request_id
            if rid not in self._context:
                continue  # cancelled while its step ran
            self._context[rid] = chunk.context + chunk.num_tokens
            if rid in emitted:
                result.append(emitted[rid])
                self._context[rid] += emitted[rid].count - 1
                self._decoding.add(rid)
                joined.append(rid)
            if rid in finished:
                result.append(finished[rid])
        self._chunks = ()
        for rid in finished:
            self.drop(rid)
        self._decoders = [rid for rid in decoders + joined if rid in self._decoding]
        return result

    def drop(self, rid: Hashable) -> None:
        """Forget a request (cancelled by the driver, released or preempted by the core)."""
        self._context.pop(rid, None)
        self._decoding.discard(rid)

    @property
    def running(self) -> list[Hashable]:
        return list(self._context)
