"""Admission control: which submitted requests enter a queue, and why the others are refused.

Every refusal is a `Rejected` with one `RejectReason`; nothing is dropped silently.
"""

from __future__ import annotations

from .actions import RejectReason
from .request import Request


def invalid_fields(request: Request) -> str | None:
    """A description of what is wrong with the request's own fields, or None."""
    try:
        hash(request.id)
    except TypeError:
        return f"id: must be hashable, got {request.id!r}"
    for key in ("prompt_tokens", "max_new_tokens"):
        value = getattr(request, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{key}: must be an integer >= 1, got {value!r}"
    if request.priority is not None and (not isinstance(request.priority, int) or isinstance(request.priority, bool)):
        return f"priority: must be an integer or None, got {request.priority!r}"
    return None


def refuse_reason(request: Request, known_tenant: bool, duplicate: bool, workers: int,
                  max_tokens: int) -> tuple[RejectReason, str] | None:
    """The first reason to refuse `request`, checked in a fixed order, or None to admit it.

    `max_tokens` is the longest sequence (prompt + max_new_tokens) every worker can hold alone.
    """
    if not known_tenant:
        return RejectReason.UNKNOWN_TENANT, f"tenant {request.tenant!r} is not configured"
    problem = invalid_fields(request)
    if problem is not None:
        return RejectReason.INVALID_REQUEST, problem
    if duplicate:
        return RejectReason.INVALID_REQUEST, f"id {request.id!r} is already in flight"
    if workers == 0:
        return RejectReason.NO_WORKERS, "the pool has no workers"
    total = request.prompt_tokens + request.max_new_tokens
    if total > max_tokens:
        return RejectReason.PROMPT_TOO_LONG, (
            f"prompt_tokens + max_new_tokens = {total} exceeds the {max_tokens} tokens a worker's KV cache holds"
        )
    return None
