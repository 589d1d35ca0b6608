"""Policies by name. A policy is the order of queued requests plus the preemption victim."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from ..errors import ConfigError
from .base import KeyedQueue, Policy, WaitQueue
from .deadline import EDF, LeastSlack
from .dlpm import DLPM
from .drr import DRR
from .fcfs import FCFS
from .priority import Priority
from .vtc import LCF, VTC

SERVICE_WEIGHTS = ("w_p", "w_q")  # once policy parameters, now [scheduler] service_weights
POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (FCFS, Priority, VTC, LCF, DLPM, DRR, EDF, LeastSlack)
}


def parameters(name: str) -> list[str]:
    """The keyword parameters of policy `name` (what `policy_params` may set), in signature order."""
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    # A policy without its own __init__ inherits object's (*args, **kwargs): it takes no parameters.
    signature = inspect.signature(POLICIES[name].__init__).parameters.items()
    return [param for param, p in signature if param != "self" and p.kind in keyword]


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """Build a policy from its name and keyword parameters, with errors naming the allowed set."""
    if not isinstance(name, str) or name not in POLICIES:
        raise ConfigError(f"scheduler.policy: unknown policy {name!r}; allowed: {', '.join(sorted(POLICIES))}")
    cls = POLICIES[name]
    params = dict(params or {})
    allowed = parameters(name)
    unknown = sorted(set(params) - set(allowed))
    weights = [key for key in unknown if key in SERVICE_WEIGHTS]
    if weights:
        raise ConfigError(
            f"scheduler.policy_params.{weights[0]}: the service weights are scheduler.service_weights = "
            f"[w_p, w_q], which the policy, the ledger, the results and the metrics share"
        )
    if unknown:
        raise ConfigError(
            f"scheduler.policy_params: {', '.join(unknown)} not a parameter of {name!r}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(**params)


__all__ = [
    "POLICIES", "Policy", "WaitQueue", "KeyedQueue", "make_policy", "parameters",
    "FCFS", "Priority", "VTC", "LCF", "DLPM", "DRR", "EDF", "LeastSlack",
]
