"""Service: what a tenant has received, the one definition everything reads.

A tenant's service is w_p x prompt tokens processed (recompute excluded) + w_cached x prompt
tokens found in the prefix cache + w_q x output tokens generated, and its normalised service that
divided by the tenant's weight (DESIGN, "Policies").

A cached token costs the engine far less than a computed one: no linear layers, only its KV read
by the attention of the tokens after it. w_cached = 0.1 by default, a tenth of w_p, the ratio at
which providers price cached input (Anthropic's cache reads are billed at 10% of base input
tokens: docs.anthropic.com, "Prompt caching"), so a tenant whose prompts hit the cache is
charged for what it costs the pool, and sharing a system prompt is rewarded, not free.
`ServiceWeights` holds w_p and w_q, `service` computes it (on numbers or numpy arrays alike), and
the `Ledger` keeps the per-tenant counts the core maintains whatever the policy: queued, running,
prompt and output tokens. Fair policies read service from the ledger, the results and the metrics
compute it with `service`, so none of them can use weights or counts the others do not.

Output tokens of decoding requests are settled lazily: a tenant's count is what has been settled
plus what its decode sets generated since, a running total `decodeset.DecodingTenants` keeps, so
a count is read in O(1) whatever the number of workers the tenant decodes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence as Seq

from .decodeset import DecodingTenants
from .errors import ConfigError
from .request import Tenant


@dataclass(frozen=True, slots=True)
class ServiceWeights:
    """The cost of one prompt token processed (w_p), of one output token generated (w_q) and of
    one prompt token found in the prefix cache (w_cached)."""

    prompt: float = 1.0
    output: float = 2.0
    cached: float = 0.1

    def __post_init__(self) -> None:
        for name, value in (("w_p", self.prompt), ("w_q", self.output), ("w_cached", self.cached)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"scheduler.service_weights: {name} must be a number >= 0, got {value!r}")

    def as_list(self) -> list[float]:
        return [float(self.prompt), float(self.output), float(self.cached)]

    def of_prompt(self, prompt_tokens: int, cached_tokens: int) -> float:
        """A prompt's cost: its computed tokens at w_p, its cached ones at w_cached."""
        return self.prompt * (prompt_tokens - cached_tokens) + self.cached * cached_tokens


def service(weights: ServiceWeights, prompt_tokens, output_tokens, tenant_weight=1.0, cached_tokens=0):
    """w_p x prompt tokens + w_q x output tokens + w_cached x cached tokens, over the tenant's
    weight (numbers or arrays)."""
    return (weights.prompt * prompt_tokens + weights.output * output_tokens
            + weights.cached * cached_tokens) / tenant_weight


class Ledger:
    """Per-tenant counts, indexed like the scheduler's tenants: queued requests and their prompt
    tokens, running requests, prompt tokens processed and output tokens generated."""

    __slots__ = ("weights", "queued", "queued_tokens", "running", "prompt_tokens", "cached_tokens", "decoding",
                 "_settled_output", "_tenant_weight")

    def __init__(self, tenants: Seq[Tenant], weights: ServiceWeights) -> None:
        n = len(tenants)
        self.weights = weights
        self.queued = [0] * n
        self.queued_tokens = [0] * n
        self.running = [0] * n
        self.prompt_tokens = [0] * n  # computed, recompute excluded
        self.cached_tokens = [0] * n  # found in the prefix cache (a prompt token counts here or above)
        self._settled_output = [0] * n  # output tokens but those the decode sets owe still
        self._tenant_weight = [tenant.weight for tenant in tenants]
        self.decoding = DecodingTenants(self._settle, n)  # where each tenant decodes, what it owes

    def _settle(self, tenant: int, tokens: int) -> None:
        self._settled_output[tenant] += tokens

    def add_output(self, tenant: int, tokens: int) -> None:
        """`tenant` generated `tokens` outside a decode set (the token a completed prefill samples)."""
        self._settled_output[tenant] += tokens

    def output_tokens(self, tenant: int) -> int:
        """Output tokens `tenant` has generated, its decoding requests' up to now included."""
        return self._settled_output[tenant] + self.decoding.pending(tenant)

    def outputs(self) -> list[int]:
        """Every tenant's output tokens generated."""
        return [self.output_tokens(tenant) for tenant in range(len(self._tenant_weight))]

    def service(self, tenant: int) -> float:
        """`tenant`'s normalised service now."""
        return service(self.weights, self.prompt_tokens[tenant], self.output_tokens(tenant),
                       self._tenant_weight[tenant], self.cached_tokens[tenant])

    def services(self) -> list[float]:
        """Every tenant's normalised service now."""
        return [self.service(tenant) for tenant in range(len(self._tenant_weight))]
